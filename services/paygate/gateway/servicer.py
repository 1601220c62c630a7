"""GatewayServicer: translates GatewayService messages to domain calls and back, nothing else."""

from __future__ import annotations

from collections.abc import AsyncIterator

from paygate.common.handlers import Context
from paygate.gateway.accounts import Accounts
from paygate.gateway.auth_interceptor import PRINCIPAL
from paygate.gateway.authorizations import Authorizations
from paygate.gateway.bulk_payments import BulkPayments, check_count
from paygate.gateway.events import Events
from paygate.gateway.messages import (
    batch_result_message,
    bounded,
    event_message,
    mark_replayed,
    payment_message,
    payment_request,
    refund_message,
    request_or_error,
    timestamp,
)
from paygate.gateway.payments import Payments
from paygate.gateway.refunds import Refunds
from paygate.gen.paygate.v1 import gateway_pb2, gateway_pb2_grpc

SERVICE_NAME = gateway_pb2.DESCRIPTOR.services_by_name["GatewayService"].full_name


class GatewayServicer(gateway_pb2_grpc.GatewayServiceServicer):
    def __init__(
        self,
        accounts: Accounts,
        payments: Payments,
        authorizations: Authorizations,
        refunds: Refunds,
        events: Events,
        bulk: BulkPayments,
    ) -> None:
        self._bulk = bulk
        self._events = events
        self._accounts = accounts
        self._payments = payments
        self._authorizations = authorizations
        self._refunds = refunds

    async def Register(
        self, request: gateway_pb2.RegisterRequest, context: Context
    ) -> gateway_pb2.RegisterResponse:
        user = await self._accounts.register(
            bounded(request.username, "username"),
            bounded(request.password, "password"),
            bounded(request.bank_id, "bank_id"),
            bounded(request.account_number, "account_number"),
            bounded(request.link_code, "link_code"),
            context.peer(),
        )
        return gateway_pb2.RegisterResponse(
            user_id=user.user_id, bank_id=user.bank_id, account_number=user.account_number
        )

    async def Login(
        self, request: gateway_pb2.LoginRequest, context: Context
    ) -> gateway_pb2.LoginResponse:
        token, expire_at_s = await self._accounts.login(
            request.username, request.password, context.peer(), request.one_time_code
        )
        return gateway_pb2.LoginResponse(access_token=token, expire_time=timestamp(expire_at_s))

    async def Logout(
        self, request: gateway_pb2.LogoutRequest, context: Context
    ) -> gateway_pb2.LogoutResponse:
        await self._accounts.logout(PRINCIPAL.get(), all_sessions=request.all_sessions)
        return gateway_pb2.LogoutResponse()

    async def GetBalance(
        self, request: gateway_pb2.GetBalanceRequest, context: Context
    ) -> gateway_pb2.GetBalanceResponse:
        account = await self._accounts.balance(PRINCIPAL.get().user)
        return gateway_pb2.GetBalanceResponse(
            currency=account.currency,
            balance=account.balance_minor,
            available=account.available_minor,
        )

    async def CreatePayment(
        self, request: gateway_pb2.CreatePaymentRequest, context: Context
    ) -> gateway_pb2.CreatePaymentResponse:
        replayed: list[bool] = []
        try:
            payment = await self._payments.create(
                PRINCIPAL.get().user,
                payment_request(request),
                on_replay=lambda: replayed.append(True),
            )
        finally:
            await mark_replayed(context, replayed)
        return gateway_pb2.CreatePaymentResponse(payment=payment_message(payment))

    async def BatchCreatePayments(
        self, request: gateway_pb2.BatchCreatePaymentsRequest, context: Context
    ) -> gateway_pb2.BatchCreatePaymentsResponse:
        check_count(len(request.requests))  # before translating what could be millions
        results = await self._bulk.create_many(
            PRINCIPAL.get().user, [request_or_error(item) for item in request.requests]
        )
        return gateway_pb2.BatchCreatePaymentsResponse(
            results=[batch_result_message(result) for result in results]
        )

    async def CapturePayment(
        self, request: gateway_pb2.CapturePaymentRequest, context: Context
    ) -> gateway_pb2.CapturePaymentResponse:
        replayed: list[bool] = []
        try:
            payment = await self._authorizations.capture(
                PRINCIPAL.get().user,
                request.payment_id,
                request.amount,
                request.idempotency_key,
                on_replay=lambda: replayed.append(True),
            )
        finally:
            await mark_replayed(context, replayed)
        return gateway_pb2.CapturePaymentResponse(payment=payment_message(payment))

    async def CancelPayment(
        self, request: gateway_pb2.CancelPaymentRequest, context: Context
    ) -> gateway_pb2.CancelPaymentResponse:
        replayed: list[bool] = []
        try:
            payment = await self._authorizations.cancel(
                PRINCIPAL.get().user,
                request.payment_id,
                request.idempotency_key,
                on_replay=lambda: replayed.append(True),
            )
        finally:
            await mark_replayed(context, replayed)
        return gateway_pb2.CancelPaymentResponse(payment=payment_message(payment))

    async def RefundPayment(
        self, request: gateway_pb2.RefundPaymentRequest, context: Context
    ) -> gateway_pb2.RefundPaymentResponse:
        replayed: list[bool] = []
        try:
            refund = await self._refunds.refund(
                PRINCIPAL.get().user,
                bounded(request.payment_id, "payment_id"),
                request.amount,
                bounded(request.reason, "reason"),
                request.idempotency_key,
                on_replay=lambda: replayed.append(True),
            )
        finally:
            await mark_replayed(context, replayed)
        return gateway_pb2.RefundPaymentResponse(refund=refund_message(refund))

    async def ListRefunds(
        self, request: gateway_pb2.ListRefundsRequest, context: Context
    ) -> gateway_pb2.ListRefundsResponse:
        refunds, next_token = await self._refunds.list(
            PRINCIPAL.get().user,
            bounded(request.payment_id, "payment_id"),
            request.page_size,
            request.page_token,
        )
        return gateway_pb2.ListRefundsResponse(
            refunds=[refund_message(refund) for refund in refunds], next_page_token=next_token
        )

    async def ListEvents(
        self, request: gateway_pb2.ListEventsRequest, context: Context
    ) -> gateway_pb2.ListEventsResponse:
        events, next_after, more = await self._events.list(
            PRINCIPAL.get().user,
            request.starting_after,
            request.page_size,
            [bounded(kind, "types") for kind in request.types],
        )
        return gateway_pb2.ListEventsResponse(
            events=[event_message(event) for event in events],
            next_starting_after=next_after,
            has_more=more,
        )

    async def WatchEvents(
        self, request: gateway_pb2.WatchEventsRequest, context: Context
    ) -> AsyncIterator[gateway_pb2.WatchEventsResponse]:
        async for event in self._events.watch(PRINCIPAL.get().user, request.starting_after):
            yield gateway_pb2.WatchEventsResponse(event=event_message(event))

    async def GetPayment(
        self, request: gateway_pb2.GetPaymentRequest, context: Context
    ) -> gateway_pb2.GetPaymentResponse:
        payment = await self._payments.get(PRINCIPAL.get().user, request.payment_id)
        return gateway_pb2.GetPaymentResponse(payment=payment_message(payment))

    async def ListPayments(
        self, request: gateway_pb2.ListPaymentsRequest, context: Context
    ) -> gateway_pb2.ListPaymentsResponse:
        payments, next_token = await self._payments.list(
            PRINCIPAL.get().user,
            request.page_size,
            request.page_token,
            size_of=lambda payment: payment_message(payment).ByteSize(),
        )
        return gateway_pb2.ListPaymentsResponse(
            payments=[payment_message(p) for p in payments], next_page_token=next_token
        )

    async def ChangePassword(
        self, request: gateway_pb2.ChangePasswordRequest, context: Context
    ) -> gateway_pb2.ChangePasswordResponse:
        ended = await self._accounts.change_password(
            PRINCIPAL.get(),
            bounded(request.current_password, "current_password"),
            bounded(request.new_password, "new_password"),
            context.peer(),
        )
        return gateway_pb2.ChangePasswordResponse(sessions_ended=ended)

    async def ListSessions(
        self, request: gateway_pb2.ListSessionsRequest, context: Context
    ) -> gateway_pb2.ListSessionsResponse:
        principal = PRINCIPAL.get()
        sessions = await self._accounts.list_sessions(principal)
        return gateway_pb2.ListSessionsResponse(
            sessions=[
                gateway_pb2.Session(
                    session_id=s.session_id,
                    create_time=timestamp(s.created_at_s),
                    last_use_time=timestamp(s.last_used_at_s),
                    expire_time=timestamp(s.expire_at_s),
                    client_address=s.client_address,
                    current=s.token_hash == principal.token_hash,
                )
                for s in sessions
            ]
        )

    async def RevokeSession(
        self, request: gateway_pb2.RevokeSessionRequest, context: Context
    ) -> gateway_pb2.RevokeSessionResponse:
        await self._accounts.revoke_session(
            PRINCIPAL.get(), bounded(request.session_id, "session_id")
        )
        return gateway_pb2.RevokeSessionResponse()

    async def EnrollTotp(
        self, request: gateway_pb2.EnrollTotpRequest, context: Context
    ) -> gateway_pb2.EnrollTotpResponse:
        secret, uri = await self._accounts.two_factor.enroll(
            PRINCIPAL.get().user, bounded(request.password, "password"), context.peer()
        )
        return gateway_pb2.EnrollTotpResponse(secret=secret, otpauth_uri=uri)

    async def ConfirmTotp(
        self, request: gateway_pb2.ConfirmTotpRequest, context: Context
    ) -> gateway_pb2.ConfirmTotpResponse:
        codes = await self._accounts.two_factor.confirm(PRINCIPAL.get().user, request.code)
        return gateway_pb2.ConfirmTotpResponse(recovery_codes=codes)

    async def DisableTotp(
        self, request: gateway_pb2.DisableTotpRequest, context: Context
    ) -> gateway_pb2.DisableTotpResponse:
        await self._accounts.two_factor.disable(
            PRINCIPAL.get().user,
            bounded(request.password, "password"),
            request.one_time_code,
            context.peer(),
        )
        return gateway_pb2.DisableTotpResponse()

    async def RegenerateRecoveryCodes(
        self, request: gateway_pb2.RegenerateRecoveryCodesRequest, context: Context
    ) -> gateway_pb2.RegenerateRecoveryCodesResponse:
        codes = await self._accounts.two_factor.regenerate_recovery_codes(
            PRINCIPAL.get().user, request.one_time_code
        )
        return gateway_pb2.RegenerateRecoveryCodesResponse(recovery_codes=codes)
