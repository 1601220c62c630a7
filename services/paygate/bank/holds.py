"""The holds open on an account, as operators list them (BankService.ListHolds).

A hold is open while its transaction is prepared: a debit hold reserves the payer's money,
a pending credit marks the payee's on its way. An authorization (a payment with manual
capture) keeps its holds open until it is captured, cancelled or expires, which may be
days. Each hold is named with the payment it belongs to: the gateway gives the transaction
it prepares at the banks its payment's id (gateway/payments.py makes it: `pay_` and 24
hex digits), so a transaction id of that form is the payment id. A refund is a transaction
of its own, named by the refund's id (gateway/refunds.py: `re_` and 24 hex digits).

Pages are oldest first, then by transaction id, and a page token names the last
transaction of its page: the next page starts after it (keyset paging; holds that open or
close between two pages neither shift nor repeat the others). A page also ends before its
holds would pass the largest message the bank sends.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import re
from collections.abc import Callable

from paygate.bank import ledger
from paygate.bank.store import AccountHold, AccountRow, LedgerTx
from paygate.common.config import DEFAULT_MAX_MESSAGE_BYTES
from paygate.errors import InvalidArgument

DEFAULT_PAGE_SIZE = 20
MAX_PAGE_SIZE = 100
# A token holds a transaction id: up to 255 characters of up to 4 bytes each, in base64.
PAGE_TOKEN_MAX_LENGTH = 2048
_TOKEN_VERSION = "v1:"
# The ids the gateway gives its payments and refunds, and so the transactions it prepares.
PAYMENT_ID = re.compile(r"pay_[0-9a-f]{24}")
REFUND_ID = re.compile(r"re_[0-9a-f]{24}")
# What a hold adds to a ListHolds answer beside the hold itself (its field's tag and
# length), and the room kept for the rest of the answer (the next page's token).
PAGE_ITEM_OVERHEAD_BYTES = 4
PAGE_HEADROOM_BYTES = PAGE_TOKEN_MAX_LENGTH + 16


@dataclasses.dataclass(frozen=True, kw_only=True)
class Hold:
    transaction_id: str
    payment_id: str  # "" when the transaction id is not a payment id
    refund_id: str  # "" when the transaction id is not a refund id
    direction: str  # ledger.DEBIT or ledger.CREDIT
    amount_minor: int
    currency: str
    created_at_us: int


@dataclasses.dataclass(frozen=True)
class HoldsPage:
    holds: list[Hold]
    next_page_token: str  # "" on the last page


def payment_id_of(transaction_id: str) -> str:
    """The payment a transaction is, when the gateway named it so ("" otherwise)."""
    return transaction_id if PAYMENT_ID.fullmatch(transaction_id) else ""


def refund_id_of(transaction_id: str) -> str:
    """The refund a transaction is, when the gateway named it so ("" otherwise)."""
    return transaction_id if REFUND_ID.fullmatch(transaction_id) else ""


def encode_page_token(transaction_id: str) -> str:
    text = _TOKEN_VERSION + transaction_id
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def decode_page_token(token: str) -> str:
    """The transaction a page token starts after; "" for the first page."""
    if not token:
        return ""
    try:
        if len(token) > PAGE_TOKEN_MAX_LENGTH:
            raise ValueError(token)
        text = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
        if not text.startswith(_TOKEN_VERSION) or len(text) == len(_TOKEN_VERSION):
            raise ValueError(text)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise InvalidArgument("page_token is not a token returned by ListHolds") from None
    return text.removeprefix(_TOKEN_VERSION)


def list_holds(
    tx: LedgerTx,
    account_number: str,
    page_size: int,
    page_token: str,
    size_of: Callable[[Hold], int] = lambda hold: 0,
) -> HoldsPage:
    """A page of the holds open on an account, oldest first, and the next page's token.

    `size_of` gives a hold's encoded size: a page ends before its holds would pass the
    largest message the bank sends (a hold's transaction id may be 1 KiB of UTF-8).
    """
    if page_size < 0:
        raise InvalidArgument("page_size must not be negative")
    size = min(page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
    after = decode_page_token(page_token)
    account = ledger.get_account(tx, account_number)  # NotFound for an unknown account
    if after and tx.get_transaction(after) is None:
        raise InvalidArgument("page_token is not a token returned by ListHolds")
    rows = tx.holds_on_account(account.account_number, after, size + 1)
    holds = [_hold(account, row) for row in rows[:size]]
    more = len(rows) > size
    budget, used = DEFAULT_MAX_MESSAGE_BYTES - PAGE_HEADROOM_BYTES, 0
    for count, hold in enumerate(holds):
        used += size_of(hold) + PAGE_ITEM_OVERHEAD_BYTES
        if count > 0 and used > budget:
            holds, more = holds[:count], True
            break
    next_token = encode_page_token(holds[-1].transaction_id) if more else ""
    return HoldsPage(holds, next_token)


def _hold(account: AccountRow, row: AccountHold) -> Hold:
    return Hold(
        transaction_id=row.transaction_id,
        payment_id=payment_id_of(row.transaction_id),
        refund_id=refund_id_of(row.transaction_id),
        direction=row.direction,
        amount_minor=row.amount,
        currency=account.currency,
        created_at_us=row.created_at_us,
    )
