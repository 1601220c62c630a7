"""BankServicer: translates BankService messages to ledger calls and back, nothing else."""

from __future__ import annotations

from google.protobuf import timestamp_pb2

from paygate.bank import ledger
from paygate.bank.holds import Hold
from paygate.bank.ledger import Leg, Preparation
from paygate.bank.participant import Participant
from paygate.bank.store import AccountRow
from paygate.common.config import MAX_BATCH_SIZE
from paygate.common.handlers import Context
from paygate.errors import InvalidArgument, PaygateError, status_code_of
from paygate.gen.paygate.bank.v1 import bank_pb2, bank_pb2_grpc

SERVICE_NAME = bank_pb2.DESCRIPTOR.services_by_name["BankService"].full_name

# The most transactions one batch call may carry (the gateway sends at most its own
# batch_max_size, 128 by default); more is INVALID_ARGUMENT and nothing is applied.
MAX_BATCH = MAX_BATCH_SIZE

_DIRECTIONS = {bank_pb2.DIRECTION_DEBIT: ledger.DEBIT, bank_pb2.DIRECTION_CREDIT: ledger.CREDIT}
_DIRECTION_MESSAGES = {direction: message for message, direction in _DIRECTIONS.items()}


def account_message(account: AccountRow) -> bank_pb2.Account:
    return bank_pb2.Account(
        account_number=account.account_number,
        currency=account.currency,
        balance=account.balance,
        available=account.available,
        pending_debit=account.pending_debit,
        pending_credit=account.pending_credit,
    )


def hold_message(hold: Hold) -> bank_pb2.Hold:
    create_time = timestamp_pb2.Timestamp()
    create_time.FromMicroseconds(hold.created_at_us)
    return bank_pb2.Hold(
        transaction_id=hold.transaction_id,
        payment_id=hold.payment_id,
        refund_id=hold.refund_id,
        direction=_DIRECTION_MESSAGES[hold.direction],
        amount=hold.amount_minor,
        currency=hold.currency,
        create_time=create_time,
    )


def leg_from_message(message: bank_pb2.Leg) -> Leg:
    if message.direction not in _DIRECTIONS:
        raise InvalidArgument("leg direction must be DIRECTION_DEBIT or DIRECTION_CREDIT")
    return Leg(
        account_number=message.account_number,
        direction=_DIRECTIONS[message.direction],
        amount_minor=message.amount,
        currency=message.currency,
    )


def batch_error(error: PaygateError) -> bank_pb2.BatchError:
    return bank_pb2.BatchError(
        code=status_code_of(error).value[0], reason=error.reason, message=error.message
    )


def _check_batch(size: int) -> None:
    if not 1 <= size <= MAX_BATCH:
        raise InvalidArgument(f"a batch carries 1 to {MAX_BATCH} transactions, not {size}")


