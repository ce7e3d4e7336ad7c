"""The code passes the lint rules of ``ruff.toml`` (pyflakes, pycodestyle errors, sorted imports)."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RUFF = shutil.which("ruff", path=str(Path(sys.executable).parent)) or "ruff"


def test_ruff_check_passes():
    result = subprocess.run([RUFF, "check", "--no-cache", "."], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_check_reports_a_planted_unused_import(tmp_path):
    (tmp_path / "planted.py").write_text("import os\n")
    result = subprocess.run([RUFF, "check", "--no-cache", "--config", str(REPO / "ruff.toml"), "planted.py"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1 and "F401" in result.stdout, result.stdout + result.stderr
