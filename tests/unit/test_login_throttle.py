"""The login throttle against guesses sent at once: a failure is written only after bcrypt,
so attempts in flight must count, or every concurrent guess would pass the check.

A real SQLite store; the bcrypt check is stood in for by a pause, since the throttle only
sees when attempts start and end.
"""

from __future__ import annotations

import asyncio
import pathlib

import pytest
from paygate.errors import ResourceExhausted
from paygate.gateway.login_throttle import LoginThrottle, ThrottleSettings, peer_address
from paygate.gateway.store import SqliteGatewayStore

SETTINGS = ThrottleSettings(window_s=900, max_failures_per_user=5, max_failures_per_address=50)
PEER = "ipv4:10.0.0.7:4242"


def guesses_at_once(tmp_path: pathlib.Path, count: int, usernames: list[str]) -> tuple[int, int]:
    """`count` wrong-password attempts started together, cycling over `usernames`: how many
    reached the password check, and how many were refused by the throttle."""

    async def scenario() -> tuple[int, int]:
        store = SqliteGatewayStore(tmp_path / "gateway.db")
        await store.open()
        throttle = LoginThrottle(store, SETTINGS)
        checked = refused = 0

        async def guess(username: str) -> None:
            nonlocal checked, refused
            try:
                async with throttle.attempt(username, PEER):
                    checked += 1
                    await asyncio.sleep(0.05)  # bcrypt
                    await throttle.failed(username, PEER)
            except ResourceExhausted:
                refused += 1

        try:
            await asyncio.gather(*(guess(usernames[n % len(usernames)]) for n in range(count)))
        finally:
            await store.close()
        return checked, refused

    return asyncio.run(scenario())


def test_sixty_guesses_at_once_for_one_user_reach_bcrypt_five_times(
    tmp_path: pathlib.Path,
) -> None:
    assert guesses_at_once(tmp_path, 60, ["alice"]) == (5, 55)


def test_guesses_at_once_for_many_users_from_one_address_stop_at_its_limit(
    tmp_path: pathlib.Path,
) -> None:
    names = [f"user{n}" for n in range(30)]  # 4 guesses each: under the per-user limit
    assert guesses_at_once(tmp_path, 120, names) == (50, 70)


def test_an_attempt_that_ended_is_no_longer_ahead(tmp_path: pathlib.Path) -> None:
    """One at a time, the limit is the failures on disk, as before."""

    async def scenario() -> list[bool]:
        store = SqliteGatewayStore(tmp_path / "gateway.db")
        await store.open()
        throttle = LoginThrottle(store, SETTINGS)
        allowed = []
        try:
            for _ in range(7):
                try:
                    async with throttle.attempt("bob", PEER):
                        await throttle.failed("bob", PEER)
                    allowed.append(True)
                except ResourceExhausted:
                    allowed.append(False)
        finally:
            await store.close()
        return allowed

    assert asyncio.run(scenario()) == [True] * 5 + [False] * 2


@pytest.mark.parametrize(
    ("peer", "key"),
    [
        ("ipv4:10.0.0.7:4242", "ipv4:10.0.0.7"),
        # One host usually has a whole /64: its addresses are one key.
        ("ipv6:[2001:db8::5]:4242", "ipv6:2001:db8::/64"),
        ("ipv6:[2001:db8::ffff:1]:1", "ipv6:2001:db8::/64"),
        ("ipv6:%5B2001:db8::9%5D:77", "ipv6:2001:db8::/64"),  # as gRPC may escape it
        ("ipv6:[2001:db8:0:1::5]:1", "ipv6:2001:db8:0:1::/64"),  # another /64
        # The same IPv4 client over an IPv6 socket is the same key.
        ("ipv6:[::ffff:10.0.0.7]:1", "ipv4:10.0.0.7"),
        ("unix:/tmp/socket", "unix:/tmp/socket"),
    ],
)
def test_a_client_address_is_keyed_by_what_one_client_controls(peer: str, key: str) -> None:
    assert peer_address(peer) == key


def test_refused_registrations_are_throttled_per_address_apart_from_logins(
    tmp_path: pathlib.Path,
) -> None:
    async def scenario() -> list[str]:
        store = SqliteGatewayStore(tmp_path / "gateway.db")
        await store.open()
        settings = ThrottleSettings(window_s=900, max_failures_per_user=5,
                                    max_failures_per_address=3)
        throttle = LoginThrottle(store, settings)
        answers = []
        try:
            for _ in range(4):
                try:
                    async with throttle.register_attempt(PEER):
                        answers.append("checked")
                        await throttle.register_failed(PEER)
                except ResourceExhausted as refused:
                    answers.append(refused.message)
            async with throttle.attempt("alice", PEER):  # logins keep their own count
                answers.append("login checked")
            async with throttle.register_attempt("ipv4:10.0.0.8:1"):  # another address
                answers.append("other address checked")
        finally:
            await store.close()
        return answers

    answers = asyncio.run(scenario())
    assert answers[:3] == ["checked"] * 3
    assert answers[3].startswith("too many failed registrations; retry in")
    assert answers[4:] == ["login checked", "other address checked"]
