"""Payments in-process: two-phase commit across banks and one-phase within one, exactly once,
idempotency keys, paging, bad input, and concurrency. (A bank paused or the gateway killed
mid-payment: tests/test_payments.py.)

Every test makes its own users (fresh names, freshly opened accounts), so the tests share the
module's servers without seeing each other's money.
"""

from __future__ import annotations

import base64
import concurrent.futures
import random
import uuid
from collections.abc import Iterator

import grpc
import pytest
from paygate.bank import ledger
from paygate.common.money import MAX_AMOUNT_MINOR
from paygate.gen.paygate.v1 import gateway_pb2 as pb
from suite import SuiteClient
from users import RPC_TIMEOUT_S, TestUser, assert_settled, error_reason, eventually, new_user

CHANNEL_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 500),
]


@pytest.fixture
def channel(suite: SuiteClient) -> Iterator[grpc.Channel]:
    creds = grpc.ssl_channel_credentials(suite.config.certs_dir.joinpath("ca.pem").read_bytes())
    with grpc.secure_channel(suite.gateway_target, creds, options=CHANNEL_OPTIONS) as ch:
        yield ch


def test_payment_between_two_banks_moves_exactly_the_amount(
    suite: SuiteClient, channel: grpc.Channel
) -> None:
    alice = new_user(suite, channel, "bank-a", 100_00, "alice")
    bob = new_user(suite, channel, "bank-b", 5_00, "bob")

    payment = alice.pay(bob, 12_50, description="lunch")

    assert payment.status == pb.PAYMENT_STATUS_SUCCEEDED
    assert (payment.payer_username, payment.payee_username) == (alice.username, bob.username)
    assert (payment.amount, payment.currency, payment.description) == (12_50, "USD", "lunch")
    assert alice.balance().balance == 87_50 and alice.balance().available == 87_50
    assert bob.balance().balance == 17_50
    assert_settled(alice, 87_50)
    assert_settled(bob, 17_50)
    for party in (alice, bob):
        assert party.get_payment(payment.payment_id) == payment
        assert [p.payment_id for p in party.list_payments().payments] == [payment.payment_id]


def test_payment_within_one_bank(suite: SuiteClient, channel: grpc.Channel) -> None:
    carol = new_user(suite, channel, "bank-c", 10_00)
    dave = new_user(suite, channel, "bank-c", 0)
    carol.pay(dave, 10_00)
    assert_settled(carol, 0)
    assert_settled(dave, 10_00)


def test_long_descriptions_split_a_page_instead_of_breaking_the_list(
    suite: SuiteClient, channel: grpc.Channel
) -> None:
    # 60 payments of 500 four-byte characters each (~130 KB) would not fit in one answer of
    # the gateway's 64 KiB: the page ends early, and paging still returns every payment once.
    alice = new_user(suite, channel, "bank-a", 100_00)
    bob = new_user(suite, channel, "bank-b", 0)
    ids = {alice.pay(bob, 1, description="\U0001f4b8" * 500).payment_id for _ in range(60)}
    pages, seen, token = [], [], ""
    while True:
        page = bob.list_payments(page_size=100, page_token=token)
        pages.append(len(page.payments))
        seen += [p.payment_id for p in page.payments]
        token = page.next_page_token
        if not token:
            break
    assert len(pages) >= 2 and all(count > 0 for count in pages), pages
    assert len(seen) == len(set(seen)) and set(seen) == ids


def test_a_stranger_sees_no_payment(suite: SuiteClient, channel: grpc.Channel) -> None:
    alice = new_user(suite, channel, "bank-a", 10_00)
    bob = new_user(suite, channel, "bank-b", 0)
    eve = new_user(suite, channel, "bank-c", 0)
    payment = alice.pay(bob, 1_00)
    with pytest.raises(grpc.RpcError) as info:
        eve.get_payment(payment.payment_id)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    assert eve.list_payments().payments == []


def test_list_payments_pages_newest_first(suite: SuiteClient, channel: grpc.Channel) -> None:
    alice = new_user(suite, channel, "bank-a", 10_00)
    bob = new_user(suite, channel, "bank-b", 0)
    ids = [alice.pay(bob, 1_00 + i).payment_id for i in range(5)]
    seen: list[str] = []
    token = ""
    while True:
        page = bob.list_payments(page_size=2, page_token=token)
        assert len(page.payments) <= 2
        seen += [p.payment_id for p in page.payments]
        token = page.next_page_token
        if not token:
            break
    assert seen == list(reversed(ids))
    for garbage in ["not-a-token", page_token_of(f"v1:{2**63}"), page_token_of("v1:-1"),
                    page_token_of("v1:" + "9" * 40)]:
        with pytest.raises(grpc.RpcError) as info:
            bob.list_payments(page_token=garbage)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, garbage
        assert "page_token" in info.value.details()


