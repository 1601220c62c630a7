"""Helpers for server interceptors that wrap the behaviour of unary-unary handlers."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import grpc

UnaryBehavior = Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]


def wrap_unary(
    handler: grpc.RpcMethodHandler | None,
    wrapper: Callable[[UnaryBehavior], UnaryBehavior],
) -> grpc.RpcMethodHandler | None:
    """Return `handler` with its unary-unary behaviour wrapped; other kinds pass through."""
    if handler is None or handler.unary_unary is None:
        return handler
    return handler._replace(unary_unary=wrapper(handler.unary_unary))  # type: ignore[attr-defined,no-any-return]


def service_and_method(full_method: str) -> tuple[str, str]:
    """Split "/paygate.v1.GatewayService/Login" into ("paygate.v1.GatewayService", "Login")."""
    _, service, method = full_method.split("/", 2)
    return service, method
