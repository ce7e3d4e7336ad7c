"""Fixtures of the representation model's tests: tiny datasets and tiny checkpoints, built once."""
from __future__ import annotations

import pytest

from embedding.testing import make_notes, make_tiny_checkpoint, write_dataset


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory):
    """(notes path, pairs path): 32 notes in 8 themes, pairs within themes, train/val/test splits."""
    return write_dataset(tmp_path_factory.mktemp("tiny_dataset"), count=32, groups=8)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> str:
    return make_tiny_checkpoint(str(tmp_path_factory.mktemp("ckpt") / "notellm2"), variant="notellm2")


@pytest.fixture()
def sample_notes():
    return make_notes(8, seed=3)
