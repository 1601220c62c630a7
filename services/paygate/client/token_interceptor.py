"""TokenInterceptor: sends the client's access token as `authorization: Bearer <token>`."""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

AUTHORIZATION_KEY = "authorization"


@dataclasses.dataclass(kw_only=True)
class TokenHolder:
    """The access token of one client. Mutable on purpose: login and logout change it
    while the channel, and the interceptor built with it, stay the same."""

    access_token: str | None = None


class TokenInterceptor(grpc.aio.UnaryUnaryClientInterceptor):
    """Adds the bearer token to every call made while the holder has one."""

    def __init__(self, holder: TokenHolder) -> None:
        self._holder = holder

    async def intercept_unary_unary(
        self,
        continuation: Callable[
            [grpc.aio.ClientCallDetails, Any], Awaitable[grpc.aio.UnaryUnaryCall[Any, Any]]
        ],
        client_call_details: grpc.aio.ClientCallDetails,
        request: Any,
    ) -> grpc.aio.UnaryUnaryCall[Any, Any]:
        return await continuation(with_holders_token(self._holder, client_call_details), request)


class TokenStreamInterceptor(grpc.aio.UnaryStreamClientInterceptor):
    """TokenInterceptor's twin for server streams (WatchEvents): grpc.aio files each
    interceptor under one kind of call only."""

    def __init__(self, holder: TokenHolder) -> None:
        self._holder = holder

    async def intercept_unary_stream(
        self,
        continuation: Callable[
            [grpc.aio.ClientCallDetails, Any], Awaitable[grpc.aio.UnaryStreamCall[Any, Any]]
        ],
        client_call_details: grpc.aio.ClientCallDetails,
        request: Any,
    ) -> grpc.aio.UnaryStreamCall[Any, Any]:
        return await continuation(with_holders_token(self._holder, client_call_details), request)


def with_holders_token(
    holder: TokenHolder, details: grpc.aio.ClientCallDetails
) -> grpc.aio.ClientCallDetails:
    """The call's details with the holder's token, when it has one (both interceptors)."""
    token = holder.access_token
    return with_bearer_token(details, token) if token else details


def with_bearer_token(
    details: grpc.aio.ClientCallDetails, token: str
) -> grpc.aio.ClientCallDetails:
    metadata = grpc.aio.Metadata()
    for key, value in details.metadata or ():
        # A caller's own authorization header is replaced, never sent twice.
        if key != AUTHORIZATION_KEY:
            metadata.add(key, value)
    metadata.add(AUTHORIZATION_KEY, f"Bearer {token}")
    return grpc.aio.ClientCallDetails(
        method=details.method,
        timeout=details.timeout,
        metadata=metadata,
        credentials=details.credentials,
        wait_for_ready=details.wait_for_ready,
    )
