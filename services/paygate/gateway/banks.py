"""BankClients: the gateway's mutual-TLS connections to the banks, one channel per bank.

It adapts paygate.bank.v1.BankService to the Participants interface of coordinator.py and
translates transport failures into the domain's errors in one place: a deadline that
passes is Unavailable(BANK_TIMEOUT), anything else that reaches no answer is
Unavailable(BANK_UNAVAILABLE).
"""

from __future__ import annotations

from collections.abc import Mapping

import grpc
from google.rpc import error_details_pb2, status_pb2

from paygate.common.config import TlsFiles
from paygate.common.tls import channel_credentials
from paygate.errors import (
    BANK_TIMEOUT,
    BANK_UNAVAILABLE,
    ERROR_BY_STATUS,
    NotFound,
    PaygateError,
    Unavailable,
)
from paygate.gateway.models import BankAccount, Leg, Vote
from paygate.gen.paygate.bank.v1 import bank_pb2, bank_pb2_grpc

_DIRECTIONS = {"debit": bank_pb2.DIRECTION_DEBIT, "credit": bank_pb2.DIRECTION_CREDIT}

# Reconnect quickly after a bank restarts: the default backoff grows to two minutes.
CHANNEL_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
    ("grpc.max_receive_message_length", 4 * 1024 * 1024),
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
]


class BankClients:
    def __init__(
        self,
        addresses: Mapping[str, str],
        tls: TlsFiles,
        interceptors: list[grpc.aio.ClientInterceptor] | None = None,
    ) -> None:
        credentials = channel_credentials(tls.ca, client=tls)
        self._channels = {
            bank_id: grpc.aio.secure_channel(
                address, credentials, options=CHANNEL_OPTIONS, interceptors=interceptors
            )
            for bank_id, address in addresses.items()
        }
        self._stubs = {
            bank_id: bank_pb2_grpc.BankServiceStub(channel)  # type: ignore[no-untyped-call]
            for bank_id, channel in self._channels.items()
        }

    @property
    def bank_ids(self) -> list[str]:
        return sorted(self._stubs)

    def knows(self, bank_id: str) -> bool:
        return bank_id in self._stubs

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close()

    async def get_account(
        self, bank_id: str, account_number: str, *, timeout_s: float
    ) -> BankAccount:
        request = bank_pb2.GetAccountRequest(account_number=account_number)
        try:
            response = await self._stubs[bank_id].GetAccount(
                request, timeout=timeout_s, wait_for_ready=True
            )
        except grpc.aio.AioRpcError as exc:
            raise self._translate(bank_id, exc) from exc
        account = response.account
        return BankAccount(
            account_number=account.account_number,
            currency=account.currency,
            balance_minor=account.balance,
            available_minor=account.available,
        )

    async def prepare(
        self, bank_id: str, transaction_id: str, legs: list[Leg], *, timeout_s: float
    ) -> Vote:
        request = bank_pb2.PrepareRequest(
            transaction_id=transaction_id,
            legs=[
                bank_pb2.Leg(
                    account_number=leg.account_number,
                    direction=_DIRECTIONS[leg.direction],
                    amount=leg.amount_minor,
                    currency=leg.currency,
                )
                for leg in legs
            ],
        )
        try:
            response = await self._stubs[bank_id].Prepare(
                request, timeout=timeout_s, wait_for_ready=True
            )
        except grpc.aio.AioRpcError as exc:
            raise self._translate(bank_id, exc) from exc
        return Vote(response.vote == bank_pb2.VOTE_YES, response.reason)

    async def commit(self, bank_id: str, transaction_id: str, *, timeout_s: float) -> None:
        request = bank_pb2.CommitRequest(transaction_id=transaction_id)
        try:
            await self._stubs[bank_id].Commit(request, timeout=timeout_s, wait_for_ready=True)
        except grpc.aio.AioRpcError as exc:
            raise self._translate(bank_id, exc) from exc

    async def abort(self, bank_id: str, transaction_id: str, *, timeout_s: float) -> None:
        request = bank_pb2.AbortRequest(transaction_id=transaction_id)
        try:
            await self._stubs[bank_id].Abort(request, timeout=timeout_s, wait_for_ready=True)
        except grpc.aio.AioRpcError as exc:
            raise self._translate(bank_id, exc) from exc

    def _translate(self, bank_id: str, exc: grpc.aio.AioRpcError) -> PaygateError:
        """The domain error for a failed bank call (the one place transport errors map).

        Calls wait for a connection within their deadline (wait_for_ready), so that a bank
        that has just restarted is not refused while the channel reconnects. A deadline that
        passes without a connection means the bank is down: BANK_UNAVAILABLE; one that
        passes on a connected channel means it is too slow: BANK_TIMEOUT.
        """
        if exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
            state = self._channels[bank_id].get_state()
            if state != grpc.ChannelConnectivity.READY:
                return Unavailable(f"{bank_id} is unavailable", reason=BANK_UNAVAILABLE)
        return _translate(bank_id, exc)


def _reason(exc: grpc.aio.AioRpcError) -> str:
    for key, value in exc.trailing_metadata() or ():
        if key == "grpc-status-details-bin" and isinstance(value, bytes):
            status = status_pb2.Status.FromString(value)
            for detail in status.details:
                info = error_details_pb2.ErrorInfo()
                if detail.Unpack(info):
                    return info.reason
    return ""


def _translate(bank_id: str, exc: grpc.aio.AioRpcError) -> PaygateError:
    code = exc.code()
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return Unavailable(f"{bank_id} did not answer in time", reason=BANK_TIMEOUT)
    if code == grpc.StatusCode.NOT_FOUND:
        return NotFound(
            exc.details() or f"not found at {bank_id}", reason=_reason(exc) or "NOT_FOUND"
        )
    cls = ERROR_BY_STATUS.get(code)
    if cls is None or code in (
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    ):
        return Unavailable(f"{bank_id} is unavailable", reason=BANK_UNAVAILABLE)
    return cls(f"{bank_id}: {exc.details()}", reason=_reason(exc) or None)
