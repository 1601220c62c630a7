"""The baseline's server: one trivial unary RPC over TLS on grpc.aio, in its own process.

    python -m paygate.bench.echo --ca certs/ca.pem --cert certs/gateway.pem \
        --key certs/gateway-key.pem

It listens on a free port of 127.0.0.1, prints `PORT <n>` on its first line, and answers
/paygate.bench.v1.EchoService/Echo with the request's bytes until SIGTERM, or until its
parent (the bench) is gone. It presents the gateway's certificate, so the bench's client
checks the same CA and the same name as when it pays through the gateway, and it has no
interceptors, no database and no logging: it is the single-hop limit the suite is
compared with. A process of its own keeps it off the bench's event loop and core.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import os
import pathlib
import signal
import sys
from collections.abc import Sequence

import grpc

from paygate.common.config import TlsFiles
from paygate.common.tls import server_credentials

SERVICE = "paygate.bench.v1.EchoService"
METHOD = f"/{SERVICE}/Echo"
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0
PARENT_POLL_S = 1.0
GRACE_S = 1.0


async def _echo(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
    return request


async def serve(files: TlsFiles) -> None:
    server = grpc.aio.server()
    server.add_generic_rpc_handlers(
        [
            grpc.method_handlers_generic_handler(
                SERVICE, {"Echo": grpc.unary_unary_rpc_method_handler(_echo)}
            )
        ]
    )
    port = server.add_secure_port(
        "127.0.0.1:0", server_credentials(files, require_client_cert=False)
    )
    await server.start()
    print(f"PORT {port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    parent = os.getppid()
    # An orphan would serve forever: stop once the bench that started this is gone.
    while not stop.is_set() and os.getppid() == parent:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), PARENT_POLL_S)
    await server.stop(GRACE_S)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m paygate.bench.echo", description=__doc__)
    parser.add_argument("--ca", type=pathlib.Path, required=True)
    parser.add_argument("--cert", type=pathlib.Path, required=True)
    parser.add_argument("--key", type=pathlib.Path, required=True)
    args = parser.parse_args(argv)
    asyncio.run(serve(TlsFiles(ca=args.ca, cert=args.cert, key=args.key)))
    return 0


@dataclasses.dataclass
class EchoProcess:
    """The echo server started by the bench: its process and the target to dial."""

    process: asyncio.subprocess.Process
    target: str

    @property
    def pid(self) -> int:
        return self.process.pid

    async def stop(self) -> None:
        if self.process.returncode is None:
            self.process.terminate()
            try:
                await asyncio.wait_for(self.process.wait(), STOP_TIMEOUT_S)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()


async def start_echo_server(files: TlsFiles) -> EchoProcess:
    """Start the echo server in a subprocess; returns once it listens."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "paygate.bench.echo",
        "--ca", str(files.ca), "--cert", str(files.cert), "--key", str(files.key),
        stdout=asyncio.subprocess.PIPE,
    )
    echo = EchoProcess(process, "")
    try:
        if process.stdout is None:
            raise RuntimeError("the echo server's output is not a pipe")
        line = await asyncio.wait_for(process.stdout.readline(), START_TIMEOUT_S)
        word, _, port = line.decode(errors="replace").strip().partition(" ")
        if word != "PORT" or not port.isdigit():
            raise RuntimeError(f"the echo server did not start (it said {line!r})")
    except BaseException:
        await echo.stop()
        raise
    echo.target = f"127.0.0.1:{port}"
    return echo


if __name__ == "__main__":
    sys.exit(main())
