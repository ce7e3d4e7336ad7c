"""The suite cannot pass by skipping, a missing system binary fails with what to install, and
set-up fails loudly when it cannot install a system package."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_pytest(tmp_path: Path, body: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """Runs pytest on one test file beside a copy of the project's tests/conftest.py."""
    tests = tmp_path / "tests"
    tests.mkdir()
    shutil.copy(ROOT / "tests" / "conftest.py", tests / "conftest.py")
    (tests / "test_probe.py").write_text(body)
    environment = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", str(tmp_path),
                           str(tests)], cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=300)


def test_a_skipped_test_fails_the_session(tmp_path):
    result = run_pytest(tmp_path, "import pytest\n\ndef test_ok():\n    pass\n\n"
                                  "def test_gone():\n    pytest.skip('not here')\n")
    assert result.returncode == 1, result.stdout
    assert "1 passed, 1 skipped" in result.stdout and "cannot pass by skipping" in result.stdout


def test_a_missing_redis_server_fails_with_what_to_install(tmp_path):
    bin_dir = tmp_path / "bin"  # a PATH without redis-server
    bin_dir.mkdir()
    result = run_pytest(tmp_path, "from conftest import RedisServer\n\n"
                                  "def test_redis(tmp_path):\n    RedisServer(tmp_path)\n",
                        env={"PATH": str(bin_dir)})
    assert result.returncode == 1, result.stdout
    assert "redis-server is not installed" in result.stdout and "apt-get install redis-server" in result.stdout
    assert "skipped" not in result.stdout


def test_setup_fails_loudly_without_apt_get(tmp_path):
    bin_dir = tmp_path / "bin"  # a PATH with what the script needs to start, but no apt-get or redis
    bin_dir.mkdir()
    for tool in ("dirname", "id", "cat", "sha256sum", "cut"):
        os.symlink(shutil.which(tool), bin_dir / tool)
    marker = tmp_path / "python-was-run"
    fake_python = tmp_path / "python3"
    fake_python.write_text(f"#!/bin/sh\ntouch {marker}\nexit 1\n")
    fake_python.chmod(0o755)
    result = subprocess.run(["/bin/bash", str(ROOT / "scripts" / "setup_env.sh")], capture_output=True, text=True,
                            timeout=60, env={"PATH": str(bin_dir), "I2I_VENV": str(tmp_path / "venv"),
                                             "PYTHON": str(fake_python), "HOME": str(tmp_path)})
    assert result.returncode != 0
    assert "redis-server" in result.stderr and "apt-get is not available" in result.stderr, result.stderr
    assert not marker.exists()  # it stopped before the Python packages, instead of warning and going on
