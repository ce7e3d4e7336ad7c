"""The FAISS IVF index of note embeddings: versioned, atomically published snapshots."""
