"""BankClients for a bank the gateway has no address for (its config lost the bank while
users and payments of that bank remain): every call is UNAVAILABLE / BANK_UNAVAILABLE, as
for a bank that is down, never an INTERNAL KeyError that a caller could trigger at will."""

from __future__ import annotations

import asyncio
import pathlib

import pytest
from paygate.common.config import TlsFiles
from paygate.errors import BANK_UNAVAILABLE, Unavailable
from paygate.gateway.banks import BankClients
from paygate.gateway.models import Leg

CERTS = pathlib.Path(__file__).resolve().parents[2] / "certs"
LEG = Leg(account_number="100001", direction="debit", amount_minor=1, currency="USD")


def test_a_bank_missing_from_the_config_is_unavailable_for_every_call() -> None:
    async def scenario() -> None:
        tls = TlsFiles(
            ca=CERTS / "ca.pem", cert=CERTS / "gateway.pem", key=CERTS / "gateway-key.pem"
        )
        banks = BankClients({"bank-a": "127.0.0.1:9"}, tls)
        calls = [
            banks.get_account("bank-gone", "100001", timeout_s=1),
            banks.link_account("bank-gone", "100001", "CODE", timeout_s=1),
            banks.prepare("bank-gone", "pay_1", [LEG], timeout_s=1),
            banks.commit("bank-gone", "pay_1", timeout_s=1),
            banks.abort("bank-gone", "pay_1", timeout_s=1),
        ]
        try:
            for call in calls:
                with pytest.raises(Unavailable) as info:
                    await call
                assert info.value.reason == BANK_UNAVAILABLE
                assert "'bank-gone' is not configured at this gateway" in str(info.value)
        finally:
            await banks.close()

    asyncio.run(scenario())
