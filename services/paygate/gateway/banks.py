"""BankClients: the gateway's mutual-TLS connections to the banks, one channel per bank.

It adapts paygate.bank.v1.BankService to the Participants interface of two_phase.py and
translates transport failures into the domain's errors in one place: a deadline that
passes is Unavailable(BANK_TIMEOUT), anything else that reaches no answer is
Unavailable(BANK_UNAVAILABLE).

Prepare, Commit and Abort go through a Batcher per bank and operation (batching.py): the
calls waiting for a bank at the same moment travel as one PrepareBatch, CommitBatch or
AbortBatch RPC. To the coordinator each is still one call with its own answer.

Each call is measured here (grpc_client_* metrics, as ClientMetricsInterceptor would), and
carries the caller's trace context itself when the channel has no OpenTelemetry
interceptors (tracing.py): a channel with any interceptor runs every call through a task
of its own, a tenth of a bare call's cost.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Mapping, Sequence
from typing import Any

import grpc
from prometheus_client import Histogram

from paygate.common import tracing
from paygate.common.client_metrics_interceptor import measured
from paygate.common.config import DEFAULT_BATCH_MAX_IN_FLIGHT, DEFAULT_BATCH_MAX_SIZE, TlsFiles
from paygate.common.metrics import GrpcMetrics
from paygate.common.rpc_errors import reason_from_metadata
from paygate.common.tls import channel_credentials, expect_server_identity
from paygate.errors import (
    ACCOUNT_NOT_FOUND,
    BANK_TIMEOUT,
    BANK_UNAVAILABLE,
    ERROR_BY_STATUS,
    NotFound,
    PaygateError,
    Unavailable,
)
from paygate.gateway.batching import Batcher, SendBatch
from paygate.gateway.models import BankAccount, Leg, Vote
from paygate.gen.paygate.bank.v1 import bank_pb2, bank_pb2_grpc

SERVICE = bank_pb2.DESCRIPTOR.services_by_name["BankService"].full_name
_STATUS_BY_NUMBER = {code.value[0]: code for code in grpc.StatusCode}

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


@dataclasses.dataclass(frozen=True, kw_only=True)
class BatchSettings:
    max_size: int = DEFAULT_BATCH_MAX_SIZE
    max_in_flight: int = DEFAULT_BATCH_MAX_IN_FLIGHT
    # How long a Prepare, or a Commit, waits for others to the same bank to leave with it
    # (batching.py); 0: not at all.
    prepare_linger_s: float = 0.0
    commit_linger_s: float = 0.0
    # Observes each batch's size, labelled by bank and operation.
    size_histogram: Histogram | None = None


@dataclasses.dataclass(frozen=True)
class _BankBatchers:
    prepare: Batcher[bank_pb2.PrepareRequest, Vote]
    commit: Batcher[bank_pb2.CommitRequest, None]
    abort: Batcher[bank_pb2.AbortRequest, None]


class BankClients:
    def __init__(
        self,
        addresses: Mapping[str, str],
        tls: TlsFiles,
        interceptors: list[grpc.aio.ClientInterceptor] | None = None,
        batching: BatchSettings | None = None,
        metrics: GrpcMetrics | None = None,
    ) -> None:
        """`interceptors`: the channels' (OpenTelemetry's, while an SDK is installed); without
        any, each call passes on the trace context itself. `metrics`: the client's."""
        self._metrics = metrics
        self._trace_context = not interceptors
        credentials = channel_credentials(tls.ca, client=tls)
        self._channels = {
            bank_id: grpc.aio.secure_channel(
                address,
                credentials,
                options=[*CHANNEL_OPTIONS, expect_server_identity(bank_id)],
                interceptors=interceptors,
            )
            for bank_id, address in addresses.items()
        }
        self._stubs = {
            bank_id: bank_pb2_grpc.BankServiceStub(channel)  # type: ignore[no-untyped-call]
            for bank_id, channel in self._channels.items()
        }
        settings = batching or BatchSettings()
        self._batchers = {bank_id: self._batchers_for(bank_id, settings) for bank_id in self._stubs}

    @property
    def bank_ids(self) -> list[str]:
        return sorted(self._stubs)

    def knows(self, bank_id: str) -> bool:
        return bank_id in self._stubs

    def _stub(self, bank_id: str) -> Any:
        self._check_configured(bank_id)
        return self._stubs[bank_id]

    def _batchers_of(self, bank_id: str) -> _BankBatchers:
        self._check_configured(bank_id)
        return self._batchers[bank_id]

    def _check_configured(self, bank_id: str) -> None:
        """A bank this gateway has no address for (its config lost it, while users and
        payments of it remain) fails as a bank that is down: nothing moves, and a retry or
        recovery's next re-send works once the address is back."""
        if not self.knows(bank_id):
            raise Unavailable(
                f"bank {bank_id!r} is not configured at this gateway", reason=BANK_UNAVAILABLE
            )

    async def close(self) -> None:
        for batchers in self._batchers.values():
            for batcher in (batchers.prepare, batchers.commit, batchers.abort):
                await batcher.close()
        for channel in self._channels.values():
            await channel.close()

    async def get_account(
        self, bank_id: str, account_number: str, *, timeout_s: float
    ) -> BankAccount:
        request = bank_pb2.GetAccountRequest(account_number=account_number)
        try:
            response = await self._call(bank_id, "GetAccount", request, timeout_s)
        except grpc.aio.AioRpcError as exc:
            error = self._translate(bank_id, exc)
            if error.reason == ACCOUNT_NOT_FOUND:  # the bank says "at this bank": which one
                error = NotFound(f"no account {account_number} at {bank_id}", reason=error.reason)
            raise error from exc
        return _bank_account(response.account)

    async def link_account(
        self, bank_id: str, account_number: str, link_code: str, *, timeout_s: float
    ) -> BankAccount:
        """The account, once its bank confirms that `link_code` is its code."""
        request = bank_pb2.LinkAccountRequest(account_number=account_number, link_code=link_code)
        try:
            response = await self._call(bank_id, "LinkAccount", request, timeout_s)
        except grpc.aio.AioRpcError as exc:
            error = self._translate(bank_id, exc)
            if error.reason == ACCOUNT_NOT_FOUND:  # no such account, or not that code
                error = NotFound(
                    f"no account {account_number} with this link code at {bank_id}",
                    reason=error.reason,
                )
            raise error from exc
        return _bank_account(response.account)

    async def prepare(
        self,
        bank_id: str,
        transaction_id: str,
        legs: list[Leg],
        *,
        timeout_s: float,
        one_phase: bool = False,
        spans_banks: bool = False,
    ) -> Vote:
        request = bank_pb2.PrepareRequest(
            transaction_id=transaction_id,
            one_phase=one_phase,
            spans_banks=spans_banks,
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
        return await self._batchers_of(bank_id).prepare.call(request, timeout_s=timeout_s)

    async def commit(
        self, bank_id: str, transaction_id: str, *, timeout_s: float, amount_minor: int = 0
    ) -> None:
        request = bank_pb2.CommitRequest(transaction_id=transaction_id, amount=amount_minor)
        await self._batchers_of(bank_id).commit.call(request, timeout_s=timeout_s)

    async def abort(self, bank_id: str, transaction_id: str, *, timeout_s: float) -> None:
        request = bank_pb2.AbortRequest(transaction_id=transaction_id)
        await self._batchers_of(bank_id).abort.call(request, timeout_s=timeout_s)

    def _call(self, bank_id: str, method: str, request: Any, timeout_s: float) -> Awaitable[Any]:
        """One RPC to a bank: waiting for a connection within its deadline, with the trace
        context and measured."""
        metadata = tracing.outgoing_metadata() if self._trace_context else None
        call = getattr(self._stub(bank_id), method)(
            request, timeout=timeout_s, wait_for_ready=True, metadata=metadata
        )
        if self._metrics is None:
            return call  # type: ignore[no-any-return]
        return measured(self._metrics.of_method(SERVICE, method), call)

    def _batchers_for(self, bank_id: str, settings: BatchSettings) -> _BankBatchers:
        async def prepare(
            items: list[bank_pb2.PrepareRequest], timeout_s: float
        ) -> list[Vote | PaygateError]:
            request = bank_pb2.PrepareBatchRequest(transactions=items)
            response = await self._call(bank_id, "PrepareBatch", request, timeout_s)
            return [
                _batch_error(bank_id, r.error)
                if r.HasField("error")
                else Vote(
                    r.response.vote == bank_pb2.VOTE_YES,
                    r.response.reason,
                    r.response.committed,
                )
                for r in response.results
            ]

        async def commit(
            items: list[bank_pb2.CommitRequest], timeout_s: float
        ) -> list[None | PaygateError]:
            request = bank_pb2.CommitBatchRequest(transactions=items)
            response = await self._call(bank_id, "CommitBatch", request, timeout_s)
            return _resolve_outcomes(bank_id, response.results)

        async def abort(
            items: list[bank_pb2.AbortRequest], timeout_s: float
        ) -> list[None | PaygateError]:
            request = bank_pb2.AbortBatchRequest(transactions=items)
            response = await self._call(bank_id, "AbortBatch", request, timeout_s)
            return _resolve_outcomes(bank_id, response.results)

        def fail(exc: BaseException) -> PaygateError:
            if isinstance(exc, grpc.aio.AioRpcError):
                return self._translate(bank_id, exc)
            return Unavailable(f"{bank_id} is unavailable", reason=BANK_UNAVAILABLE)

        def expired() -> PaygateError:
            return self._deadline_error(bank_id)

        def batcher(
            operation: str, send: SendBatch[Any, Any], linger_s: float = 0.0
        ) -> Batcher[Any, Any]:
            observe = None
            if settings.size_histogram is not None:
                observe = settings.size_histogram.labels(bank_id, operation).observe
            return Batcher(
                f"{bank_id}.{operation}",
                send,
                fail=fail,
                expired=expired,
                max_size=settings.max_size,
                max_in_flight=settings.max_in_flight,
                observe_size=observe,
                span_name="bank.batch",
                linger_s=linger_s,
            )

        return _BankBatchers(
            prepare=batcher("prepare", prepare, settings.prepare_linger_s),
            commit=batcher("commit", commit, settings.commit_linger_s),
            abort=batcher("abort", abort),
        )

    def _deadline_error(self, bank_id: str) -> PaygateError:
        """A call's deadline passed: the bank is down (no connection) or too slow."""
        if self._channels[bank_id].get_state() != grpc.ChannelConnectivity.READY:
            return Unavailable(f"{bank_id} is unavailable", reason=BANK_UNAVAILABLE)
        return Unavailable(f"{bank_id} did not answer in time", reason=BANK_TIMEOUT)

    def _translate(self, bank_id: str, exc: grpc.aio.AioRpcError) -> PaygateError:
        """The domain error for a failed bank call (the one place transport errors map).

        Calls wait for a connection within their deadline (wait_for_ready), so that a bank
        that has just restarted is not refused while the channel reconnects. A deadline that
        passes without a connection means the bank is down: BANK_UNAVAILABLE; one that
        passes on a connected channel means it is too slow: BANK_TIMEOUT.
        """
        if exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
            return self._deadline_error(bank_id)
        reason = reason_from_metadata(exc.trailing_metadata()) or ""
        return _error(bank_id, exc.code(), exc.details() or "", reason)


def _bank_account(account: bank_pb2.Account) -> BankAccount:
    return BankAccount(
        account_number=account.account_number,
        currency=account.currency,
        balance_minor=account.balance,
        available_minor=account.available,
    )


def _error(bank_id: str, code: grpc.StatusCode, message: str, reason: str) -> PaygateError:
    """The domain error for a bank's answer (a failed call, or one result of a batch)."""
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return Unavailable(f"{bank_id} did not answer in time", reason=BANK_TIMEOUT)
    if code == grpc.StatusCode.NOT_FOUND:
        return NotFound(message or f"not found at {bank_id}", reason=reason or "NOT_FOUND")
    cls = ERROR_BY_STATUS.get(code)
    if cls is None or code in (
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    ):
        return Unavailable(f"{bank_id} is unavailable", reason=BANK_UNAVAILABLE)
    return cls(f"{bank_id}: {message}", reason=reason or None)


def _batch_error(bank_id: str, error: bank_pb2.BatchError) -> PaygateError:
    code = _STATUS_BY_NUMBER.get(error.code, grpc.StatusCode.UNKNOWN)
    return _error(bank_id, code, error.message, error.reason)


def _resolve_outcomes(
    bank_id: str, results: Sequence[bank_pb2.ResolveResult]
) -> list[None | PaygateError]:
    return [_batch_error(bank_id, r.error) if r.HasField("error") else None for r in results]
