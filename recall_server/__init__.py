"""The online phase: a gRPC server that recalls notes for a user's history with batched ANN searches."""
