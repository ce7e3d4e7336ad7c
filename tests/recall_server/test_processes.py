"""``i2i serve --processes N`` as a real process group: one port, answers equal to brute force, the
processes' metrics added up on one endpoint, a killed process replaced, a port in use refused."""
from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import grpc

from recall_server.stubs import recall_pb2, recall_pb2_grpc

from .test_service import brute_force

I2I = str(Path(sys.executable).parent / "i2i")


class Group:
    """An ``i2i serve --processes`` subprocess; its stderr is read on a thread into ``events``."""

    def __init__(self, corpus, tmp_path, *options: str) -> None:
        self.process = subprocess.Popen(
            [I2I, "serve", "--index-dir", str(corpus.index_dir), "--table", corpus.table_url, "--port", "0",
             "--metrics-port", "0", "--wait-for-index", "30", "--reload-interval", "0.2", "--grace", "2", *options],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
        self.events: list[dict] = []
        self.stderr: list[str] = []
        self._reader = threading.Thread(target=self._read_stderr, daemon=True)
        self._reader.start()
        self.first_line = self.process.stdout.readline()
        listening = re.search(r"listening on (127\.0\.0\.1:\d+) .*metrics on :(\d+)", self.first_line)
        assert listening, self.first_line + "".join(self.stderr)
        self.target, self.metrics_port = listening.group(1), int(listening.group(2))

    def _read_stderr(self) -> None:
        for line in self.process.stderr:
            self.stderr.append(line)
            if "{" in line:
                try:
                    self.events.append(json.loads(line[line.index("{"):]))
                except ValueError:
                    pass

    def event(self, name: str, timeout: float = 30.0) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = [event for event in self.events if event.get("event") == name]
            if found:
                return found[-1]
            time.sleep(0.05)
        raise AssertionError(f"no {name} event in: {''.join(self.stderr)[-3000:]}")

    def recall(self, history: list[str], k: int) -> recall_pb2.RecallResponse:
        """One call on a fresh connection (the kernel spreads connections, not calls, over the processes)."""
        with grpc.insecure_channel(self.target, options=[("grpc.use_local_subchannel_pool", 1)]) as channel:
            return recall_pb2_grpc.RecallServiceStub(channel).Recall(
                recall_pb2.RecallRequest(history=history, k=k), timeout=10)

    def metrics(self) -> dict[str, float]:
        text = urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=10).read().decode()
        return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                if line and not line.startswith("#")}

    def stop(self) -> tuple[int, str]:
        self.process.send_signal(signal.SIGTERM)
        out = self.process.stdout.read()  # to the end: the process has exited
        self.process.wait(timeout=60)
        self._reader.join(timeout=10)
        return self.process.returncode, out

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def test_a_group_answers_exactly_spreads_connections_and_adds_up_its_metrics(corpus, tmp_path):
    group = Group(corpus, tmp_path, "--processes", "2")
    try:
        assert "processes=2" in group.first_line
        calls = 24
        for call in range(calls):
            history = [corpus.note_ids[(7 * call + j) % 300] for j in range(3)]
            response = group.recall(history, k=10)
            assert [note.note_id for note in response.notes] == [n for n, _, _ in brute_force(corpus, history, 10)]
        metrics = group.metrics()
        assert metrics['i2i_recall_requests_total{code="OK"}'] == calls  # both processes' counts, added up
        recall = 'grpc_method="Recall",grpc_service="i2i.v1.RecallService",grpc_type="unary"'
        assert metrics[f'grpc_server_handled_total{{grpc_code="OK",{recall}}}'] == calls
        assert metrics[f"grpc_server_handling_seconds_count{{{recall}}}"] == calls
        assert metrics["i2i_recall_index_loaded"] == 1.0
        assert metrics[f'i2i_recall_index_info{{index_version="{corpus.version}",model_version="m1"}}'] == 1.0
        assert metrics["i2i_recall_index_notes"] == 300
        assert 0 <= metrics["i2i_recall_index_age_seconds"] < 300
        assert metrics["i2i_recall_neighbour_cache_entries"] > 0
        code, out = group.stop()
        assert code == 0
        assert re.search(rf"stopped after [\d.]+ s: {calls} requests \({calls} ok, 0 errors\), index {corpus.version}",
                         out), out
        stopped = [event for event in group.events if event.get("event") == "server_stopped"]
        assert len(stopped) == 2 and all(event["requests"] > 0 for event in stopped), stopped  # both served
        assert sum(event["requests"] for event in stopped) == calls
    finally:
        group.kill()


def test_a_killed_process_is_replaced_while_the_other_keeps_serving(corpus, tmp_path):
    group = Group(corpus, tmp_path, "--processes", "2")
    try:
        pids = group.event("server_group_started")["pids"]
        assert len(pids) == 2 and group.process.pid not in pids
        os.kill(pids[0], signal.SIGKILL)
        exited = group.event("server_process_exited")  # seen once the process (and its listener) is gone
        assert exited["pid"] == pids[0] and exited["exit_code"] == -signal.SIGKILL
        history = ["n001", "n002"]
        expected = [n for n, _, _ in brute_force(corpus, history, 5)]
        for _ in range(10):  # new connections go to the living process
            assert [note.note_id for note in group.recall(history, k=5).notes] == expected
        restarted = group.event("server_process_restarted", timeout=60)
        assert restarted["pid"] not in pids
        assert group.metrics()["i2i_recall_process_restarts_total"] == 1.0
        for _ in range(10):
            assert [note.note_id for note in group.recall(history, k=5).notes] == expected
        code, out = group.stop()
        assert code == 0 and "1 process restarts" in out, out
    finally:
        group.kill()


