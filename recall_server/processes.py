"""``i2i serve --processes N``: N recall server processes sharing one port, under a supervisor.

Why: part of every request holds the GIL (gRPC's Python layer, protobuf, request planning, the
merge), so one interpreter cannot keep two cores busy; processes can. Each process is a whole
``RecallServer`` (its own index copy, table reader, neighbour cache, hot reload and health),
bound to the same port with SO_REUSEPORT, so the kernel spreads connections over them. The
supervisor reserves the port, starts the processes, restarts one that dies, adds up their
metrics on one ``/metrics`` endpoint (prometheus_client's multiprocess mode) and, on SIGTERM or
SIGINT, drains them all.
"""
from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import shutil
import signal
import socket
import tempfile
import threading
import time
from dataclasses import dataclass, field, replace
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any

from i2i.core.errors import Failure, I2IError, InputError, TemporaryError, exit_code
from recall_server.config import ServerConfig, host_port
from recall_server.logs import log_event

logger = logging.getLogger("recall_server.processes")

METRICS_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"
BOOT_SECONDS = 120.0  # a process must answer "ready" within this (plus its wait for the index)
# While the others serve, a process joins the port only once its index is loaded (or after this).
JOIN_WAIT_SECONDS = 120.0
MAX_RESTART_DELAY_SECONDS = 60.0
# Of the memory found available (not of a --max-memory-mb given), the share the other processes may
# take: the page cache, the neighbour caches filling up and hot reloads (two versions) need the rest.
MEMORY_HEADROOM = 0.8


def peak_memory_bytes(pid: int) -> int:
    """A process's peak resident set (VmHWM): what each process of the group needs while it loads."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise Failure(f"no VmHWM in /proc/{pid}/status")


def available_memory_bytes() -> int:
    """Memory available now: MemAvailable, or less where a cgroup limit (v2 or v1) leaves less."""
    meminfo = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines() if ":" in line)
    available = int(meminfo["MemAvailable"].split()[0]) * 1024
    for limit_file, usage_file in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                                   ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                                    "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        try:
            limit, usage = Path(limit_file).read_text().strip(), int(Path(usage_file).read_text())
        except (OSError, ValueError):
            continue
        if limit.isdigit() and int(limit) < 2 ** 60:  # "max" or a huge v1 value: no limit
            available = min(available, max(0, int(limit) - usage))
        break
    return available


def processes_that_fit(first_peak: int, max_memory: int, available: int) -> int:
    """How many processes fit, counting the first (already running, at ``first_peak`` bytes) and
    giving each other one the same peak: within ``max_memory`` bytes if given, else within
    MEMORY_HEADROOM of what is ``available`` beside the first."""
    room = max_memory - first_peak if max_memory else MEMORY_HEADROOM * available
    return 1 + max(0, int(room // max(first_peak, 1)))


def reserve_port(host: str, port: int) -> socket.socket:
    """A bound, not listening socket with SO_REUSEPORT: holds the group's port (picks one for port 0).

    Only listening sockets take connections, so the reservation never receives a call.
    """
    address = host.strip("[]")
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((address, port))
    except OSError as exc:
        sock.close()
        raise InputError(f"cannot listen on {host_port(host, port)}: {exc.strerror or exc}") from exc
    return sock


# --------------------------------------------------------------------------- one process of the group
def logging_state() -> tuple[int, str | None, dict[str, int]]:
    """The parent's logging set-up (root level, format, levels of named loggers), for its processes."""
    root = logging.getLogger()
    formatter = root.handlers[0].formatter if root.handlers else None
    levels = {name: item.level for name, item in logging.root.manager.loggerDict.items()
              if isinstance(item, logging.Logger) and item.level != logging.NOTSET}
    return root.level, getattr(formatter, "_fmt", None), levels


def apply_logging(state: tuple[int, str | None, dict[str, int]]) -> None:
    level, fmt, levels = state
    logging.basicConfig(level=level, format=fmt or logging.BASIC_FORMAT)
    for name, named_level in levels.items():
        logging.getLogger(name).setLevel(named_level)


