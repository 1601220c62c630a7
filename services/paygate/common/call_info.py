"""What the server knows about the call being handled, shared by its interceptors.

The logging interceptor creates a CallInfo for every call and puts it in CALL_INFO; inner
interceptors and servicers fill in what they learn (the authenticated user, the peer's
certificate identity, the error's reason, a payment's id, a replayed answer), and the
logging interceptor writes it all in one line when the call ends.
"""

from __future__ import annotations

import contextvars
import dataclasses
from typing import Any


@dataclasses.dataclass
class CallInfo:
    method: str
    peer: str
    user: str | None = None
    peer_identity: str | None = None
    # More fields of the call's log line. Only values safe to log: never a secret.
    fields: dict[str, Any] = dataclasses.field(default_factory=dict)


CALL_INFO: contextvars.ContextVar[CallInfo | None] = contextvars.ContextVar(
    "paygate_call_info", default=None
)


def current_call_info() -> CallInfo | None:
    return CALL_INFO.get()


def note(**fields: Any) -> None:
    """Add fields to the log line of the call being handled (nothing outside a call)."""
    info = CALL_INFO.get()
    if info is not None:
        info.fields.update(fields)
