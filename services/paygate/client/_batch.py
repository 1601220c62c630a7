"""Bulk payouts in the client library: pay_many, over BatchCreatePayments.

    results = await client.pay_many([BatchItem(payee_username="bob", amount_minor=1250), ...])
    for result in results:
        print(result.item.payee_username, result.payment or result.error)

Every item is a payment of its own, with its own idempotency key (made here, once, for an
item without one: keep `result.item.idempotency_key` to retry that item safely) and its
own answer; the batch is not atomic. Items are sent in calls of at most MAX_BATCH_ITEMS
(1,000) and at most MAX_BATCH_REQUEST_BYTES, one call after another, in order, so the
gateway reserves their funds in that order. An item the client cannot even send (a
wrong type, an empty payee) is answered InvalidArgument without being sent, as pay()
would raise it; two items with one key refuse the whole list before anything is sent.

A call that fails as a whole (the gateway unreachable, a deadline) raises its error: the
items of earlier calls were answered (`on_results` had them), those of that call may or
may not have run, and sending the same items again, with the same keys, answers each of
them without paying twice.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import grpc

from paygate.client._models import INVALID_RESPONSE, Payment
from paygate.client._request_checks import check_payment_fields
from paygate.common.money import DEFAULT_CURRENCY
from paygate.common.rpc_errors import error_from_rpc
from paygate.errors import ERROR_BY_STATUS, InvalidArgument, PaygateError
from paygate.gen.paygate.v1 import gateway_pb2

MAX_BATCH_ITEMS = 1000  # the gateway's limit on one BatchCreatePayments call
# The gateway's limit on the request is 4 MiB (max_batch_message_bytes); 1,000 valid items
# always fit in less, so only items the gateway would refuse could make a call larger.
MAX_BATCH_REQUEST_BYTES = 4_000_000
# A call's deadline: the client's timeout_s, plus this much per item (1,000 items: 50 s
# more). Items run concurrently, but those the payer's balance does not cover run one by
# one (docs/protocol.md, "Bulk payouts").
TIMEOUT_PER_ITEM_S = 0.05
_CODES = {code.value[0]: code for code in grpc.StatusCode}

OnResults = Callable[[list["BatchResult"]], None]


@dataclasses.dataclass(frozen=True, kw_only=True)
class BatchItem:
    """One payment of a pay_many call; amounts in minor units."""

    payee_username: str
    amount_minor: int
    currency: str = DEFAULT_CURRENCY
    description: str = ""
    # None: a new key is made for it, once; pass your own to retry the item safely.
    idempotency_key: str | None = None
    capture_later: bool = False


@dataclasses.dataclass(frozen=True, kw_only=True)
class BatchResult:
    """What one item became: its payment, or the error it would have raised from pay()."""

    item: BatchItem  # as sent: its idempotency_key is always set
    payment: Payment | None = None
    error: PaygateError | None = None
    # Answered again from the item's key (an earlier call made the payment or met the
    # error): nothing moved now. A payment says it too (Payment.replayed).
    replayed: bool = False

    @property
    def ok(self) -> bool:
        return self.payment is not None


def with_keys(items: Sequence[BatchItem]) -> list[BatchItem]:
    """The items, each with its key (new ones made here); InvalidArgument for a key twice."""
    keyed = [
        item
        if item.idempotency_key is not None
        else dataclasses.replace(item, idempotency_key=str(uuid.uuid4()))
        for item in items
    ]
    first: dict[str, int] = {}
    for index, item in enumerate(keyed):
        assert item.idempotency_key is not None
        earlier = first.setdefault(item.idempotency_key, index)
        if earlier != index:
            raise InvalidArgument(
                f"items {earlier} and {index} have the same idempotency key: each payment"
                " needs its own"
            )
    return keyed


def request_of(item: BatchItem) -> gateway_pb2.CreatePaymentRequest:
    """The item as a request; InvalidArgument when it cannot be sent at all."""
    check_payment_fields(
        item.payee_username, item.amount_minor, item.currency, item.description,
        item.idempotency_key,
    )  # fmt: skip
    return gateway_pb2.CreatePaymentRequest(
        idempotency_key=item.idempotency_key,
        payee_username=item.payee_username,
        amount=item.amount_minor,
        currency=item.currency,
        description=item.description,
        capture_method=gateway_pb2.CAPTURE_METHOD_MANUAL
        if item.capture_later
        else gateway_pb2.CAPTURE_METHOD_AUTOMATIC,
    )


def calls(items: Sequence[BatchItem]) -> Iterator[list[BatchItem]]:
    """The items in calls of at most MAX_BATCH_ITEMS and MAX_BATCH_REQUEST_BYTES, in order."""
    call: list[BatchItem] = []
    size = 0
    for item in items:
        try:
            item_size = request_of(item).ByteSize() + 8  # its tag and length, generously
        except InvalidArgument:
            item_size = 0  # not sent: answered without a call
        if call and (len(call) == MAX_BATCH_ITEMS or size + item_size > MAX_BATCH_REQUEST_BYTES):
            yield call
            call, size = [], 0
        call.append(item)
        size += item_size
    if call:
        yield call


async def pay_many(
    stub: Any,
    items: Sequence[BatchItem],
    *,
    timeout_s: float,
    on_results: OnResults | None = None,
) -> list[BatchResult]:
    """One result per item, in order (module docstring); `on_results` gets each call's."""
    results: list[BatchResult] = []
    for call in calls(with_keys(items)):
        answered = await _one_call(stub, call, timeout_s + TIMEOUT_PER_ITEM_S * len(call))
        if on_results is not None:
            on_results(answered)
        results += answered
    return results


