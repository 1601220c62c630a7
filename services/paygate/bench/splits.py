"""Split payments (--splits K): whom each payment pays, and how much each payee gets.

A split payment pays K payees their parts of one amount, all or none, in one two-phase
commit whose participants are every bank involved. To measure that commit at its widest,
the K payees of a payment are at K distinct banks whenever the users allow it (K at most
the number of banks, and each of those banks holding a user other than the payer); the
bench makes at least two users per bank for a split run, so that they always do with
three banks and K <= 3. Beyond that, the other payees are any other users. The parts are
equal, the remainder of the division on the first payee's.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from paygate.bench.users import BenchUser

MIN_SPLITS = 2
MAX_SPLITS = 10  # the gateway's limit on a split payment's payees


def parts(amount_minor: int, payees: int) -> list[int]:
    """`amount_minor` in `payees` equal parts, the remainder on the first; each positive."""
    if not 1 <= payees <= amount_minor:
        raise ValueError(f"{amount_minor} minor units cannot be split in {payees} positive parts")
    part, remainder = divmod(amount_minor, payees)
    return [part + remainder] + [part] * (payees - 1)


class PayeeChooser:
    """Chooses the payees of each split payment among the bench's users."""

    def __init__(self, users: Sequence[BenchUser], payees: int) -> None:
        if not MIN_SPLITS <= payees < len(users):
            raise ValueError(f"{payees} payees need more than {payees} users")
        self._users = list(users)
        self._payees = payees
        self._by_bank: dict[str, list[BenchUser]] = {}
        for user in users:
            self._by_bank.setdefault(user.bank_id, []).append(user)

    def banks_available(self, payer: BenchUser) -> int:
        """How many distinct banks hold a user other than `payer`."""
        return sum(
            any(user.username != payer.username for user in users)
            for users in self._by_bank.values()
        )

    def all_distinct(self) -> bool:
        """Whether every payer's payments pay their payees at distinct banks."""
        return all(self.banks_available(user) >= self._payees for user in self._users)

    def choose(self, payer: BenchUser, rng: random.Random) -> list[BenchUser]:
        """`payees` users other than the payer, each once: one from each of as many
        distinct banks as there are payees (banks in random order, a random user of each),
        then, if the banks run out, random other users."""
        banks = sorted(self._by_bank)
        rng.shuffle(banks)
        chosen: list[BenchUser] = []
        for bank in banks:
            if len(chosen) == self._payees:
                return chosen
            others = [user for user in self._by_bank[bank] if user.username != payer.username]
            if others:
                chosen.append(rng.choice(others))
        rest = [u for u in self._users if u.username != payer.username and u not in chosen]
        return chosen + rng.sample(rest, self._payees - len(chosen))
