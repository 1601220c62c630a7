"""The values of the outbox: what a user asked to pay, and where each queued payment stands."""

from __future__ import annotations

import dataclasses
import datetime
import enum
import os
import pathlib
from collections.abc import Mapping

OUTBOX_FILE_NAME = "outbox.db"


class EntryState(enum.StrEnum):
    QUEUED = "queued"
    DELIVERING = "delivering"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    FORGOTTEN = "forgotten"
    # Not sent again on its own: an attempt may have reached the gateway longer ago than the
    # gateway keeps its key, so sending it now could run it a second time. A person decides.
    NEEDS_REVIEW = "needs_review"


SETTLED_STATES = frozenset({EntryState.SUCCEEDED, EntryState.FAILED, EntryState.FORGOTTEN})
# Gateways keep a key 24 h (idempotency_ttl_s); an hour less leaves room for clock skew and
# for an attempt that is sent just before the limit.
DEFAULT_KEY_TTL_S = 23 * 3600.0


@dataclasses.dataclass(frozen=True, kw_only=True)
class PaymentOrder:
    """A payment as the user asked for it; the key is chosen once, before any attempt."""

    idempotency_key: str
    gateway: str
    payer_username: str
    payee_username: str
    amount_minor: int
    currency: str
    description: str
    # An authorization: the money is held until the payee captures it (pay's capture_later).
    capture_later: bool = False


@dataclasses.dataclass(frozen=True, kw_only=True)
class QueuedPayment:
    """A row of the outbox: the order, where it stands, and how it ended (once it has)."""

    entry_id: int
    idempotency_key: str
    gateway: str
    payer_username: str
    payee_username: str
    amount_minor: int
    currency: str
    description: str
    state: EntryState
    attempts: int
    last_error: str  # the reason of the last transient failure, for people
    payment_id: str
    payment_status: str
    failure_reason: str
    created_at: datetime.datetime
    updated_at: datetime.datetime
    # When the first attempt that may have reached the gateway was made (None: no attempt
    # yet, or every one was refused before it left); the key is safe until that time plus
    # the gateway's key window.
    maybe_delivered_at: datetime.datetime | None
    # An authorization: sent with manual capture.
    capture_later: bool = False

    @property
    def settled(self) -> bool:
        return self.state in SETTLED_STATES


@dataclasses.dataclass(frozen=True, kw_only=True)
class Settlement:
    state: EntryState
    payment_id: str = ""
    payment_status: str = ""
    failure_reason: str = ""
    last_error: str = ""


def default_outbox_path(environ: Mapping[str, str]) -> pathlib.Path:
    """$XDG_STATE_HOME/paygate/outbox.db, or ~/.local/state/paygate/outbox.db."""
    # The XDG spec says a relative XDG_STATE_HOME is invalid and must be ignored.
    state_home = environ.get("XDG_STATE_HOME", "")
    if not os.path.isabs(state_home):
        state_home = os.path.join(os.path.expanduser("~"), ".local", "state")
    return pathlib.Path(state_home) / "paygate" / OUTBOX_FILE_NAME