def serve_process(config: ServerConfig, conn: Connection, wait_for_index: float,
                  logs: tuple[int, str | None, dict[str, int]]) -> None:
    """Entry point of a group process: reports ``ready``, serves until SIGTERM/SIGINT or the
    supervisor's ``stop`` (or its exit), then reports its summary."""
    apply_logging(logs)
    from recall_server.server import RecallServer  # imported here, after the metrics directory is set

    try:
        server = RecallServer(config, bind_at_start=True).start(wait_for_index)
    except Exception as exc:  # noqa: BLE001 (every failure goes back to the supervisor)
        with contextlib.suppress(OSError):
            conn.send(("failed", exit_code(exc), str(exc) if isinstance(exc, I2IError) else repr(exc)))
        return
    try:
        conn.send(("ready", server.port, server.holder.current is not None))
    except OSError:  # the supervisor died while this process started: nobody would ever stop it
        server.stop(0)
        return
    stop = threading.Event()

    def until_told() -> None:
        try:
            conn.recv()
        except (EOFError, OSError):  # the supervisor is gone: stop too
            pass
        stop.set()

    threading.Thread(target=until_told, name="supervisor", daemon=True).start()
    server.serve_until_signal(stop)
    try:
        conn.send(("stopped", server.summary()))
    except OSError:  # the supervisor is gone; the summary was logged
        pass


# --------------------------------------------------------------------------- the supervisor
@dataclass
class Member:
    """One slot of the group and the process currently filling it."""

    slot: int
    process: Any = None
    conn: Connection | None = None
    started_at: float = 0.0
    restarts: int = 0  # processes started in this slot after the first
    failing: int = 0  # exits in a row, each within a minute of its start: the restart delay doubles
    summaries: list[dict] = field(default_factory=list)


