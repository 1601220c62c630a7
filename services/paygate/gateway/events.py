"""Events: what happened to each user's money, listed after a cursor or watched live.

The store writes an event per party with every change a user should know about, in the
change's own database transaction, numbered by the user's own gapless sequence
(store_events.py). Reading them is paging by that sequence:

- ListEvents: the events after `starting_after`, oldest first, at most MAX_PAGE_SIZE,
  optionally of some types only (a page then says how far it looked).
- WatchEvents: the stored events after the cursor, then each new one, by reading the
  store again every WATCH_POLL_S (so a watcher sees events written through any gateway
  sharing the database within about that), in order, with no gap and no duplicate: every
  page must start right after the cursor, or the watch ends with EVENTS_EXPIRED.

A cursor from before the oldest event kept (`event_retention_s`, 30 days by default) is
OUT_OF_RANGE with reason EVENTS_EXPIRED: the client re-lists from 0, which is always the
start of what is kept. A cursor past the
user's last event is INVALID_ARGUMENT (another database, or a made-up number). Streams are
bounded: at most MAX_WATCHERS_PER_USER per user per gateway (and the server's stream cap,
common/stream_limit_interceptor.py); they end when the gateway shuts down (`close`), and
the client resumes from its last sequence elsewhere.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import AsyncIterator

from paygate.errors import (
    EVENTS_EXPIRED,
    InvalidArgument,
    OutOfRange,
    ResourceExhausted,
)
from paygate.gateway.models import Event, EventType, User
from paygate.gateway.store import GatewayStore

DEFAULT_PAGE_SIZE = 20
MAX_PAGE_SIZE = 100
MAX_TYPES = 16
WATCH_POLL_S = 0.25
WATCH_PAGE_SIZE = 100
MAX_WATCHERS_PER_USER = 4
# How many events ListEvents reads to fill a page of some types only.
SCAN_MAX = 10 * MAX_PAGE_SIZE
TYPES = frozenset(str(kind) for kind in EventType)


class Events:
    def __init__(self, store: GatewayStore, *, poll_s: float = WATCH_POLL_S) -> None:
        self._store = store
        self._poll_s = poll_s
        self._watchers: collections.Counter[str] = collections.Counter()
        self._closing = asyncio.Event()

    @property
    def watchers(self) -> int:
        return sum(self._watchers.values())

    async def list(
        self, user: User, starting_after: int, page_size: int, types: list[str]
    ) -> tuple[list[Event], int, bool]:
        """A page of the user's events after `starting_after`: the events, the cursor of
        the next page, and whether more were stored when it was read."""
        if page_size < 0:
            raise InvalidArgument("page_size must not be negative")
        size = min(page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        wanted = _checked_types(types)
        await self._check_cursor(user, starting_after)
        cursor, found = starting_after, list[Event]()
        scan = size if wanted is None else SCAN_MAX
        rows = await self._store.list_events(user.user_id, after=starting_after, limit=scan + 1)
        for event in rows[:scan]:
            if len(found) == size:
                break
            cursor = event.sequence
            if wanted is None or event.type in wanted:
                found.append(event)
        more = rows[-1].sequence > cursor if rows else False
        return found, cursor, more

    async def watch(self, user: User, starting_after: int) -> AsyncIterator[Event]:
        """The user's events after the cursor, then each new one, until closed."""
        if self._watchers[user.user_id] >= MAX_WATCHERS_PER_USER:
            raise ResourceExhausted(
                f"you are watching events on {MAX_WATCHERS_PER_USER} streams at this gateway,"
                " the most it allows; end one first"
            )
        await self._check_cursor(user, starting_after)
        self._watchers[user.user_id] += 1
        try:
            cursor = starting_after
            while not self._closing.is_set():
                page = await self._store.list_events(
                    user.user_id, after=cursor, limit=WATCH_PAGE_SIZE
                )
                if cursor and page and page[0].sequence != cursor + 1:
                    raise _expired(cursor)  # pruned while this watcher lagged behind
                for event in page:
                    yield event
                    cursor = event.sequence
                if len(page) < WATCH_PAGE_SIZE:
                    await self._wait(self._poll_s)
        finally:
            self._watchers[user.user_id] -= 1
            if not self._watchers[user.user_id]:
                del self._watchers[user.user_id]

    async def _wait(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._closing.wait(), seconds)

    def close(self) -> None:
        """End every watch (the server is shutting down): each stream ends cleanly."""
        self._closing.set()

    async def _check_cursor(self, user: User, starting_after: int) -> None:
        if starting_after < 0:
            raise InvalidArgument("starting_after must not be negative")
        last, oldest = await self._store.event_bounds(user.user_id)
        if starting_after > last:
            raise InvalidArgument(
                f"starting_after {starting_after} is past your last event ({last})"
            )
        # 0 is the start of what is kept, whatever was pruned before it.
        expired = oldest is None or oldest > starting_after + 1
        if 0 < starting_after < last and expired:
            raise _expired(starting_after)


def _expired(cursor: int) -> OutOfRange:
    return OutOfRange(
        f"events after {cursor} are no longer kept: list again from starting_after 0",
        reason=EVENTS_EXPIRED,
    )


def _checked_types(types: list[str]) -> frozenset[str] | None:
    if not types:
        return None
    if len(types) > MAX_TYPES:
        raise InvalidArgument(f"at most {MAX_TYPES} types")
    unknown = sorted(set(types) - TYPES)
    if unknown:
        raise InvalidArgument(
            f"unknown event type {unknown[0][:64]!r}: one of {', '.join(sorted(TYPES))}"
        )
    return frozenset(types)