def test_a_port_taken_by_another_server_is_refused_with_exit_2(corpus, tmp_path):
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    try:
        port = taken.getsockname()[1]
        done = subprocess.run([I2I, "serve", "--index-dir", str(corpus.index_dir), "--table", corpus.table_url,
                               "--port", str(port), "--processes", "2"], capture_output=True, text=True, timeout=60,
                              cwd=tmp_path)
        assert done.returncode == 2, done.stderr
        assert f"cannot listen on 127.0.0.1:{port}" in done.stderr
    finally:
        taken.close()


def test_a_process_that_cannot_start_fails_the_group_with_its_reason_and_exit_code(corpus, tmp_path):
    """The port is free (the supervisor reserves it), but each process fails to serve TLS with a
    file that is no certificate: the group stops with that process's error, exit 2 (fix the input)."""
    bad = tmp_path / "not-a-certificate.pem"
    bad.write_text("not a certificate\n")
    done = subprocess.run([I2I, "serve", "--index-dir", str(corpus.index_dir), "--table", corpus.table_url,
                           "--port", "0", "--processes", "2", "--tls-cert", str(bad), "--tls-key", str(bad)],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert "listening" not in done.stdout
    assert re.search(r"i2i serve: error: cannot listen on 127\.0\.0\.1:\d+", done.stderr), done.stderr


def test_processes_per_cpu_are_lowered_to_what_fits_in_memory(corpus, tmp_path):
    """--processes 0 asks for one per CPU; a memory budget smaller than two loaded processes keeps one."""
    cpus = len(os.sched_getaffinity(0))
    assert cpus >= 2, "one process per CPU is one process here: the cap cannot show"
    group = Group(corpus, tmp_path, "--processes", "0", "--max-memory-mb", "1")
    try:
        assert "processes=1" in group.first_line, group.first_line
        capped = group.event("server_processes_capped")
        assert capped["wanted"] == cpus and capped["fit"] == 1 and capped["memory_from"] == "--max-memory-mb"
        assert capped["process_peak_mb"] > 20  # a loaded Python server, read from /proc
        assert len(group.event("server_group_started")["pids"]) == 1
        history = ["n010", "n011", "n012"]
        assert [note.note_id for note in group.recall(history, k=8).notes] == [
            n for n, _, _ in brute_force(corpus, history, 8)]
        code, out = group.stop()
        assert code == 0 and "1 requests (1 ok, 0 errors)" in out, out
    finally:
        group.kill()


def test_a_process_count_given_is_kept_with_a_warning_when_it_may_not_fit(corpus, tmp_path):
    group = Group(corpus, tmp_path, "--processes", "2", "--max-memory-mb", "1")
    try:
        assert "processes=2" in group.first_line
        warned = group.event("server_processes_may_not_fit")
        assert warned["wanted"] == 2 and warned["fit"] == 1
        assert len(group.event("server_group_started")["pids"]) == 2
        assert not [event for event in group.events if event.get("event") == "server_processes_capped"]
    finally:
        group.kill()


def test_processes_that_fit_count_the_first_and_keep_headroom_of_what_is_available():
    from recall_server.processes import MEMORY_HEADROOM, available_memory_bytes, processes_that_fit

    mib = 2 ** 20
    # A budget given: the first's 100 MiB is part of it; 350 MiB hold 3 (a 4th would need 400).
    assert processes_that_fit(100 * mib, 350 * mib, 0) == 3
    assert processes_that_fit(100 * mib, 400 * mib, 0) == 4
    assert processes_that_fit(100 * mib, 50 * mib, 0) == 1  # the running one always stays
    # Memory found available is beside the first; only MEMORY_HEADROOM of it is handed out.
    assert MEMORY_HEADROOM == 0.8
    assert processes_that_fit(100 * mib, 0, 260 * mib) == 3  # 208 MiB for others: 2 more
    assert processes_that_fit(100 * mib, 0, 240 * mib) == 2  # 192 MiB: 1 more
    meminfo = Path("/proc/meminfo").read_text()
    mem_available = int(re.search(r"MemAvailable:\s+(\d+) kB", meminfo).group(1)) * 1024
    assert 0 < available_memory_bytes() <= mem_available * 1.05  # no more than the kernel reports (it moves)


def children_of(pid: int) -> set[int]:
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        found |= {int(child) for child in (task / "children").read_text().split()}
    return found


def test_sigterm_while_the_group_starts_stops_every_process_it_started(corpus, tmp_path):
    """A caller that sees the first process serving and stops the server at once (as a job that
    recalls a few users does) must not leave the later processes running, holding its pipes."""
    port = socket.socket()
    port.bind(("127.0.0.1", 0))
    address = f"127.0.0.1:{port.getsockname()[1]}"
    port.close()
    process = subprocess.Popen([I2I, "serve", "--index-dir", str(corpus.index_dir), "--table", corpus.table_url,
                                "--port", address.rsplit(":", 1)[1], "--processes", "2"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    try:
        # A plain TCP connect, tried every 20 ms: a process listens only once its index is loaded, and
        # a gRPC channel's reconnect backoff (1 s and more) could miss the window while the next starts.
        deadline = time.monotonic() + 60
        while True:
            assert time.monotonic() < deadline and process.poll() is None, "the first process never listened"
            try:
                socket.create_connection(("127.0.0.1", int(address.rsplit(":", 1)[1])), timeout=0.5).close()
                break
            except OSError:
                time.sleep(0.02)
        started = children_of(process.pid)
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=90)  # hangs while any process holds the pipes
        assert process.returncode == 0, err[-3000:]
        assert "server_group_stopped_while_starting" in err, "the stop came after the start: nothing was shown"
        deadline = time.monotonic() + 10
        while any(Path(f"/proc/{pid}").exists() for pid in started) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not [pid for pid in started if Path(f"/proc/{pid}").exists()]
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
