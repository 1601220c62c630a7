"""`paygate pay-split` against in-process servers: one payment in parts, all or none."""

from __future__ import annotations

import pathlib
import re
from collections.abc import Iterator

import grpc
import pytest
from servers import Servers
from test_inproc_cli_batch import logged_in, paygate
from users import assert_settled, new_user


@pytest.fixture
def channel(servers: Servers) -> Iterator[grpc.Channel]:
    with servers.gateway_channel_sync() as ch:
        yield ch


def test_pay_split_pays_every_part_or_none(
    servers: Servers, channel: grpc.Channel, tmp_path: pathlib.Path
) -> None:
    buyer = new_user(servers, channel, "bank-a", 50_00)
    seller = new_user(servers, channel, "bank-b", 0)
    courier = new_user(servers, channel, "bank-c", 0)
    logged_in(servers, tmp_path, buyer)
    parts = [f"{seller.username}=30.00", f"{courier.username}=2.50"]

    done = paygate(servers, tmp_path, "pay-split", *parts, "--idempotency-key", "order-77")

    assert done.returncode == 0, done.stderr
    first, *rest = done.stdout.splitlines()
    assert re.fullmatch(r"paid 32\.50 USD in 2 parts: payment pay_[0-9a-f]{24} SUCCEEDED", first)
    assert rest == [f"  {seller.username}: 30.00", f"  {courier.username}: 2.50"]
    for user, balance in ((buyer, 17_50), (seller, 30_00), (courier, 2_50)):
        assert_settled(user, balance)

    # Again with the key: the same payment, nothing moved.
    again = paygate(servers, tmp_path, "pay-split", *parts, "--idempotency-key", "order-77")
    assert again.stdout.splitlines()[0] == (
        first + " (replayed: this key's payment, made before; nothing moved now)"
    )
    # Too much: the payer's bank refuses its leg, and no part moves.
    refused = paygate(servers, tmp_path, "pay-split", f"{seller.username}=10.00",
                      f"{courier.username}=10.00")  # fmt: skip
    assert refused.returncode != 0
    assert "INSUFFICIENT_FUNDS" in refused.stderr, refused.stderr
    # A part that is not PAYEE=AMOUNT is refused before anything is sent.
    bad = paygate(servers, tmp_path, "pay-split", f"{seller.username}:1.00", "x=1")
    assert bad.returncode != 0 and "is not PAYEE=AMOUNT" in bad.stderr
    for user, balance in ((buyer, 17_50), (seller, 30_00), (courier, 2_50)):
        assert_settled(user, balance)
    # The first payee refunds: every payee gives back in proportion.
    payment_id = first.split()[-2]
    logged_in(servers, tmp_path / "seller", seller)
    refunded = paygate(servers, tmp_path / "seller", "refund", payment_id, "13.00")
    assert refunded.returncode == 0, refunded.stderr
    lines = refunded.stdout.splitlines()
    assert lines[0].startswith(f"refunded 13.00 USD to {buyer.username}: refund re_")
    assert lines[1:] == [
        f"  {seller.username} gives back 12.00",
        f"  {courier.username} gives back 1.00",
        f"payment {payment_id}: 19.50 USD left to refund",
    ]
    for user, balance in ((buyer, 30_50), (seller, 18_00), (courier, 1_50)):
        assert_settled(user, balance)
    # Each side lists it as it concerns them: the payer every part, a payee their own.
    listed = paygate(servers, tmp_path, "payments").stdout
    assert f"-32.50 USD  to {seller.username} 30.00, {courier.username} 2.50" in listed
    courier_home = tmp_path / "courier"
    logged_in(servers, courier_home, courier)
    theirs = paygate(servers, courier_home, "payments").stdout
    assert f"+2.50 USD  from {buyer.username} (your part of 32.50)" in theirs
    events = paygate(servers, courier_home, "events").stdout
    assert f"+2.50 USD  from {buyer.username} (your part of 32.50)" in events
    assert "(you give back 1.00)" in events
    not_theirs = paygate(servers, courier_home, "refund", payment_id, "1.00")
    assert not_theirs.returncode != 0
    assert f"only {seller.username}, the first payee of a split payment, may refund it" in (
        not_theirs.stderr
    )
