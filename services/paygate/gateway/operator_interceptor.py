"""OperatorInterceptor: AdminService answers only the operators' client certificate.

The operator is the common name of the caller's certificate, which the TLS layer has
verified against the suite's CA (the admin port requires one: a connection without it
never gets here). It travels to the servicer in the OPERATOR context variable, and into
the call's log line as its `peer_identity`. Any other caller of AdminService is refused
with PERMISSION_DENIED: a certificate of another identity (`gateway`, `bank-a`), and every
call on the public port, which asks for no certificate, whatever access token it carries.
Other services (health, reflection, GatewayService) pass through.
"""

from __future__ import annotations

import contextvars
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from paygate.common.call_info import current_call_info
from paygate.common.handlers import Context, Handler, UnaryBehavior, service_and_method, wrap_unary
from paygate.common.tls import peer_identity
from paygate.errors import PermissionDenied

# The identities that may call AdminService: the suite's operator certificate.
OPERATORS = frozenset({"admin"})

OPERATOR: contextvars.ContextVar[str] = contextvars.ContextVar("paygate_operator")


class OperatorInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, service_name: str, operators: frozenset[str] = OPERATORS) -> None:
        self._service_name = service_name
        self._operators = operators

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        handler = await continuation(handler_call_details)
        service, method = service_and_method(handler_call_details.method)
        if service != self._service_name:
            return handler

        def wrapper(behavior: UnaryBehavior) -> UnaryBehavior:
            async def authorized(request: Any, context: Context) -> Any:
                identity = peer_identity(context)
                info = current_call_info()
                if info is not None:
                    info.peer_identity = identity
                if identity is None or identity not in self._operators:
                    raise PermissionDenied(
                        f"{identity or 'this caller'} may not call {method}: AdminService"
                        " answers the operators' certificate, on the gateway's admin port"
                    )
                reset = OPERATOR.set(identity)
                try:
                    return await behavior(request, context)
                finally:
                    OPERATOR.reset(reset)

            return authorized

        return wrap_unary(handler, wrapper)
