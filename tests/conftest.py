"""Shared fixtures: a real Redis server on a free loopback port, and small sample tables.

The suite cannot pass by skipping: a skipped test fails the session (the project's tests run on
real components, which scripts/setup_env.sh installs), and a missing system binary is a failure
that says what to install.
"""
from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from i2i.testing.serving import free_port

SETUP_HINT = "scripts/setup_env.sh installs it (apt-get install redis-server redis-tools openssl)"


def require_binary(name: str) -> str:
    """The path of a system binary the tests need; its absence fails the test, never skips it."""
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed (not on PATH); {SETUP_HINT}", pytrace=False)
    return path


SKIPPED: list[str] = []  # node ids of skipped tests and modules in this session


def pytest_collectreport(report: pytest.CollectReport) -> None:
    if report.skipped:
        SKIPPED.append(report.nodeid)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped and not hasattr(report, "wasxfail"):
        SKIPPED.append(report.nodeid)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if SKIPPED and exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    if SKIPPED:
        terminalreporter.write_line(f"FAILED: {len(SKIPPED)} skipped, and the suite cannot pass by skipping: "
                                    + ", ".join(SKIPPED[:10]), red=True)


class RedisServer:
    """A redis-server process on 127.0.0.1 that tests can stop and restart on the same port."""

    def __init__(self, workdir: Path, port: int | None = None, password: str | None = None) -> None:
        self.binary = require_binary("redis-server")
        self.workdir = workdir
        self.port = port or free_port()
        self.password = password
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def start(self) -> "RedisServer":
        args = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "no", "--dir", str(self.workdir)]
        if self.password:
            args += ["--requirepass", self.password]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"redis-server did not start on port {self.port}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)
        self.process = None


@pytest.fixture
def redis_server(tmp_path):
    server = RedisServer(tmp_path).start()
    yield server
    server.stop()
