"""The generated i2i.v1 stubs, importable even where another distribution owns the name ``proto``.

Apache Beam depends on proto-plus, which installs a top-level package also called ``proto``; with
an editable install it is found first, so ``from proto import recall_pb2`` fails outside the
repository root. Then the project's own ``proto`` package is imported from the project root and
proto-plus is put back in ``sys.modules`` for whoever needs it.
"""
from __future__ import annotations

import importlib
import sys
from pathlib import Path

PROJECT_ROOT = str(Path(__file__).resolve().parents[1])


def _load():
    try:
        from proto import recall_pb2, recall_pb2_grpc

        return recall_pb2, recall_pb2_grpc
    except ImportError:
        pass
    other = sys.modules.pop("proto", None)
    sys.path.insert(0, PROJECT_ROOT)
    try:
        importlib.invalidate_caches()
        ours = importlib.import_module("proto")
        return ours.recall_pb2, ours.recall_pb2_grpc
    finally:
        sys.path.remove(PROJECT_ROOT)
        if other is not None:
            sys.modules["proto"] = other


recall_pb2, recall_pb2_grpc = _load()

__all__ = ["recall_pb2", "recall_pb2_grpc"]
