"""Fixtures of the Beam job tests; the local runner is always named explicitly."""
from __future__ import annotations

import pytest


@pytest.fixture
def beam_args() -> list[str]:
    return ["--runner=DirectRunner"]
