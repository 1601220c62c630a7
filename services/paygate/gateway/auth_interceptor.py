"""AuthInterceptor: every gateway call but Register and Login needs a valid bearer token.

The authenticated Principal travels to the servicer in the PRINCIPAL context variable, and
the username into the call's log line. Health and reflection are open.
"""

from __future__ import annotations

import contextvars
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from paygate.common.call_info import current_call_info
from paygate.common.handlers import UnaryBehavior, service_and_method, wrap_unary
from paygate.errors import Unauthenticated
from paygate.gateway.accounts import Accounts
from paygate.gateway.models import Principal

PUBLIC_METHODS = frozenset({"Register", "Login"})
MAX_TOKEN_LENGTH = 512

PRINCIPAL: contextvars.ContextVar[Principal] = contextvars.ContextVar("paygate_principal")


def bearer_token(metadata: tuple[tuple[str, str | bytes], ...] | None) -> str:
    for key, value in metadata or ():
        if key == "authorization" and isinstance(value, str):
            scheme, _, token = value.partition(" ")
            if scheme.lower() == "bearer" and 0 < len(token) <= MAX_TOKEN_LENGTH:
                return token.strip()
            raise Unauthenticated("the authorization header must be 'Bearer <access_token>'")
    raise Unauthenticated("this call needs an access token: log in first")


class AuthInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, accounts: Accounts, service_name: str) -> None:
        self._accounts = accounts
        self._service_name = service_name

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        service, method = service_and_method(handler_call_details.method)
        if service != self._service_name or method in PUBLIC_METHODS:
            return handler

        def wrapper(behavior: UnaryBehavior) -> UnaryBehavior:
            async def authenticated(request: Any, context: grpc.aio.ServicerContext) -> Any:
                token = bearer_token(context.invocation_metadata())
                principal = await self._accounts.authenticate(token)
                info = current_call_info()
                if info is not None:
                    info.user = principal.user.username
                reset = PRINCIPAL.set(principal)
                try:
                    return await behavior(request, context)
                finally:
                    PRINCIPAL.reset(reset)

            return authenticated

        return wrap_unary(handler, wrapper)  # type: ignore[return-value]
