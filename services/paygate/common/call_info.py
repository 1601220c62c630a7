"""What the server knows about the call being handled, shared by its interceptors.

The logging interceptor creates a CallInfo for every call and puts it in CALL_INFO; inner
interceptors fill in what they learn (the authenticated user, the peer's certificate
identity), and the logging interceptor writes it all in one line when the call ends.
"""

from __future__ import annotations

import contextvars
import dataclasses


@dataclasses.dataclass
class CallInfo:
    method: str
    peer: str
    user: str | None = None
    peer_identity: str | None = None


CALL_INFO: contextvars.ContextVar[CallInfo | None] = contextvars.ContextVar(
    "paygate_call_info", default=None
)


def current_call_info() -> CallInfo | None:
    return CALL_INFO.get()
