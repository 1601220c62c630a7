"""PeerIdentityInterceptor: a bank answers only the identities allowed for each method.

The identity is the common name of the caller's client certificate, which the TLS layer
has already verified against the suite's CA (a connection without one never gets here).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import grpc

from paygate.common.call_info import current_call_info
from paygate.common.handlers import Context, Handler, UnaryBehavior, service_and_method, wrap_unary
from paygate.common.tls import peer_identity
from paygate.errors import PermissionDenied

GATEWAY = "gateway"
ADMIN = "admin"

# Methods of paygate.bank.v1.BankService and who may call them. Health and reflection are
# open to any certificate of the suite.
ALLOWED: Mapping[str, frozenset[str]] = {
    "GetAccount": frozenset({GATEWAY, ADMIN}),
    "OpenAccount": frozenset({ADMIN}),
    "LinkAccount": frozenset({GATEWAY}),
    "IssueLinkCode": frozenset({ADMIN}),
    "Deposit": frozenset({ADMIN}),
    "Prepare": frozenset({GATEWAY}),
    "Commit": frozenset({GATEWAY}),
    "Abort": frozenset({GATEWAY}),
    "PrepareBatch": frozenset({GATEWAY}),
    "CommitBatch": frozenset({GATEWAY}),
    "AbortBatch": frozenset({GATEWAY}),
    "ListHolds": frozenset({ADMIN}),
}


class PeerIdentityInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, service_name: str, allowed: Mapping[str, frozenset[str]] = ALLOWED) -> None:
        self._service_name = service_name
        self._allowed = allowed

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        handler = await continuation(handler_call_details)
        service, method = service_and_method(handler_call_details.method)
        if service != self._service_name:
            return handler
        allowed = self._allowed.get(method, frozenset())

        def wrapper(behavior: UnaryBehavior) -> UnaryBehavior:
            async def authorized(request: Any, context: Context) -> Any:
                identity = peer_identity(context)
                info = current_call_info()
                if info is not None:
                    info.peer_identity = identity
                if identity not in allowed:
                    raise PermissionDenied(f"{identity or 'this caller'} may not call {method}")
                return await behavior(request, context)

            return authorized

        return wrap_unary(handler, wrapper)
