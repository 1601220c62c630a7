"""The client maps gRPC statuses, with the ErrorInfo the servers send, back to paygate.errors.

The statuses are built by paygate.common.error_interceptor.rich_status, the function the
servers use, so that a change on either side that breaks the round trip fails here.
"""

from __future__ import annotations

import asyncio
import pathlib
from collections.abc import Iterator

import grpc
import pytest
from paygate.client import (
    AsyncClient,
    FailedPrecondition,
    NotFound,
    PaygateError,
    Unavailable,
)
from paygate.common.error_interceptor import abort_with_error, rich_status
from paygate.common.rpc_errors import STATUS_DETAILS_KEY, error_from_rpc
from paygate.errors import INSUFFICIENT_FUNDS, STATUS_BY_ERROR

METHOD = "/paygate.test.v1.ErrorService/Fail"


def rpc_error_for(error: PaygateError) -> grpc.aio.AioRpcError:
    """The exception a grpc.aio channel raises when a server aborts with `error`."""
    status = rich_status(error)
    return grpc.aio.AioRpcError(
        status.code,
        grpc.aio.Metadata(),
        grpc.aio.Metadata(*status.trailing_metadata),
        details=status.details,
    )


def bare_rpc_error(code: grpc.StatusCode, details: str = "details") -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details=details)


@pytest.mark.parametrize("cls", list(STATUS_BY_ERROR))
def test_every_error_class_round_trips_with_its_reason(cls: type[PaygateError]) -> None:
    mapped = error_from_rpc(rpc_error_for(cls("something went wrong", reason="SOME_REASON")))
    assert type(mapped) is cls
    assert mapped.reason == "SOME_REASON"
    assert mapped.message == "something went wrong"


def test_insufficient_funds_keeps_its_reason() -> None:
    error = FailedPrecondition("balance too low", reason=INSUFFICIENT_FUNDS)
    mapped = error_from_rpc(rpc_error_for(error))
    assert isinstance(mapped, FailedPrecondition)
    assert mapped.reason == INSUFFICIENT_FUNDS


def test_status_without_error_info_gets_the_class_default_reason() -> None:
    mapped = error_from_rpc(bare_rpc_error(grpc.StatusCode.NOT_FOUND, "no such payment"))
    assert type(mapped) is NotFound
    assert mapped.reason == "NOT_FOUND"
    assert mapped.message == "no such payment"


def test_unavailable_without_error_info() -> None:
    mapped = error_from_rpc(bare_rpc_error(grpc.StatusCode.UNAVAILABLE))
    assert type(mapped) is Unavailable
    assert mapped.reason == "UNAVAILABLE"


def test_deadline_exceeded_is_unavailable() -> None:
    mapped = error_from_rpc(bare_rpc_error(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded"))
    assert type(mapped) is Unavailable
    assert mapped.reason == "DEADLINE_EXCEEDED"


@pytest.mark.parametrize(
    "code", [grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL, grpc.StatusCode.UNIMPLEMENTED]
)
def test_unmapped_codes_are_plain_paygate_errors(code: grpc.StatusCode) -> None:
    mapped = error_from_rpc(bare_rpc_error(code, "internal error"))
    assert type(mapped) is PaygateError
    assert mapped.reason == code.name
    assert mapped.message == "internal error"


def test_malformed_status_details_still_map_by_code() -> None:
    rpc_error = grpc.aio.AioRpcError(
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.aio.Metadata(),
        grpc.aio.Metadata((STATUS_DETAILS_KEY, b"\xff not a status")),
        details="nope",
    )
    mapped = error_from_rpc(rpc_error)
    assert type(mapped) is FailedPrecondition
    assert mapped.reason == "FAILED_PRECONDITION"


def test_missing_details_fall_back_to_the_code_name() -> None:
    rpc_error = grpc.aio.AioRpcError(
        grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(), grpc.aio.Metadata()
    )
    assert error_from_rpc(rpc_error).message == "UNAVAILABLE"


# Over a real connection: the trailing metadata arrives as the transport delivers it.


async def _fail(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
    await abort_with_error(
        context, FailedPrecondition("balance too low", reason=INSUFFICIENT_FUNDS)
    )
    raise AssertionError("abort returned")


@pytest.fixture
def failing_server() -> Iterator[tuple[asyncio.Runner, str]]:
    """An in-process server on port 0 whose one method aborts like a Paygate server."""
    with asyncio.Runner() as runner:

        async def start() -> tuple[grpc.aio.Server, int]:
            server = grpc.aio.server()
            handler = grpc.unary_unary_rpc_method_handler(_fail)
            service, method = METHOD.rsplit("/", 1)
            server.add_generic_rpc_handlers(
                [grpc.method_handlers_generic_handler(service.lstrip("/"), {method: handler})]
            )
            port = server.add_insecure_port("127.0.0.1:0")
            await server.start()
            return server, port

        server, port = runner.run(start())
        try:
            yield runner, f"127.0.0.1:{port}"
        finally:
            runner.run(server.stop(grace=None))


def test_aio_call_maps_to_failed_precondition(failing_server: tuple[asyncio.Runner, str]) -> None:
    runner, target = failing_server

    async def call() -> grpc.aio.AioRpcError:
        async with grpc.aio.insecure_channel(target) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await channel.unary_unary(METHOD)(b"", timeout=5)
            return caught.value

    mapped = error_from_rpc(runner.run(call()))
    assert type(mapped) is FailedPrecondition
    assert (mapped.reason, mapped.message) == (INSUFFICIENT_FUNDS, "balance too low")


def test_sync_call_maps_to_failed_precondition(failing_server: tuple[asyncio.Runner, str]) -> None:
    runner, target = failing_server

    def call() -> grpc.RpcError:
        with grpc.insecure_channel(target) as channel:
            with pytest.raises(grpc.RpcError) as caught:
                channel.unary_unary(METHOD)(b"", timeout=5)
            return caught.value

    # The blocking call runs in a thread so that the server's event loop keeps running.
    mapped = error_from_rpc(runner.run(asyncio.to_thread(call)))
    assert type(mapped) is FailedPrecondition
    assert mapped.reason == INSUFFICIENT_FUNDS


def test_client_keeps_the_grpc_error_as_cause(tmp_path: pathlib.Path) -> None:
    # Never used for a handshake: nothing listens on port 1, so the call fails to connect.
    ca_cert = tmp_path / "ca.pem"
    ca_cert.write_bytes(b"")

    async def scenario() -> PaygateError:
        async with AsyncClient("127.0.0.1:1", ca_cert=ca_cert, timeout_s=5) as client:
            with pytest.raises(PaygateError) as caught:
                await client.balance()
            return caught.value

    error = asyncio.run(scenario())
    assert type(error) is Unavailable
    assert isinstance(error.__cause__, grpc.aio.AioRpcError)
