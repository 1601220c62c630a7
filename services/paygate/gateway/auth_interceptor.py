"""AuthInterceptor: every gateway call but Register and Login needs a valid bearer token.

The authenticated Principal travels to the servicer in the PRINCIPAL context variable, and
the username into the call's log line. Health and reflection are open.

Refusals are counted in paygate_auth_failures_total{reason}: missing_token, malformed_header,
rejected_token (unknown, revoked or expired) and bad_credentials (a failed Login: a wrong
password or one-time code; not a right password that still needs its code).
"""

from __future__ import annotations

import contextvars
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import grpc
from prometheus_client import Counter

from paygate.common.call_info import current_call_info
from paygate.common.handlers import (
    Context,
    Handler,
    UnaryBehavior,
    service_and_method,
    wrap_stream,
    wrap_unary,
)
from paygate.common.metrics import auth_failures, new_registry
from paygate.errors import MFA_REQUIRED, Unauthenticated
from paygate.gateway.accounts import Accounts
from paygate.gateway.models import Principal

PUBLIC_METHODS = frozenset({"Register", "Login"})
LOGIN_METHOD = "Login"
MAX_TOKEN_LENGTH = 512

PRINCIPAL: contextvars.ContextVar[Principal] = contextvars.ContextVar("paygate_principal")


def bearer_token(metadata: Iterable[tuple[str, str | bytes]] | None) -> str:
    for key, value in metadata or ():
        if key == "authorization" and isinstance(value, str):
            scheme, _, token = value.partition(" ")
            if scheme.lower() == "bearer" and 0 < len(token) <= MAX_TOKEN_LENGTH:
                return token.strip()
            raise Unauthenticated("the authorization header must be 'Bearer <access_token>'")
    raise Unauthenticated("this call needs an access token: log in first")


class AuthInterceptor(grpc.aio.ServerInterceptor):
    def __init__(
        self, accounts: Accounts, service_name: str, failures: Counter | None = None
    ) -> None:
        self._accounts = accounts
        self._service_name = service_name
        self._failures = failures or auth_failures(new_registry())

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        handler = await continuation(handler_call_details)
        service, method = service_and_method(handler_call_details.method)
        if service == self._service_name and method == LOGIN_METHOD:
            return wrap_unary(handler, self._count_bad_logins)
        if service != self._service_name or method in PUBLIC_METHODS:
            return handler

        def wrapper(behavior: UnaryBehavior) -> UnaryBehavior:
            async def authenticated(request: Any, context: Context) -> Any:
                metadata = context.invocation_metadata()
                try:
                    token = bearer_token(metadata)
                except Unauthenticated:
                    present = any(key == "authorization" for key, _ in metadata or ())
                    self._failures.labels("malformed_header" if present else "missing_token").inc()
                    raise
                try:
                    principal = await self._accounts.authenticate(token)
                except Unauthenticated:
                    self._failures.labels("rejected_token").inc()
                    raise
                info = current_call_info()
                if info is not None:
                    info.user = principal.user.username
                reset = PRINCIPAL.set(principal)
                try:
                    return await behavior(request, context)
                finally:
                    PRINCIPAL.reset(reset)

            return authenticated

        if handler is not None and handler.unary_stream is not None:
            return wrap_stream(handler, self._authenticated_stream)
        return wrap_unary(handler, wrapper)

    async def _authenticated_stream(self, request: Any, context: Context) -> Any:
        """Before a server stream (WatchEvents) starts: who the caller is, for the whole
        stream (the token is checked once, when it opens)."""
        try:
            token = bearer_token(context.invocation_metadata())
            principal = await self._accounts.authenticate(token)
        except Unauthenticated:
            self._failures.labels("rejected_token").inc()
            raise
        PRINCIPAL.set(principal)  # in the stream's own task: it ends with the stream
        return request

    def _count_bad_logins(self, behavior: UnaryBehavior) -> UnaryBehavior:
        async def login(request: Any, context: Context) -> Any:
            try:
                return await behavior(request, context)
            except Unauthenticated as refused:
                if refused.reason != MFA_REQUIRED:  # the password was right
                    self._failures.labels("bad_credentials").inc()
                raise

        return login
