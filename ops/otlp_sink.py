"""An OTLP/gRPC trace receiver that counts spans and keeps none: tracing's cost, measured.

    .venv/bin/python ops/otlp_sink.py --port-file /tmp/sink.port

Listens on 127.0.0.1 (a free port, written to --port-file), answers every Export, counts
the spans per service, and prints the counts when stopped (SIGTERM or Ctrl-C). It stands in
for an OpenTelemetry collector when measuring what exporting spans costs the suite
(docs/performance.md); it is not a collector to run in production.
"""

from __future__ import annotations

import argparse
import collections
import concurrent.futures
import json
import pathlib
import signal
import sys
import threading
from typing import Any

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

MAX_MESSAGE_BYTES = 16 * 1024 * 1024


class Sink(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.spans: collections.Counter[str] = collections.Counter()

    def Export(self, request: Any, context: Any) -> Any:  # noqa: N802 (gRPC's name)
        counts: collections.Counter[str] = collections.Counter()
        for resource_spans in request.resource_spans:
            service = next(
                (
                    a.value.string_value
                    for a in resource_spans.resource.attributes
                    if a.key == "service.name"
                ),
                "",
            )
            counts[service] += sum(len(scope.spans) for scope in resource_spans.scope_spans)
        with self._lock:
            self.spans.update(counts)
        return trace_service_pb2.ExportTraceServiceResponse()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port-file", required=True, type=pathlib.Path)
    args = parser.parse_args()
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    sink = Sink()
    server = grpc.server(
        concurrent.futures.ThreadPoolExecutor(max_workers=4),
        options=[("grpc.max_receive_message_length", MAX_MESSAGE_BYTES)],
    )
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(sink, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    args.port_file.write_text(f"{port}\n")
    while not stop.wait(0.5):
        pass
    server.stop(grace=2).wait(5)
    print(json.dumps({"spans": dict(sorted(sink.spans.items()))}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
