"""paygate.bench.batches: the gateway's batching over a window, from its /metrics."""

from __future__ import annotations

import http.server
import socket
import threading
from collections.abc import Iterator

import pytest
from paygate.bench import batches
from paygate.bench.load import LoadResult
from paygate.bench.report import by_second

BODY = """\
# HELP paygate_bank_batch_size Calls carried by each batch RPC.
# TYPE paygate_bank_batch_size histogram
paygate_bank_batch_size_bucket{bank="bank-a",operation="prepare",le="+Inf"} 10.0
paygate_bank_batch_size_count{bank="bank-a",operation="prepare"} 10.0
paygate_bank_batch_size_sum{bank="bank-a",operation="prepare"} 40.0
paygate_bank_batch_size_bucket{bank="bank-b",operation="prepare",le="+Inf"} 5.0
paygate_bank_batch_size_count{bank="bank-b",operation="prepare"} 5.0
paygate_bank_batch_size_sum{bank="bank-b",operation="prepare"} 5.0
paygate_bank_batch_size_bucket{bank="bank-a",operation="commit",le="+Inf"} 2.0
paygate_bank_batch_size_count{bank="bank-a",operation="commit"} 2.0
paygate_bank_batch_size_sum{bank="bank-a",operation="commit"} 8.0
"""


def test_totals_are_summed_over_banks_per_operation() -> None:
    assert batches.parse_totals(BODY) == {
        "prepare": {"rpcs": 15.0, "calls": 45.0},
        "commit": {"rpcs": 2.0, "calls": 8.0},
    }


def test_a_window_is_the_difference_of_two_reads() -> None:
    first = {"prepare": {"rpcs": 15.0, "calls": 45.0}}
    last = {"prepare": {"rpcs": 25.0, "calls": 85.0}, "commit": {"rpcs": 4.0, "calls": 8.0}}
    assert batches.window(first, last) == {
        "commit": {"rpcs": 4, "calls": 8, "calls_per_rpc": 2.0},
        "prepare": {"rpcs": 10, "calls": 40, "calls_per_rpc": 4.0},
    }


def test_a_restart_or_a_failed_read_gives_no_window() -> None:
    before = {"prepare": {"rpcs": 500.0, "calls": 4000.0}}
    after_restart = {"prepare": {"rpcs": 20.0, "calls": 100.0}}
    assert batches.window(before, after_restart) is None
    assert batches.window(None, before) is None
    assert batches.window(before, None) is None


@pytest.fixture
def serving() -> Iterator[tuple[str, dict[str, bytes]]]:
    """A local HTTP server whose /metrics answers what the test puts in reply["body"]."""
    reply: dict[str, bytes] = {"body": b""}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (the http.server spelling)
            self.send_response(200)
            self.end_headers()
            self.wfile.write(reply["body"])

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}", reply
    finally:
        server.shutdown()
        server.server_close()


def test_a_real_scrape_and_bodies_that_are_not_metrics(
    serving: tuple[str, dict[str, bytes]],
) -> None:
    address, reply = serving
    reply["body"] = BODY.encode()
    assert batches.read_totals(address) == batches.parse_totals(BODY)
    reply["body"] = b"<html><body>not metrics {{{</body></html>\n"
    assert batches.read_totals(address) is None
    reply["body"] = b"x" * (batches.MAX_BODY_BYTES + 1)
    assert batches.read_totals(address) is None


def test_nothing_listening_is_no_totals() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert batches.read_totals(f"127.0.0.1:{port}") is None


def test_a_second_without_completed_calls_shows_as_zero() -> None:
    result = LoadResult(latencies_ms=[5.0, 7.0, 900.0], completed_s=[0.2, 0.9, 2.5])
    result.ok_by_second.update({0: 1, 2: 1})  # the call at 0.9 s failed
    assert by_second(result) == [
        {"second": 0, "count": 2, "ok": 1, "p50": 5.0, "p99": 7.0, "max": 7.0},
        {"second": 1, "count": 0, "ok": 0, "p50": 0.0, "p99": 0.0, "max": 0.0},
        {"second": 2, "count": 1, "ok": 1, "p50": 900.0, "p99": 900.0, "max": 900.0},
    ]
