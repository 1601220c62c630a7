"""SessionCache: recently verified access tokens, so that most calls skip a database read.

Only positive answers are kept (a token hash whose session existed and was not revoked),
for `ttl_s` seconds, and at most `max_entries` of them (the oldest go first). The caller
still checks the session's expiry on every call, cached or not.

Revocation. Logout (of one session or all), RevokeSession, ChangePassword and an
operator's freeze revoke in the database first and then call invalidate() for each token
they ended, in the same step of the event loop, so once the call has answered this process
refuses those tokens.
A lookup that read the database before the revocation and finishes after it must not
put the old answer back: invalidate() advances a generation, and put() ignores an answer
read under an older generation. A restart starts with an empty cache.

The caveat: the cache is per process. With several gateway processes on one database, a
token revoked through one of them is still accepted by the others for up to `ttl_s`
seconds (a session revoked by editing the database directly, likewise). Keep `ttl_s`
small, or 0 to switch the cache off.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable
from typing import Generic, TypeVar

DEFAULT_TTL_S = 2.0
DEFAULT_MAX_ENTRIES = 10_000

S = TypeVar("S")


class SessionCache(Generic[S]):
    def __init__(
        self,
        ttl_s: float = DEFAULT_TTL_S,
        max_entries: int = DEFAULT_MAX_ENTRIES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if ttl_s < 0 or max_entries < 0:
            raise ValueError("ttl_s and max_entries must not be negative")
        self._ttl_s = ttl_s
        self._max_entries = max_entries
        self._clock = clock
        self._entries: collections.OrderedDict[str, tuple[S, float]] = collections.OrderedDict()
        self._generation = 0

    @property
    def generation(self) -> int:
        """Read before looking a token up in the database; pass it to put()."""
        return self._generation

    def get(self, token_hash: str) -> S | None:
        entry = self._entries.get(token_hash)
        if entry is None:
            return None
        session, stored_at = entry
        if self._clock() - stored_at >= self._ttl_s:
            del self._entries[token_hash]
            return None
        return session

    def put(self, token_hash: str, session: S, generation: int) -> None:
        """Keep a session found valid, unless a revocation happened since it was read."""
        if generation != self._generation or self._ttl_s == 0 or self._max_entries == 0:
            return
        self._entries.pop(token_hash, None)
        while len(self._entries) >= self._max_entries:
            self._entries.popitem(last=False)
        self._entries[token_hash] = (session, self._clock())

    def invalidate(self, token_hash: str) -> None:
        """Forget a token at once (after its revocation is in the database)."""
        self._generation += 1
        self._entries.pop(token_hash, None)

    def clear(self) -> None:
        """Forget every session (when what a revocation ended is not known)."""
        self._generation += 1
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)