def page_token_of(text: str) -> str:
    """A token of ListPayments' form (base64 of "v1:<seq>", unpadded) holding `text`."""
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def test_get_payment_with_a_malformed_id_is_invalid_argument(
    suite: SuiteClient, channel: grpc.Channel
) -> None:
    alice = new_user(suite, channel, "bank-a", 1_00)
    for malformed in ["pay_\x00", "x" * 65, ""]:
        with pytest.raises(grpc.RpcError) as info:
            alice.get_payment(malformed)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, repr(malformed)
        assert "payment_id" in info.value.details()


@pytest.mark.parametrize(
    ("amount", "currency", "description", "key", "payee", "what"),
    [
        (0, "USD", "", "k", None, "zero amount"),
        (-5, "USD", "", "k", None, "negative amount"),
        (10**12, "USD", "", "k", None, "over the per-payment maximum"),
        (100, "XYZ", "", "k", None, "unknown currency"),
        (100, "USD", "x" * 501, "k", None, "description too long"),
        (100, "USD", "a\x00b", "k", None, "NUL in description"),
        (100, "USD", "two\nlines", "k", None, "line break in description"),
        (100, "USD", "", "", None, "empty key"),
        (100, "USD", "", "k" * 256, None, "key too long"),
        (100, "USD", "", "k", "self", "paying yourself"),
        (100, "USD", "", "k", "NOT A NAME", "malformed payee"),
        (100, "USD", "", "k", "payee-newline", "payee with a trailing newline"),
    ],
)
def test_bad_payment_input_is_rejected_and_records_nothing(
    suite: SuiteClient,
    channel: grpc.Channel,
    amount: int,
    currency: str,
    description: str,
    key: str,
    payee: str | None,
    what: str,
) -> None:
    alice = new_user(suite, channel, "bank-a", 10_00)
    bob = new_user(suite, channel, "bank-b", 0)
    target = {"self": alice.username, "payee-newline": bob.username + "\n"}.get(
        payee or "", payee or bob.username
    )
    with pytest.raises(grpc.RpcError) as info:
        alice.pay(target, amount, key=key, currency=currency, description=description)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, what
    assert alice.list_payments().payments == []
    assert_settled(alice, 10_00)
    if what != "empty key" and what != "key too long":
        # Nothing was recorded, so the key is still free for a valid payment.
        assert alice.pay(bob, 1_00, key=key).status == pb.PAYMENT_STATUS_SUCCEEDED


def test_a_description_keeps_emoji_no_break_spaces_and_direction_marks(
    suite: SuiteClient, channel: grpc.Channel
) -> None:
    alice = new_user(suite, channel, "bank-a", 10_00)
    bob = new_user(suite, channel, "bank-b", 0)
    description = "\U0001f469\u200d\U0001f4bb 12\u00a0\u20ac \u200fשלום"
    payment = alice.pay(bob, 1_00, description=description)
    assert payment.status == pb.PAYMENT_STATUS_SUCCEEDED
    assert alice.get_payment(payment.payment_id).description == description


def test_unknown_payee_is_not_found(suite: SuiteClient, channel: grpc.Channel) -> None:
    alice = new_user(suite, channel, "bank-a", 10_00)
    with pytest.raises(grpc.RpcError) as info:
        alice.pay("nobody-by-this-name", 1_00)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


