"""Sample datasets in the contract's tables: semi-synthetic fashion notes and MovieLens-100k."""
