"""The i2i.v1 gRPC service definition and its generated Python stubs.

``from proto import recall_pb2, recall_pb2_grpc`` regenerates the stubs first when a .proto
changed since they were last generated.
"""
from __future__ import annotations

from proto import codegen

if codegen.is_stale():
    codegen.generate()

from proto._generated.i2i.v1 import recall_pb2, recall_pb2_grpc  # noqa: E402

__all__ = ["recall_pb2", "recall_pb2_grpc"]
