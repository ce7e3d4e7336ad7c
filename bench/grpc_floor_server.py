"""The floor of the recall server's cost: the same gRPC stack answering every Recall with one canned response.

``bench/recall_load.py --modes floor`` drives it with the same clients as ``i2i serve``, so the
difference between the two is what the recall work itself costs (lookup, searches, merge, metrics,
and the GIL hand-overs that work causes), and the floor is what no change to that work can remove:
the gRPC Python layer, protobuf and the kernel, per request, at that load, on that machine.

It runs like ``i2i serve`` at its defaults: one process per usable CPU sharing the port
(SO_REUSEPORT), each a sync ``grpc.server`` with as many request threads as ``i2i serve`` gives a
Parquet table, and the health service. Each answer holds ``--k`` notes whose ids and scores look like real ones.

    python bench/grpc_floor_server.py [--port 0] [--processes 0] [--k 200]
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import signal
import sys
import threading
from concurrent import futures
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import grpc  # noqa: E402
from grpc_health.v1 import health, health_pb2, health_pb2_grpc  # noqa: E402

from recall_server.config import ServerConfig  # noqa: E402
from recall_server.processes import reserve_port  # noqa: E402
from recall_server.stubs import recall_pb2  # noqa: E402

SERVICE_NAME = recall_pb2.DESCRIPTOR.services_by_name["RecallService"].full_name


def canned_response(k: int) -> bytes:
    """A serialized RecallResponse of ``k`` notes with ids as long as the benchmark's."""
    response = recall_pb2.RecallResponse(index_version="v000001", model_version="bench-m1")
    for i in range(k):
        response.notes.add(note_id=f"note-{i:07d}", score=1.0 - i / (k + 1), source_note_id=f"note-{i % 50:07d}")
    return response.SerializeToString()


def serve_member(port: int, k: int, workers: int, ready) -> None:
    """One process: parses each request as the real server does and returns the canned bytes."""
    answer = canned_response(k)

    def recall(request, context):
        return answer

    handlers = {"Recall": grpc.unary_unary_rpc_method_handler(
        recall, request_deserializer=recall_pb2.RecallRequest.FromString, response_serializer=lambda data: data)}
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=workers), options=[("grpc.so_reuseport", 1)])
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE_NAME, handlers),))
    servicer = health.HealthServicer(experimental_non_blocking=True)
    for name in ("", SERVICE_NAME):
        servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    ready.set()
    stop.wait()
    server.stop(1).wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=0, help="0 = any free port (printed)")
    parser.add_argument("--processes", type=int, default=0, help="0 = one per usable CPU, as i2i serve")
    parser.add_argument("--k", type=int, default=200, help="notes in the canned response")
    args = parser.parse_args(argv)
    defaults = ServerConfig(index_dir="", table_url="parquet:", processes=args.processes)
    reserved = reserve_port("127.0.0.1", args.port)
    port = reserved.getsockname()[1]
    context = mp.get_context("spawn")
    members = []
    for _ in range(defaults.process_count):
        ready = context.Event()
        member = context.Process(target=serve_member, args=(port, args.k, defaults.request_threads, ready), daemon=True)
        member.start()
        if not ready.wait(60):
            raise SystemExit("a floor server process did not start within 60 s")
        members.append(member)
    print(f"grpc floor server: listening on 127.0.0.1:{port} ({len(members)} processes x {defaults.request_threads} "
          f"threads, canned response of {args.k} notes)", flush=True)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    stop.wait()
    for member in members:
        member.terminate()
    for member in members:
        member.join(10)
    reserved.close()
    print("grpc floor server: stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