def test_insufficient_funds_is_a_final_answer_kept_by_the_key(
    suite: SuiteClient, channel: grpc.Channel
) -> None:
    alice = new_user(suite, channel, "bank-a", 5_00)
    bob = new_user(suite, channel, "bank-b", 0)
    key = uuid.uuid4().hex
    answers = []
    for _ in range(2):
        with pytest.raises(grpc.RpcError) as info:
            alice.pay(bob, 6_00, key=key)
        answers.append((info.value.code(), info.value.details(), error_reason(info.value)))
    assert answers[0] == answers[1]
    assert answers[0][0] == grpc.StatusCode.FAILED_PRECONDITION
    assert answers[0][2] == "INSUFFICIENT_FUNDS"
    # Even after funds arrive, the key keeps its first answer (Stripe's semantics).
    suite.admin_deposit("bank-a", alice.account_number, 5_00, reference=uuid.uuid4().hex)
    with pytest.raises(grpc.RpcError) as info:
        alice.pay(bob, 6_00, key=key)
    assert error_reason(info.value) == "INSUFFICIENT_FUNDS"
    assert_settled(alice, 10_00)
    [failed] = alice.list_payments().payments
    assert (failed.status, failed.failure_reason) == (
        pb.PAYMENT_STATUS_FAILED,
        "INSUFFICIENT_FUNDS",
    )


