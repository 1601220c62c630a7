"""paygate.bench.splits: the payees and parts of the bench's split payments."""

from __future__ import annotations

import argparse
import random

import pytest
from paygate.bench.cli import default_users
from paygate.bench.splits import PayeeChooser, parts
from paygate.bench.users import BenchUser

BANKS = ("bank-a", "bank-b", "bank-c")


def users_over_banks(count: int) -> list[BenchUser]:
    """As the bench makes them: over the banks in turn."""
    return [
        BenchUser(f"u{i}", BANKS[i % len(BANKS)], f"acct-{i}", token="t", password="p")
        for i in range(count)
    ]


def test_parts_are_equal_with_the_remainder_on_the_first() -> None:
    assert parts(10, 3) == [4, 3, 3]
    assert parts(9, 3) == [3, 3, 3]
    assert parts(3, 3) == [1, 1, 1]
    assert parts(11, 2) == [6, 5]
    with pytest.raises(ValueError):
        parts(2, 3)  # a part of zero


@pytest.mark.parametrize("payees", [2, 3])
def test_payees_are_at_distinct_banks_never_the_payer(payees: int) -> None:
    users = users_over_banks(6)  # two a bank: the default of a split run on three banks
    chooser = PayeeChooser(users, payees)
    assert chooser.all_distinct()
    rng = random.Random(7)
    seen = set()
    for _ in range(300):
        for payer in users:
            chosen = chooser.choose(payer, rng)
            assert len(chosen) == payees and payer not in chosen
            assert len({user.bank_id for user in chosen}) == payees, (payer, chosen)
            seen.update(user.username for user in chosen)
    assert seen == {user.username for user in users}  # every user is paid at times


def test_a_payer_alone_at_its_bank_pays_the_banks_there_are() -> None:
    users = users_over_banks(4)  # u1 is the only user at bank-b
    chooser = PayeeChooser(users, 3)
    assert not chooser.all_distinct()
    rng = random.Random(1)
    for _ in range(100):
        chosen = chooser.choose(users[1], rng)
        assert sorted(user.username for user in chosen) == ["u0", "u2", "u3"]
    # More payees than banks: one at each bank, then any others, each once.
    chooser = PayeeChooser(users_over_banks(12), 5)
    for payer in users_over_banks(12):
        chosen = chooser.choose(payer, rng)
        assert len({u.username for u in chosen}) == 5 and payer not in chosen
        assert {u.bank_id for u in chosen} == set(BANKS)


def test_a_split_run_makes_two_users_a_bank_and_enough_payees() -> None:
    def users(concurrency: int, splits: int) -> int:
        args = argparse.Namespace(concurrency=concurrency, splits=splits)
        return default_users(args, len(BANKS))

    assert users(1, 1) == 2 and users(8, 1) == 8 and users(200, 1) == 64
    assert users(1, 3) == 6 and users(2, 2) == 6 and users(64, 3) == 64
    assert users(4, 10) == 11
