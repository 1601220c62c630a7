"""LoginThrottle: refuses logins after too many failures, per username and per client address.

Failures are kept in the gateway's database, so the throttle survives a restart. A username
that does not exist is throttled exactly like one that does (the key is the name as typed),
so the throttle cannot be used to find out which usernames exist. A successful login clears
the failures of its username, not those of its address (one good account must not let an
address go on guessing the passwords of others).

Attempts in flight count too: a failure is recorded only after bcrypt, so without them many
guesses sent at once would all pass the check before the first failure was written. Each
attempt counts the attempts of its keys already running in this process as failures ahead
of it (attempt()); replicas each count their own.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import ipaddress
import math
import time
import urllib.parse
from collections.abc import AsyncIterator, Callable

from paygate.errors import ResourceExhausted
from paygate.gateway.store import GatewayStore


@dataclasses.dataclass(frozen=True, kw_only=True)
class ThrottleSettings:
    window_s: float
    max_failures_per_user: int
    max_failures_per_address: int


def peer_address(peer: str) -> str:
    """The throttle's key for a client address: gRPC's peer string without its port, an
    IPv6 address as its /64 network (one host is usually given a whole /64, so counting
    single addresses would let it try without limit), an IPv4-mapped IPv6 address as IPv4.

    'ipv4:127.0.0.1:50292' -> 'ipv4:127.0.0.1'; 'ipv6:[2001:db8::5]:4242' ->
    'ipv6:2001:db8::/64'; 'ipv6:[::ffff:10.0.0.1]:1' -> 'ipv4:10.0.0.1'.
    """
    address, _, port = peer.rpartition(":")
    if not (address and port.isdigit()):
        return peer
    family, _, host = address.partition(":")
    if family != "ipv6":
        return address
    try:
        ip = ipaddress.IPv6Address(urllib.parse.unquote(host).strip("[]").partition("%")[0])
    except ValueError:
        return address
    if ip.ipv4_mapped is not None:
        return f"ipv4:{ip.ipv4_mapped}"
    return f"ipv6:{ipaddress.IPv6Network((ip, 64), strict=False)}"


class LoginThrottle:
    def __init__(
        self,
        store: GatewayStore,
        settings: ThrottleSettings,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._settings = settings
        self._clock = clock
        self._in_flight: collections.Counter[str] = collections.Counter()

    def _keys(self, username: str, peer: str) -> list[str]:
        return [f"user:{username}", f"address:{peer_address(peer)}"]

    def attempt(self, username: str, peer: str) -> contextlib.AbstractAsyncContextManager[None]:
        """Check the throttle for one login, counting the attempts already running as
        failures ahead of this one; the login's failed() or succeeded() goes inside."""
        limits = [self._settings.max_failures_per_user, self._settings.max_failures_per_address]
        return self._attempt(self._keys(username, peer), limits, "logins")

    def register_attempt(self, peer: str) -> contextlib.AbstractAsyncContextManager[None]:
        """Check the throttle for one Register from `peer`: its failures (a wrong link
        code, a name taken) count per address, with the per-address limit of logins."""
        keys = [self._register_key(peer)]
        return self._attempt(keys, [self._settings.max_failures_per_address], "registrations")

    async def register_failed(self, peer: str) -> None:
        await self._store.record_login_failure([self._register_key(peer)], self._clock())

    @staticmethod
    def _register_key(peer: str) -> str:
        return f"register:{peer_address(peer)}"

    @contextlib.asynccontextmanager
    async def _attempt(self, keys: list[str], limits: list[int], what: str) -> AsyncIterator[None]:
        ahead = [self._in_flight[key] for key in keys]  # no await before the counts go up
        self._in_flight.update(keys)
        try:
            await self._check(keys, ahead, limits, what)
            yield
        finally:
            self._in_flight.subtract(keys)
            for key in keys:
                if self._in_flight[key] <= 0:
                    del self._in_flight[key]

    async def _check(self, keys: list[str], ahead: list[int], limits: list[int], what: str) -> None:
        """Raise ResourceExhausted, with the wait, while any key is over its limit."""
        now = self._clock()
        window_s = self._settings.window_s
        failures = await self._store.login_failures(keys, since_s=now - window_s)
        wait_s = 0.0
        for times, running, limit in zip(failures, ahead, limits, strict=True):
            if len(times) >= limit:
                # Allowed again when enough of the failures have left the window.
                release_at_s = times[len(times) - limit] + window_s
                wait_s = max(wait_s, release_at_s - now)
            elif len(times) + running >= limit:
                wait_s = max(wait_s, 1.0)  # the attempts ahead end within a bcrypt or so
        if wait_s > 0:
            raise ResourceExhausted(f"too many failed {what}; retry in {math.ceil(wait_s)} s")

    async def failed(self, username: str, peer: str) -> None:
        await self._store.record_login_failure(self._keys(username, peer), self._clock())

    async def succeeded(self, username: str) -> None:
        await self._store.clear_login_failures(f"user:{username}")
