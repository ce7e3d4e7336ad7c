"""The generated i2i.v1 stubs (``recall_pb2``, ``recall_pb2_grpc``), regenerated first if stale.

They are generated from ``proto/i2i/v1/*.proto`` into ``recall_server/_generated`` by
``proto/codegen.py``; in a source checkout, a .proto edited since the last generation is
compiled again here, so the stubs can never go stale.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

CODEGEN = Path(__file__).resolve().parents[1] / "proto" / "codegen.py"


def _refresh_if_stale() -> None:
    if not CODEGEN.exists():  # installed without the source tree: use the stubs shipped with it
        return
    spec = importlib.util.spec_from_file_location("i2i_proto_codegen", CODEGEN)
    codegen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(codegen)
    if codegen.is_stale():
        codegen.generate()


_refresh_if_stale()

from recall_server._generated.i2i.v1 import recall_pb2, recall_pb2_grpc  # noqa: E402

__all__ = ["recall_pb2", "recall_pb2_grpc"]