def test_no_account_is_credited_past_the_balance_limit(
    suite: SuiteClient, channel: grpc.Channel
) -> None:
    # In yen, so that the huge balance stays out of the USD totals other tests look at.
    limit = ledger.MAX_BALANCE_MINOR
    payee = new_user(suite, channel, "bank-b", MAX_AMOUNT_MINOR - 50, currency="JPY")
    for _ in range(limit // MAX_AMOUNT_MINOR - 1):
        suite.admin_deposit("bank-b", payee.account_number, MAX_AMOUNT_MINOR,
                            reference=uuid.uuid4().hex, currency="JPY")
    assert_settled(payee, limit - 50)
    across = new_user(suite, channel, "bank-a", 1_000, currency="JPY")
    within = new_user(suite, channel, "bank-b", 1_000, currency="JPY")

    # Two banks (two-phase) and one bank (one-phase): the payee's bank votes no, nothing moves.
    for payer in (across, within):
        with pytest.raises(grpc.RpcError) as info:
            payer.pay(payee, 51, currency="JPY")
        assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert error_reason(info.value) == "BALANCE_LIMIT_EXCEEDED"
        assert "cannot hold" in info.value.details()
        # A payer's hold at the other bank is voided in the background, after the answer.
        eventually(lambda payer=payer: assert_settled(payer, 1_000))
    assert_settled(payee, limit - 50)

    # Up to the limit exactly is fine; then even a deposit of one more unit is refused.
    assert across.pay(payee, 50, currency="JPY").status == pb.PAYMENT_STATUS_SUCCEEDED
    assert_settled(payee, limit)
    with pytest.raises(grpc.RpcError) as info:
        suite.admin_deposit("bank-b", payee.account_number, 1, reference=uuid.uuid4().hex,
                            currency="JPY")
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_reason(info.value) == "BALANCE_LIMIT_EXCEEDED"
    assert_settled(payee, limit)
    [failed, *_] = within.list_payments().payments
    assert (failed.status, failed.failure_reason) == (
        pb.PAYMENT_STATUS_FAILED,
        "BALANCE_LIMIT_EXCEEDED",
    )


def replayed_header(call: grpc.Call) -> list[str]:
    """The values of the Idempotent-Replayed header in a call's response metadata."""
    return [v for k, v in call.initial_metadata() or () if k == "idempotent-replayed"]


def test_an_answer_given_again_from_the_key_says_it_is_replayed(
    suite: SuiteClient, channel: grpc.Channel
) -> None:
    """Stripe's Idempotent-Replayed: on the answers a key gives again, payments and errors."""
    alice = new_user(suite, channel, "bank-a", 10_00)
    bob = new_user(suite, channel, "bank-b", 0)
    key, refused_key = uuid.uuid4().hex, uuid.uuid4().hex
    answers = []
    for _ in range(2):
        request = pb.CreatePaymentRequest(
            idempotency_key=key, payee_username=bob.username, amount=3_00, currency="USD"
        )
        response, call = alice.stub.CreatePayment.with_call(
            request, metadata=alice.metadata, timeout=RPC_TIMEOUT_S
        )
        answers.append((response.payment.payment_id, replayed_header(call)))
    assert answers[0][1] == [] and answers[1] == (answers[0][0], ["true"])
    for replay in (False, True):
        with pytest.raises(grpc.RpcError) as info:
            alice.pay(bob, 50_00, key=refused_key)
        assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert replayed_header(info.value) == (["true"] if replay else [])  # type: ignore[arg-type]
    assert_settled(alice, 7_00)


def test_same_key_other_parameters_is_a_mismatch(suite: SuiteClient, channel: grpc.Channel) -> None:
    alice = new_user(suite, channel, "bank-a", 10_00)
    bob = new_user(suite, channel, "bank-b", 0)
    first = alice.pay(bob, 1_00, key="order-1")
    with pytest.raises(grpc.RpcError) as info:
        alice.pay(bob, 2_00, key="order-1")
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_reason(info.value) == "IDEMPOTENCY_KEY_MISMATCH"
    assert alice.pay(bob, 1_00, key="order-1") == first
    assert_settled(bob, 1_00)


def test_keys_are_scoped_to_the_user(suite: SuiteClient, channel: grpc.Channel) -> None:
    alice = new_user(suite, channel, "bank-a", 10_00)
    carol = new_user(suite, channel, "bank-c", 10_00)
    bob = new_user(suite, channel, "bank-b", 0)
    alice.pay(bob, 1_00, key="shared-key")
    carol.pay(bob, 1_00, key="shared-key")
    assert_settled(bob, 2_00)


def test_fifty_concurrent_requests_with_one_key_debit_once(
    suite: SuiteClient, channel: grpc.Channel
) -> None:
    alice = new_user(suite, channel, "bank-a", 100_00)
    bob = new_user(suite, channel, "bank-b", 0)
    key = uuid.uuid4().hex

    def attempt(_: int) -> tuple[str, str]:
        try:
            return "ok", alice.pay(bob, 7_00, key=key).SerializeToString().hex()
        except grpc.RpcError as exc:
            return exc.code().name, error_reason(exc)

    with concurrent.futures.ThreadPoolExecutor(50) as pool:
        results = list(pool.map(attempt, range(50)))

    successes = {answer for outcome, answer in results if outcome == "ok"}
    others = {(outcome, reason) for outcome, reason in results if outcome != "ok"}
    assert len(successes) == 1, "every successful answer is the same payment, byte for byte"
    assert others <= {("ABORTED", "IDEMPOTENCY_KEY_IN_USE")}
    assert_settled(alice, 93_00)
    assert_settled(bob, 7_00)
    assert len(alice.list_payments().payments) == 1


def test_concurrent_overdraft_never_exceeds_the_funds(
    suite: SuiteClient, channel: grpc.Channel
) -> None:
    alice = new_user(suite, channel, "bank-a", 100_00)
    payees = [new_user(suite, channel, bank, 0) for bank in ("bank-a", "bank-b", "bank-c")]

    def attempt(i: int) -> bool:
        try:
            alice.pay(payees[i % 3], 15_00)
            return True
        except grpc.RpcError as exc:
            assert exc.code() == grpc.StatusCode.FAILED_PRECONDITION, exc
            assert error_reason(exc) == "INSUFFICIENT_FUNDS"
            return False

    with concurrent.futures.ThreadPoolExecutor(20) as pool:
        succeeded = sum(pool.map(attempt, range(20)))

    assert succeeded == 6  # 6 x 15.00 fits in 100.00, a seventh would not
    assert_settled(alice, 100_00 - succeeded * 15_00)
    assert sum(p.bank_account().balance for p in payees) == succeeded * 15_00


def test_random_concurrent_payments_conserve_money(
    suite: SuiteClient, channel: grpc.Channel
) -> None:
    rng = random.Random(7)
    users = [new_user(suite, channel, bank, 50_00) for bank in ("bank-a", "bank-b", "bank-c") * 3]
    accounts = [(u.bank_id, u.account_number) for u in users]
    before = suite.total_money(accounts)
    plan = [(rng.choice(users), rng.choice(users), rng.randint(1, 30_00)) for _ in range(300)]

    def attempt(job: tuple[TestUser, TestUser, int]) -> str:
        payer, payee, amount = job
        if payer is payee:
            return "skipped"
        try:
            payer.pay(payee, amount)
            return "ok"
        except grpc.RpcError as exc:
            assert (exc.code(), error_reason(exc)) == (
                grpc.StatusCode.FAILED_PRECONDITION,
                "INSUFFICIENT_FUNDS",
            ), exc
            return "insufficient"

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        outcomes = list(pool.map(attempt, plan))

    assert outcomes.count("ok") > 100
    assert suite.total_money(accounts) == before
    for user in users:
        account = user.bank_account()
        assert account.balance >= 0 and account.pending_debit == 0 and account.pending_credit == 0
