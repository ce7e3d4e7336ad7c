"""Manifest serialisation and sha256 verification."""
from __future__ import annotations

import pytest

from index.manifest import ChecksumError, Manifest, checksum_files, verify_files


def make_manifest(**overrides) -> Manifest:
    fields = dict(version="v000001", parent=None, model_version="m", dim=8, metric="ip", factory="IVF4,Flat",
                  ntotal=10, nlist=4)
    return Manifest(**{**fields, **overrides})


def test_manifest_round_trips_through_json(tmp_path):
    manifest = make_manifest(files={"a": "00"}, next_id=12, rerank=True)
    (tmp_path / "manifest.json").write_text(manifest.to_json())
    assert Manifest.read(tmp_path / "manifest.json") == manifest


def test_manifest_without_required_fields_is_unreadable(tmp_path):
    (tmp_path / "manifest.json").write_text('{"version": "v000001"}')
    with pytest.raises(ChecksumError, match=r"missing config key\(s\) .*model_version"):
        Manifest.read(tmp_path / "manifest.json")


def test_verify_names_the_changed_and_the_missing_file(tmp_path):
    (tmp_path / "a.bin").write_bytes(b"hello")
    (tmp_path / "b.bin").write_bytes(b"world")
    manifest = make_manifest(files=checksum_files(tmp_path, ["a.bin", "b.bin"]))
    verify_files(tmp_path, manifest)
    (tmp_path / "b.bin").write_bytes(b"World")
    with pytest.raises(ChecksumError, match=r"checksum mismatch for .*b\.bin"):
        verify_files(tmp_path, manifest)
    (tmp_path / "a.bin").unlink()
    with pytest.raises(ChecksumError, match=r"a\.bin is missing"):
        verify_files(tmp_path, manifest)
