"""The one place where a failed gRPC call becomes a paygate.errors exception.

The class comes from paygate.errors.ERROR_BY_STATUS, the reason and metadata from the
google.rpc.ErrorInfo that the servers' ErrorInterceptor puts in the
`grpc-status-details-bin` trailing metadata, and the message from the status details.
Callers raise the result `from` the gRPC error so that the original stays visible.
Every client of a Paygate server uses it: the client library (paygate.client), the
operators' tool (paygate-admin, which calls the banks) and paygate-chaos, whose workload
records the reason of each failed call.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import grpc
from google.protobuf.message import DecodeError
from google.rpc import error_details_pb2, status_pb2

from paygate.errors import ERROR_BY_STATUS, PaygateError, Unavailable

STATUS_DETAILS_KEY = "grpc-status-details-bin"


def error_from_rpc(exc: grpc.RpcError) -> PaygateError:
    """The PaygateError that a failed call stands for; raise it `from exc`."""
    code = _code_of(exc)
    message = _details_of(exc) or (code.name if code is not None else "call failed")
    info = error_info_from_metadata(_trailing_metadata_of(exc))
    reason = str(info.reason) if info is not None else None
    extra = dict(info.metadata) if info is not None else None
    if code is None:
        return PaygateError(message, reason=reason or "UNKNOWN", metadata=extra)
    if code is grpc.StatusCode.DEADLINE_EXCEEDED:
        # The outcome of a call that ran out of time is unknown, exactly as when the
        # server is unreachable: both are retried with the same idempotency key.
        return Unavailable(message, reason=reason or code.name, metadata=extra)
    cls = ERROR_BY_STATUS.get(code)
    if cls is None:
        return PaygateError(message, reason=reason or code.name, metadata=extra)
    return cls(message, reason=reason, metadata=extra)


def reason_from_metadata(metadata: Iterable[tuple[str, Any]] | None) -> str | None:
    """The reason of the first google.rpc.ErrorInfo in the status details, if any."""
    info = error_info_from_metadata(metadata)
    return str(info.reason) if info is not None else None


def error_info_from_metadata(
    metadata: Iterable[tuple[str, Any]] | None,
) -> error_details_pb2.ErrorInfo | None:
    """The first google.rpc.ErrorInfo with a reason in the status details, if any."""
    for key, value in metadata or ():
        if key != STATUS_DETAILS_KEY or not isinstance(value, bytes):
            continue
        try:
            status = status_pb2.Status.FromString(value)
        except DecodeError:
            # A malformed detail must not hide the status code, which is still useful.
            return None
        for detail in status.details:
            info = error_details_pb2.ErrorInfo()
            if detail.Unpack(info) and info.reason:
                return info
    return None


# grpc.RpcError promises none of these methods; the errors raised by channels
# (grpc.aio.AioRpcError, the sync _InactiveRpcError) are also grpc.Call objects
# and have them all, so a bare RpcError is read defensively.


def _code_of(exc: grpc.RpcError) -> grpc.StatusCode | None:
    code = getattr(exc, "code", None)
    value = code() if callable(code) else None
    return value if isinstance(value, grpc.StatusCode) else None


def _details_of(exc: grpc.RpcError) -> str | None:
    details = getattr(exc, "details", None)
    value = details() if callable(details) else None
    return value if isinstance(value, str) else None


def _trailing_metadata_of(exc: grpc.RpcError) -> Iterable[tuple[str, Any]] | None:
    metadata = getattr(exc, "trailing_metadata", None)
    value = metadata() if callable(metadata) else None
    return value if isinstance(value, Iterable) else None


# The reasons error_from_rpc gives a status that carried no ErrorInfo: the channel's own.
CHANNEL_REASONS = ("UNAVAILABLE", "DEADLINE_EXCEEDED")


def from_channel(error: PaygateError) -> bool:
    """Whether the server gave no answer: the status is the client channel's own."""
    return isinstance(error, Unavailable) and error.reason in CHANNEL_REASONS
