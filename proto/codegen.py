"""Generates Python gRPC stubs from the .proto files, regenerating whenever a .proto changes.

The stubs land in the ``recall_server._generated`` package (the name ``proto`` is taken by
proto-plus, a dependency of Beam). The stamp file records a hash of every .proto, so generated
code can never go stale: install (setup.py build_py) forces a generation and
``recall_server.stubs`` checks the stamp on import.
"""
from __future__ import annotations

import hashlib
import os
import sys
import tempfile
from pathlib import Path

PROTO_ROOT = Path(__file__).resolve().parent
GENERATED = PROTO_ROOT.parent / "recall_server" / "_generated"
GENERATED_PACKAGE = "recall_server._generated"
STAMP = GENERATED / "STAMP"


def proto_files() -> list[Path]:
    return sorted((PROTO_ROOT / "i2i").rglob("*.proto"))


def source_digest() -> str:
    digest = hashlib.sha256()
    for path in proto_files():
        digest.update(str(path.relative_to(PROTO_ROOT)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def is_stale() -> bool:
    return not STAMP.exists() or STAMP.read_text().strip() != source_digest()


def generate(force: bool = False) -> Path:
    """Runs protoc (from grpcio-tools) into recall_server/_generated, atomically replacing older output."""
    if not force and not is_stale():
        return GENERATED
    import grpc_tools
    from grpc_tools import protoc

    include = str(Path(grpc_tools.__file__).parent / "_proto")
    tmp = Path(tempfile.mkdtemp(prefix="._generated.", dir=GENERATED.parent))
    args = ["protoc", f"-I{PROTO_ROOT}", f"-I{include}", f"--python_out={tmp}", f"--grpc_python_out={tmp}"]
    args += [str(p) for p in proto_files()]
    if protoc.main(args) != 0:
        raise RuntimeError(f"protoc failed on {[str(p) for p in proto_files()]}")
    for directory in [tmp, *[d for d in tmp.rglob("*") if d.is_dir()]]:
        (directory / "__init__.py").touch()
    # protoc writes imports relative to its include root (``from i2i.v1 import ...``); make them
    # absolute so the stubs never collide with the top-level ``i2i`` package.
    for module in tmp.rglob("*_pb2*.py"):
        text = module.read_text().replace("from i2i.v1 import", f"from {GENERATED_PACKAGE}.i2i.v1 import")
        module.write_text(text)
    (tmp / "STAMP").write_text(source_digest() + "\n")
    old = None
    if GENERATED.exists():
        old = GENERATED.parent / f"._generated.old.{os.getpid()}"
        GENERATED.rename(old)
    tmp.rename(GENERATED)
    if old is not None:
        import shutil

        shutil.rmtree(old, ignore_errors=True)
    return GENERATED


if __name__ == "__main__":
    generate(force="--force" in sys.argv)
    print(f"generated stubs in {GENERATED}")
