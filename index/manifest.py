"""The manifest of one index version: what it was built from, and the sha256 of each of its files."""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from i2i.core.config import from_dict
from i2i.core.errors import InputError

MANIFEST_FILE = "manifest.json"
FORMAT = 1


class ChecksumError(Exception):
    """A version's file does not match the sha256 its manifest recorded (or is missing)."""


@dataclass
class Manifest:
    """Everything a reader needs to trust and use a version; serialised as manifest.json."""

    version: str
    parent: str | None
    model_version: str
    dim: int
    metric: str  # "ip" (inner product) or "l2"
    factory: str  # full FAISS factory string, e.g. "IVF1024,Flat"
    ntotal: int
    nlist: int
    created_at: str = field(default_factory=lambda: now_iso())
    files: dict[str, str] = field(default_factory=dict)  # file name -> sha256 hex
    # Beyond the contract's fields: what search, update and rebuild advice need.
    next_id: int = 0
    normalized: bool = True
    rerank: bool = False  # exact re-ranking from vectors.npy
    rerank_factor: int = 8
    default_nprobe: int = 16
    train_size: int = 0  # vectors the quantizer was trained on
    trained_ntotal: int = 0  # corpus size when the quantizer was trained
    trained_imbalance: float = 1.0
    imbalance: float = 1.0
    tombstones: int = 0
    skipped: int = 0  # embeddings refused (NaN, zero norm), listed in dead_letter.parquet
    operation: str = "build"  # build, update or rebuild
    format: int = FORMAT

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_dict(cls, data: dict) -> "Manifest":
        return from_dict(cls, data, "manifest")

    @classmethod
    def read(cls, path: Path) -> "Manifest":
        try:
            return cls.from_dict(json.loads(Path(path).read_text()))
        except (OSError, ValueError, InputError) as exc:
            raise ChecksumError(f"unreadable manifest {path}: {exc}") from exc


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def sha256_file(path: Path, chunk_size: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def checksum_files(directory: Path, names: list[str]) -> dict[str, str]:
    return {name: sha256_file(directory / name) for name in sorted(names)}


def verify_files(directory: Path, manifest: Manifest) -> None:
    """Raises ChecksumError naming the first file that is missing or differs from the manifest."""
    if not manifest.files:
        raise ChecksumError(f"manifest of {directory} lists no files")
    for name, expected in sorted(manifest.files.items()):
        path = directory / name
        if not path.is_file():
            raise ChecksumError(f"index version {manifest.version}: file {path} is missing")
        actual = sha256_file(path)
        if actual != expected:
            raise ChecksumError(
                f"index version {manifest.version}: checksum mismatch for {path} "
                f"(manifest sha256 {expected[:12]}…, file sha256 {actual[:12]}…); refusing to load it"
            )
