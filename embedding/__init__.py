"""The multimodal representation model (NoteLLM-2), its training, evaluation and the batch embedding job."""
