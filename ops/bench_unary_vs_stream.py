"""CPU per exchange: a unary call against a message on a bidirectional stream.

    .venv/bin/python ops/bench_unary_vs_stream.py [--rates 300,1000] [--count 4000]

The question behind it (docs/performance.md, "What was tried"): would the gateway's calls to
a bank cost much less as messages on one long-lived stream than as unary calls? Both sides
are grpc.aio over TLS with the repository's certificates (`make setup` makes them), in two
processes, with no interceptors, no database and a 120-byte payload: only gRPC's own cost.
The client sends at a fixed rate (an exchange is one request and its answer), so the numbers
are those of a moderate load, where batches do not form. It prints, for each rate and each
kind, the client's and the server's CPU milliseconds per exchange, from /proc/PID/stat over
the measured exchanges (after 200 to warm up).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import pathlib
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import grpc
from paygate.common.config import TlsFiles
from paygate.common.tls import channel_credentials, server_credentials

CERTS = pathlib.Path(__file__).resolve().parent.parent / "certs"
FILES = TlsFiles(ca=CERTS / "ca.pem", cert=CERTS / "gateway.pem", key=CERTS / "gateway-key.pem")
SERVICE = "paygate.bench.v1.ExchangeService"
PAYLOAD = b"x" * 120
WARMUP = 200
DEADLINE_S = 10.0


async def _unary(request: bytes, context: object) -> bytes:
    return request


async def _stream(requests: AsyncIterator[bytes], context: object) -> AsyncIterator[bytes]:
    async for request in requests:
        yield request


async def serve() -> None:
    server = grpc.aio.server()
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(SERVICE, {
        "Unary": grpc.unary_unary_rpc_method_handler(_unary),
        "Stream": grpc.stream_stream_rpc_method_handler(_stream),
    })])
    credentials = server_credentials(FILES, require_client_cert=False)
    port = server.add_secure_port("127.0.0.1:0", credentials)
    await server.start()
    print(port, flush=True)
    await server.wait_for_termination()


def cpu_s(pid: int) -> float:
    fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


Exchange = Callable[[], Awaitable[object]]


def exchanger(channel: grpc.aio.Channel, kind: str) -> tuple[Exchange, list[asyncio.Task[None]]]:
    """One exchange of `kind` (a unary call, or a message and its answer on one stream),
    and the tasks that serve the stream, to cancel at the end."""
    if kind == "unary":
        call = channel.unary_unary(f"/{SERVICE}/Unary")
        return lambda: call(PAYLOAD, timeout=DEADLINE_S), []
    stream = channel.stream_stream(f"/{SERVICE}/Stream")(timeout=3600)
    waiting: list[asyncio.Future[None]] = []
    outbox: asyncio.Queue[bytes] = asyncio.Queue()

    async def read() -> None:
        async for _ in stream:
            waiting.pop(0).set_result(None)

    async def write() -> None:  # gRPC allows one write in flight per stream
        while True:
            await stream.write(await outbox.get())

    async def one() -> None:
        answered = asyncio.get_running_loop().create_future()
        waiting.append(answered)
        outbox.put_nowait(PAYLOAD)
        await asyncio.wait_for(answered, DEADLINE_S)

    return one, [asyncio.ensure_future(read()), asyncio.ensure_future(write())]


async def measure(port: int, server_pid: int, kind: str, rate: int, count: int) -> str:
    async with grpc.aio.secure_channel(f"127.0.0.1:{port}", channel_credentials(FILES.ca)) as ch:
        one, background = exchanger(ch, kind)
        for _ in range(WARMUP):
            await one()
        client0, server0, start = cpu_s(os.getpid()), cpu_s(server_pid), time.perf_counter()
        tasks = []
        for i in range(count):
            tasks.append(asyncio.ensure_future(one()))
            await asyncio.sleep(max(0.0, start + (i + 1) / rate - time.perf_counter()))
        await asyncio.gather(*tasks)
        elapsed_s = time.perf_counter() - start
        client_ms = 1000 * (cpu_s(os.getpid()) - client0) / count
        server_ms = 1000 * (cpu_s(server_pid) - server0) / count
        for task in background:
            task.cancel()
    return (f"{kind:6s} at {rate:5d}/s ({count / elapsed_s:5.0f}/s reached): client "
            f"{client_ms:.3f} ms, server {server_ms:.3f} ms, both {client_ms + server_ms:.3f} ms")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rates", default="300,1000")
    parser.add_argument("--count", type=int, default=4000)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        asyncio.run(serve())
        return 0
    server = subprocess.Popen([sys.executable, __file__, "--serve"], stdout=subprocess.PIPE)
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline())
        for rate in (int(r) for r in args.rates.split(",")):
            for kind in ("unary", "stream", "unary", "stream"):
                print(asyncio.run(measure(port, server.pid, kind, rate, args.count)), flush=True)
    finally:
        server.terminate()
        server.wait(10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