class BankServicer(bank_pb2_grpc.BankServiceServicer):
    def __init__(self, participant: Participant) -> None:
        self._bank = participant

    async def GetAccount(
        self, request: bank_pb2.GetAccountRequest, context: Context
    ) -> bank_pb2.GetAccountResponse:
        account = await self._bank.get_account(request.account_number)
        return bank_pb2.GetAccountResponse(account=account_message(account))

    async def OpenAccount(
        self, request: bank_pb2.OpenAccountRequest, context: Context
    ) -> bank_pb2.OpenAccountResponse:
        account, link_code = await self._bank.open_account(
            request.currency, request.initial_balance
        )
        return bank_pb2.OpenAccountResponse(account=account_message(account), link_code=link_code)

    async def LinkAccount(
        self, request: bank_pb2.LinkAccountRequest, context: Context
    ) -> bank_pb2.LinkAccountResponse:
        account = await self._bank.link_account(request.account_number, request.link_code)
        return bank_pb2.LinkAccountResponse(account=account_message(account))

    async def IssueLinkCode(
        self, request: bank_pb2.IssueLinkCodeRequest, context: Context
    ) -> bank_pb2.IssueLinkCodeResponse:
        link_code = await self._bank.issue_link_code(request.account_number)
        return bank_pb2.IssueLinkCodeResponse(link_code=link_code)

    async def Deposit(
        self, request: bank_pb2.DepositRequest, context: Context
    ) -> bank_pb2.DepositResponse:
        account, replayed = await self._bank.deposit(
            request.account_number, request.amount, request.currency, request.reference
        )
        return bank_pb2.DepositResponse(account=account_message(account), replayed=replayed)

    async def ListHolds(
        self, request: bank_pb2.ListHoldsRequest, context: Context
    ) -> bank_pb2.ListHoldsResponse:
        page = await self._bank.list_holds(
            request.account_number,
            request.page_size,
            request.page_token,
            size_of=lambda hold: hold_message(hold).ByteSize(),
        )
        return bank_pb2.ListHoldsResponse(
            holds=[hold_message(hold) for hold in page.holds],
            next_page_token=page.next_page_token,
        )

    async def Prepare(
        self, request: bank_pb2.PrepareRequest, context: Context
    ) -> bank_pb2.PrepareResponse:
        legs = [leg_from_message(leg) for leg in request.legs]
        vote = await self._bank.prepare(
            request.transaction_id,
            legs,
            one_phase=request.one_phase,
            spans_banks=request.spans_banks,
        )
        return bank_pb2.PrepareResponse(
            vote=bank_pb2.VOTE_YES if vote.yes else bank_pb2.VOTE_NO,
            reason=vote.reason,
            committed=vote.committed,
        )

    async def Commit(
        self, request: bank_pb2.CommitRequest, context: Context
    ) -> bank_pb2.CommitResponse:
        await self._bank.commit(request.transaction_id, request.amount)
        return bank_pb2.CommitResponse()

    async def Abort(
        self, request: bank_pb2.AbortRequest, context: Context
    ) -> bank_pb2.AbortResponse:
        await self._bank.abort(request.transaction_id)
        return bank_pb2.AbortResponse()

    async def PrepareBatch(
        self, request: bank_pb2.PrepareBatchRequest, context: Context
    ) -> bank_pb2.PrepareBatchResponse:
        _check_batch(len(request.transactions))
        results = [
            bank_pb2.PrepareResult(transaction_id=t.transaction_id) for t in request.transactions
        ]
        valid: list[Preparation] = []
        positions = []
        for position, message in enumerate(request.transactions):
            try:
                legs = [leg_from_message(leg) for leg in message.legs]
            except PaygateError as error:
                results[position].error.CopyFrom(batch_error(error))
                continue
            valid.append(
                Preparation(message.transaction_id, legs, message.one_phase, message.spans_banks)
            )
            positions.append(position)
        outcomes = await self._bank.prepare_batch(valid) if valid else []
        for position, outcome in zip(positions, outcomes, strict=True):
            if isinstance(outcome, PaygateError):
                results[position].error.CopyFrom(batch_error(outcome))
            else:
                results[position].response.vote = (
                    bank_pb2.VOTE_YES if outcome.yes else bank_pb2.VOTE_NO
                )
                results[position].response.reason = outcome.reason
                results[position].response.committed = outcome.committed
        return bank_pb2.PrepareBatchResponse(results=results)

    async def CommitBatch(
        self, request: bank_pb2.CommitBatchRequest, context: Context
    ) -> bank_pb2.CommitBatchResponse:
        _check_batch(len(request.transactions))
        ids = [t.transaction_id for t in request.transactions]
        outcomes = await self._bank.commit_batch(
            [(t.transaction_id, t.amount) for t in request.transactions]
        )
        return bank_pb2.CommitBatchResponse(results=_resolve_results(ids, outcomes))

    async def AbortBatch(
        self, request: bank_pb2.AbortBatchRequest, context: Context
    ) -> bank_pb2.AbortBatchResponse:
        _check_batch(len(request.transactions))
        ids = [t.transaction_id for t in request.transactions]
        outcomes = await self._bank.abort_batch(ids)
        return bank_pb2.AbortBatchResponse(results=_resolve_results(ids, outcomes))


def _resolve_results(
    ids: list[str], outcomes: list[PaygateError | None]
) -> list[bank_pb2.ResolveResult]:
    results = []
    for transaction_id, outcome in zip(ids, outcomes, strict=True):
        result = bank_pb2.ResolveResult(transaction_id=transaction_id)
        if outcome is not None:
            result.error.CopyFrom(batch_error(outcome))
        results.append(result)
    return results