class ServerGroup:
    """``start()`` the processes, ``serve_until_signal()``, then ``summary()``."""

    def __init__(self, config: ServerConfig, wait_for_index: float = 0.0) -> None:
        self.config = config
        self.count = config.process_count
        self.wait_for_index = wait_for_index
        self.port = 0
        self.metrics_port: int | None = None
        self.members: list[Member] = []
        self.loaded = True  # every process had an index when it reported ready
        self._stopping = threading.Event()
        self._reservation: socket.socket | None = None
        self._metrics_dir = ""
        self._http = None
        self._restarts = None
        self._started_at = 0.0
        self._logs = logging_state()
        self._previous_handlers: dict[int, Any] = {}
        self._shut_down = False

    @property
    def address(self) -> str:
        return host_port(self.config.host, self.port)

    def start(self) -> "ServerGroup":
        """Starts the processes. SIGTERM/SIGINT from here on stop the group: during start-up they stop
        the processes started so far, and ``serve_until_signal`` then returns at once."""
        import prometheus_client  # noqa: F401 (fixed to in-process values here before the directory is set)

        self._catch_signals()

        self._reservation = reserve_port(self.config.host, self.config.port)
        self.port = self._reservation.getsockname()[1]
        self._metrics_dir = tempfile.mkdtemp(prefix="i2i-serve-metrics-")
        self._member_config = replace(self.config, port=self.port, reuse_port=True, metrics_port=None, processes=1)
        # With an index published, no process takes calls before it has loaded it: a caller's
        # connection can land on any of them. Without one, they listen at once (NOT_SERVING).
        published = (Path(self.config.index_dir) / "CURRENT").exists()
        self._member_wait = max(self.wait_for_index, JOIN_WAIT_SECONDS if published else 0.0)
        try:
            if self.config.metrics_port is not None:  # up from the start, as a single process's is
                self._serve_metrics()
            self.members = [Member(slot) for slot in range(self.count)]
            # The first alone, so that what it takes once loaded says how many copies fit.
            self._spawn(self.members[0])
            self._await_ready(self.members[0])
            self._fit_to_memory()
            for member in self.members[1:]:
                self._spawn(member)
            for member in self.members[1:]:
                self._await_ready(member)
        except BaseException:
            signalled = self._stopping.is_set()  # before _shutdown, which sets it too
            self._shutdown(drain=False)
            if not signalled:
                self._restore_signals()
                raise
            log_event(logger, logging.INFO, "server_group_stopped_while_starting", address=self.address)
            self._started_at = time.monotonic()
            return self
        self._started_at = time.monotonic()
        log_event(logger, logging.INFO, "server_group_started", address=self.address, processes=self.count,
                  pids=[member.process.pid for member in self.members], metrics_port=self.metrics_port)
        return self

    def _fit_to_memory(self) -> None:
        """Lowers a CPU-derived process count to what fits in memory; warns about a count given."""
        first_peak = peak_memory_bytes(self.members[0].process.pid)
        max_memory = int(self.config.max_memory_mb * 2 ** 20)
        available = 0 if max_memory else available_memory_bytes()
        fit = processes_that_fit(first_peak, max_memory, available)
        if fit >= self.count:
            return
        details = dict(wanted=self.count, fit=fit, process_peak_mb=round(first_peak / 2 ** 20),
                       memory_mb=round((max_memory or available + first_peak) / 2 ** 20),
                       memory_from="--max-memory-mb" if max_memory else "available")
        if self.config.processes:  # the operator's count stands
            log_event(logger, logging.WARNING, "server_processes_may_not_fit", **details)
            return
        log_event(logger, logging.WARNING, "server_processes_capped", **details)
        self.members, self.count = self.members[:fit], fit

    def _spawn(self, member: Member) -> None:
        context = multiprocessing.get_context("spawn")
        parent, child = context.Pipe()
        previous = os.environ.get(METRICS_DIR_ENV)
        os.environ[METRICS_DIR_ENV] = self._metrics_dir  # inherited by the child only
        try:
            process = context.Process(target=serve_process, name=f"i2i-serve-{member.slot}",
                                      args=(self._member_config, child, self._member_wait, self._logs))
            process.start()
        finally:
            if previous is None:
                os.environ.pop(METRICS_DIR_ENV, None)
            else:
                os.environ[METRICS_DIR_ENV] = previous
        child.close()
        member.process, member.conn, member.started_at = process, parent, time.monotonic()

    def _await_ready(self, member: Member) -> None:
        """Waits for the member's ``ready``; raises the error it reported or a Failure if it died."""
        deadline = time.monotonic() + BOOT_SECONDS + self._member_wait
        while not member.conn.poll(0.2):
            if self._stopping.is_set():
                raise Failure(f"server process {member.slot} was still starting when the server stopped")
            if time.monotonic() > deadline:
                raise Failure(f"server process {member.slot} did not start within {deadline - member.started_at:.0f} s")
        try:
            message = member.conn.recv()
        except EOFError:
            member.process.join(5)
            raise Failure(f"server process {member.slot} exited with code {member.process.exitcode} "
                          "before it was ready") from None
        if message[0] == "failed":
            _, code, text = message
            error = {InputError.exit_code: InputError, TemporaryError.exit_code: TemporaryError}.get(code, Failure)
            raise error(text)
        self.loaded = self.loaded and bool(message[2])

    def _serve_metrics(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, start_http_server
        from prometheus_client.multiprocess import MultiProcessCollector

        registry = CollectorRegistry()
        collector = MultiProcessCollector(registry, path=self._metrics_dir)
        registry.register(IndexAgeCollector(collector))
        self._restarts = Counter("i2i_recall_process_restarts", "Server processes of the group started again "
                                 "after one exited", registry=registry)
        self._http, _thread = start_http_server(self.config.metrics_port, addr=self.config.host, registry=registry)
        self.metrics_port = self._http.server_port

    def _catch_signals(self) -> None:
        def on_signal(signum, _frame):
            log_event(logger, logging.INFO, "signal", signal=signal.Signals(signum).name)
            self._stopping.set()

        if threading.current_thread() is threading.main_thread():
            self._previous_handlers = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}

    def _restore_signals(self) -> None:
        for sig, handler in self._previous_handlers.items():
            signal.signal(sig, handler)
        self._previous_handlers = {}

    def serve_until_signal(self) -> None:
        """Restarts members that exit until SIGTERM or SIGINT, then drains every member."""
        try:
            while not self._stopping.is_set():
                by_sentinel = {member.process.sentinel: member for member in self.members}
                for sentinel in wait(list(by_sentinel), timeout=0.5):
                    if not self._stopping.is_set():
                        self._restart(by_sentinel[sentinel])
        finally:
            self._shutdown(drain=True)  # nothing left to do if a stop during start-up already ran it
            self._restore_signals()

    def _restart(self, member: Member) -> None:
        """Replaces a member that exited, after a delay that doubles while it keeps failing."""
        from prometheus_client import multiprocess

        member.process.join(1)
        pid, code = member.process.pid, member.process.exitcode
        multiprocess.mark_process_dead(pid, self._metrics_dir)
        member.conn.close()
        member.failing = 0 if time.monotonic() - member.started_at > MAX_RESTART_DELAY_SECONDS else member.failing
        delay = min(MAX_RESTART_DELAY_SECONDS, 2.0 ** member.failing)
        member.failing += 1
        log_event(logger, logging.WARNING, "server_process_exited", slot=member.slot, pid=pid, exit_code=code,
                  restart_in_seconds=delay)
        if self._stopping.wait(delay):
            return
        self._spawn(member)
        member.restarts += 1
        if self._restarts is not None:
            self._restarts.inc()
        try:
            self._await_ready(member)
        except I2IError as exc:  # retried after a longer delay once its sentinel fires
            log_event(logger, logging.ERROR, "server_process_failed", slot=member.slot, error=str(exc))
            if member.process.is_alive():
                member.process.kill()
            return
        log_event(logger, logging.INFO, "server_process_restarted", slot=member.slot, pid=member.process.pid)

    def _shutdown(self, drain: bool) -> None:
        """Tells every member to drain (or, before they all started, to stop), collects their summaries.
        Runs once: a second call (after a stop during start-up) returns at once."""
        self._stopping.set()
        if self._shut_down:
            return
        self._shut_down = True
        grace = self.config.grace_seconds if drain else 0.0
        for member in self.members:
            if member.process is not None and member.process.is_alive():
                try:
                    member.conn.send("stop")
                except OSError:
                    member.process.terminate()
        deadline = time.monotonic() + grace + 30
        for member in self.members:
            if member.process is None:
                continue
            try:  # read until its pipe ends: the "stopped" summary, then end of file
                while True:
                    if member.conn.poll(max(0.0, min(0.2, deadline - time.monotonic()))):
                        message = member.conn.recv()
                        if message[0] == "stopped":
                            member.summaries.append(message[1])
                    elif not member.process.is_alive():
                        break
                    elif time.monotonic() > deadline:
                        member.process.kill()
                        break
            except (EOFError, OSError):  # ended, or a slot whose process had exited before
                pass
            member.process.join(5)
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None
        if self._reservation is not None:
            self._reservation.close()
            self._reservation = None
        shutil.rmtree(self._metrics_dir, ignore_errors=True)

    def summary(self) -> dict[str, Any]:
        """The members' closing counts added up (for the closing line of ``i2i serve``)."""
        summaries = [summary for member in self.members for summary in member.summaries]
        total = {name: sum(int(s.get(name) or 0) for s in summaries)
                 for name in ("requests", "ok", "errors", "reloads_ok", "reloads_failed")}
        versions = [s["index_version"] for s in summaries if s.get("index_version")]
        total["index_version"] = max(versions) if versions else None
        total["uptime_seconds"] = round(time.monotonic() - self._started_at, 1) if self._started_at else 0.0
        total["processes"] = self.count
        total["restarts"] = sum(member.restarts for member in self.members)
        return total


class IndexAgeCollector:
    """``i2i_recall_index_age_seconds`` at scrape time, from the group's newest index creation time."""

    def __init__(self, source) -> None:
        self.source = source

    def collect(self):
        from prometheus_client.core import GaugeMetricFamily

        from recall_server.metrics import INDEX_AGE, INDEX_AGE_HELP, INDEX_CREATED, index_age_seconds

        created = [sample.value for family in self.source.collect() if family.name == INDEX_CREATED
                   for sample in family.samples if sample.value == sample.value]
        yield GaugeMetricFamily(INDEX_AGE, INDEX_AGE_HELP, value=index_age_seconds(max(created) if created else None))