async def _one_call(stub: Any, items: list[BatchItem], timeout_s: float) -> list[BatchResult]:
    results: list[BatchResult | None] = []
    requests = []
    for item in items:
        try:
            requests.append(request_of(item))
            results.append(None)  # answered by the gateway
        except InvalidArgument as refused:
            results.append(BatchResult(item=item, error=refused))
    if requests:
        request = gateway_pb2.BatchCreatePaymentsRequest(requests=requests)
        try:
            response = await stub.BatchCreatePayments(request, timeout=timeout_s)
        except grpc.RpcError as exc:
            raise error_from_rpc(exc) from exc
        answers = iter(_checked(response, len(requests)))
        results = [r if r is not None else _result(item, next(answers)) for r, item in
                   zip(results, items, strict=True)]  # fmt: skip
    return [r for r in results if r is not None]


def _checked(
    response: gateway_pb2.BatchCreatePaymentsResponse, count: int
) -> list[gateway_pb2.BatchCreatePaymentResult]:
    if len(response.results) != count:
        raise PaygateError(
            f"the gateway answered {len(response.results)} results for {count} items",
            reason=INVALID_RESPONSE,
        )
    return list(response.results)


def _result(item: BatchItem, message: gateway_pb2.BatchCreatePaymentResult) -> BatchResult:
    which = message.WhichOneof("result")
    if which == "payment":
        payment = Payment.from_proto(message.payment)
        payment = dataclasses.replace(payment, replayed=message.replayed)
        return BatchResult(item=item, payment=payment, replayed=message.replayed)
    if which != "error":
        raise PaygateError("the gateway answered an item with nothing", reason=INVALID_RESPONSE)
    return BatchResult(item=item, error=item_error(message.error), replayed=message.replayed)


def item_error(message: gateway_pb2.BatchItemError) -> PaygateError:
    """The exception an item's error stands for, as pay() would have raised it."""
    code = _CODES.get(message.code)
    cls = ERROR_BY_STATUS.get(code, PaygateError) if code is not None else PaygateError
    return cls(message.message, reason=message.reason or None, metadata=dict(message.metadata))
