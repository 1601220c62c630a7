"""paygate-chaos: a short run against a suite of its own, and proof that its checker can fail.

Each run starts a separate suite (started_suite), because the tool kills, pauses and restarts
processes, which must not disturb the shared suite of the other tests. The checker's pure
functions are also tested on small hand-made histories.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import random
import subprocess
from typing import Any

import pytest
from paygate.chaos.checker import CheckSettings, check_history
from paygate.chaos.history import (
    AccountRead,
    Call,
    GatewayEvent,
    GatewayPayment,
    GatewayRefund,
    History,
    Intent,
    JournalEntry,
    Outcome,
    Phase,
    RefundCall,
    Sample,
    Settlement,
    User,
)
from paygate.chaos.many_payees import split_intent
from suite import SHARED_GATEWAY_SETTINGS, Suite, started_suite

RUN_TIMEOUT_S = 240.0  # far beyond a normal run (about 55 s): a stuck step shows


def run_chaos(suite: Suite, out: pathlib.Path, *args: str) -> subprocess.CompletedProcess[str]:
    assert suite.config_path is not None
    try:
        return suite.cli(
            "paygate-chaos",
            "--config", str(suite.config_path),
            "--supervisor-conf", str(suite.supervisor_conf),
            "--supervisor-dir", str(suite.dir),
            "--out", str(out),
            *args,
            timeout_s=RUN_TIMEOUT_S,
        )  # fmt: skip
    except subprocess.TimeoutExpired as exc:
        # Its progress lines on standard error say which step did not end.
        stderr = exc.stderr.decode() if isinstance(exc.stderr, bytes) else exc.stderr
        pytest.fail(f"paygate-chaos ran over {RUN_TIMEOUT_S} s:\n{stderr}")


def results(out: pathlib.Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((out / "results.json").read_text())
    return data


@pytest.mark.suite
def test_a_short_chaos_run_under_every_kind_of_fault_is_valid(tmp_path: pathlib.Path) -> None:
    out = tmp_path / "out"
    # Authorizations last 3 s, so that those the workload leaves uncaptured expire in the run.
    short_lived = {**SHARED_GATEWAY_SETTINGS, "authorization_ttl_s": 3.0}
    with started_suite(tmp_path / "suite", gateway_settings=short_lived) as suite:
        run = run_chaos(
            suite, out,
            "--duration", "40", "--clients", "8", "--users", "9", "--seed", "7",
            "--fault-interval", "5", "--crash-points", "all",
        )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.startswith("paygate-chaos: VALID"), run.stdout
    data = results(out)
    assert data["valid"] is True and data["violations"] == {}
    assert set(data["checks"].values()) == {"ok"}
    faults = data["counts"]["faults"]
    for kind in ("kill-gateway", "kill-bank", "pause-bank"):
        assert faults.get(kind, 0) >= 1, faults
        assert f"{kind} x{faults[kind]}" in run.stdout
    calls = data["counts"]["calls"]
    assert calls["run"]["succeeded"] > 100, calls
    assert calls["run"].get("indefinite", 0) > 0, "the faults should have cut some calls short"
    assert calls["replay"]["succeeded"] > 100, calls
    # Payees refunded parts of payments, several at once; some were refused as too much.
    refunds = data["counts"]["refunds"]
    assert refunds["run"]["succeeded"] > 10, refunds
    assert data["counts"]["gateway_refunds"]["SUCCEEDED"] > 10, data["counts"]
    # Split payments across the banks, and bulk payouts whose items were answered one by one.
    counts = data["counts"]
    assert counts["split_payments"]["SUCCEEDED"] > 10, counts
    assert counts["batches"] > 10 and counts["batch_items"]["succeeded"] > 20, counts
    # Split payments refunded by their first payees, each refund taken from several payees
    # (and checked share by share in the banks' journals).
    assert counts["split_refunds"]["SUCCEEDED"] >= 3, counts
    assert "of split payments" in run.stdout
    refunds_listed = json.loads((out / "history.json").read_text())["gateway_refunds"]
    assert any(len(r["splits"]) >= 2 for r in refunds_listed if r["status"] == "SUCCEEDED")
    assert data["money"]["final_total_minor"] == data["money"]["initial_total_minor"]
    assert (out / "chaos.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert len(run.stdout.splitlines()) <= 30, "the summary fits on one screen"


@pytest.mark.suite
def test_the_checker_catches_a_gateway_that_forgets_its_commit_decision(
    tmp_path: pathlib.Path,
) -> None:
    out = tmp_path / "out"
    broken = {**SHARED_GATEWAY_SETTINGS, "broken_protocol": "forgets-commit-decision"}
    with started_suite(tmp_path / "suite", gateway_settings=broken) as suite:
        # Killing the gateway right after it decided to commit makes its recovery drive
        # the payment; the broken recovery aborts it at both banks instead.
        run = run_chaos(
            suite, out,
            "--duration", "12", "--clients", "4", "--users", "6", "--seed", "3",
            "--fault-interval", "3", "--faults", "crash-point",
            "--crash-points", "gateway.after_decision", "--authorize-p", "0",
        )  # fmt: skip
    assert run.returncode == 1, run.stdout + run.stderr
    assert run.stdout.startswith("paygate-chaos: INVALID"), run.stdout
    data = results(out)
    assert data["valid"] is False
    # The gateway calls the payment SUCCEEDED, but no bank posted it.
    violation = data["violations"]["balance_mismatch"]
    assert violation["count"] >= 2  # its payer and its payee
    assert violation["first"]["expected_minor"] != violation["first"]["actual_minor"]
    assert "VIOLATED" in run.stdout


@pytest.mark.suite
def test_the_checker_catches_a_gateway_that_captures_more_than_asked(
    tmp_path: pathlib.Path,
) -> None:
    out = tmp_path / "out"
    broken = {**SHARED_GATEWAY_SETTINGS, "broken_protocol": "captures-everything-held"}
    with started_suite(tmp_path / "suite", gateway_settings=broken) as suite:
        # Every payment an authorization, no faults: the banks post all that is held where
        # the payee captured part of it.
        run = run_chaos(
            suite, out,
            "--duration", "6", "--clients", "4", "--users", "6", "--seed", "5",
            "--no-faults", "--authorize-p", "1", "--split-p", "0",
        )  # fmt: skip
    assert run.returncode == 1, run.stdout + run.stderr
    assert run.stdout.startswith("paygate-chaos: INVALID"), run.stdout
    violations = results(out)["violations"]
    assert violations["balance_mismatch"]["count"] >= 2  # its payer and its payee
    captured = [s for s in history_settlements(out) if s["action"] == "capture"]
    assert captured, "the run captured something"


@pytest.mark.suite
def test_the_checker_catches_a_gateway_that_refunds_twice(tmp_path: pathlib.Path) -> None:
    out = tmp_path / "out"
    broken = {**SHARED_GATEWAY_SETTINGS, "broken_protocol": "refunds-twice"}
    with started_suite(tmp_path / "suite", gateway_settings=broken) as suite:
        # Every payment refunded in part, no faults: asked again after the run, the broken
        # gateway refunds again what its key had refunded.
        run = run_chaos(
            suite, out,
            "--duration", "6", "--clients", "4", "--users", "6", "--seed", "5",
            "--no-faults", "--authorize-p", "0", "--refund-p", "1", "--split-p", "0",
        )  # fmt: skip
    assert run.returncode == 1, run.stdout + run.stderr
    assert run.stdout.startswith("paygate-chaos: INVALID"), run.stdout
    violations = results(out)["violations"]
    assert violations["refund_mismatch"]["count"] >= 1, violations
    assert "refund key" in violations["refund_mismatch"]["first"]["message"]


@pytest.mark.suite
def test_the_checker_catches_a_gateway_that_commits_one_split_leg(tmp_path: pathlib.Path) -> None:
    out = tmp_path / "out"
    broken = {**SHARED_GATEWAY_SETTINGS, "broken_protocol": "commits-one-split-leg"}
    with started_suite(tmp_path / "suite", gateway_settings=broken) as suite:
        # Every fresh payment split across the three banks, no faults: the broken gateway
        # commits each at its first bank and aborts it at the others, and calls it SUCCEEDED.
        run = run_chaos(
            suite, out,
            "--duration", "6", "--clients", "4", "--users", "6", "--seed", "5",
            "--no-faults", "--split-p", "1", "--authorize-p", "0", "--refund-p", "0",
        )  # fmt: skip
    assert run.returncode == 1, run.stdout + run.stderr
    assert run.stdout.startswith("paygate-chaos: INVALID"), run.stdout
    data = results(out)
    violations = data["violations"]
    assert violations["split_partial"]["count"] >= 1, violations
    first = violations["split_partial"]["first"]
    assert first["status"] == "SUCCEEDED" and first["missing"], first
    # Clients were told SUCCEEDED and the gateway says so: only the banks show the fault.
    assert data["counts"]["split_payments"]["SUCCEEDED"] >= 1, data["counts"]
    assert "success_not_recorded" not in violations and "unexpected_error" not in violations


def history_settlements(out: pathlib.Path) -> list[dict[str, Any]]:
    history = json.loads((out / "history.json").read_text())
    settlements: list[dict[str, Any]] = history["settlements"]
    return settlements


def test_chaos_refuses_crash_points_without_fault_injection(tmp_path: pathlib.Path) -> None:
    config = tmp_path / "paygate.toml"
    config.write_text("fault_injection = false\n")
    env = {"PATH": "/usr/bin:/bin"}
    run = subprocess.run(
        [str(pathlib.Path(__file__).parent.parent / ".venv" / "bin" / "paygate-chaos"),
         "--config", str(config), "--crash-points", "all", "--out", str(tmp_path / "out")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert run.returncode == 2
    assert "fault_injection" in run.stderr
    assert not (tmp_path / "out").exists()


# The checker on hand-made histories ------------------------------------------------------

ALICE = User(username="alice", bank_id="bank-a", account_number="1", initial_minor=100)
BOB = User(username="bob", bank_id="bank-b", account_number="2", initial_minor=0)


def read(user: User, balance: int, pending_debit: int = 0, pending_credit: int = 0) -> AccountRead:
    return AccountRead(
        bank_id=user.bank_id, account_number=user.account_number, balance=balance,
        available=balance - pending_debit, pending_debit=pending_debit,
        pending_credit=pending_credit,
    )  # fmt: skip


def sample(at_s: float, *reads: AccountRead) -> Sample:
    return Sample(start_s=at_s, end_s=at_s + 0.01, reads=reads, complete=True)


def history_of_one_payment(alice_final: int, bob_final: int) -> History:
    history = History(users=[ALICE, BOB])
    history.intents["k1"] = Intent(key="k1", payer="alice", payee="bob", amount_minor=30)
    history.calls += [
        Call(key="k1", phase=Phase.RUN, start_s=1.0, end_s=2.0, outcome=Outcome.INDEFINITE,
             code="UNAVAILABLE"),
        Call(key="k1", phase=Phase.RESOLVE, start_s=20.0, end_s=20.1,
             outcome=Outcome.SUCCEEDED, payment_id="p1", status="SUCCEEDED", code="OK"),
        Call(key="k1", phase=Phase.REPLAY, start_s=30.0, end_s=30.1,
             outcome=Outcome.SUCCEEDED, payment_id="p1", status="SUCCEEDED", code="OK"),
    ]  # fmt: skip
    history.gateway_payments = [
        GatewayPayment(payment_id="p1", status="SUCCEEDED", payer="alice", payee="bob",
                       amount_minor=30, key="k1"),
    ]  # fmt: skip
    history.quiescent = sample(25.0, read(ALICE, alice_final), read(BOB, bob_final))
    history.pending_settled_after_s = 0.5
    return history


def violated(history: History, indefinite_settle_s: float = 5.0) -> set[str]:
    settings = CheckSettings(indefinite_settle_s=indefinite_settle_s)
    return set(check_history(history, settings).violations)


def test_checker_accepts_a_payment_posted_once_at_both_banks() -> None:
    assert violated(history_of_one_payment(70, 30)) == set()


def test_checker_reports_a_success_posted_at_neither_bank() -> None:
    assert violated(history_of_one_payment(100, 0)) == {"balance_mismatch"}


def test_checker_reports_money_that_vanished_and_a_hold_left_pending() -> None:
    history = history_of_one_payment(70, 0)
    assert violated(history) == {"money_not_conserved", "balance_mismatch"}
    history.quiescent = sample(25.0, read(ALICE, 70), read(BOB, 0, pending_credit=30))
    history.pending_settled_after_s = None
    assert "hold_pending_after_recovery" in violated(history)


def test_checker_reports_a_changed_answer_and_an_unresolved_key() -> None:
    history = history_of_one_payment(70, 30)
    history.calls.append(
        Call(key="k1", phase=Phase.REPLAY, start_s=31.0, end_s=31.1, outcome=Outcome.REFUSED,
             code="FAILED_PRECONDITION", reason="INSUFFICIENT_FUNDS")
    )  # fmt: skip
    history.intents["k2"] = Intent(key="k2", payer="bob", payee="alice", amount_minor=5)
    history.calls.append(
        Call(key="k2", phase=Phase.RUN, start_s=3.0, end_s=3.5, outcome=Outcome.INDEFINITE,
             code="UNAVAILABLE")
    )  # fmt: skip
    assert violated(history) == {"key_answer_changed", "call_unresolved"}


def test_checker_bounds_totals_read_during_the_run_by_holds_and_calls_in_flight() -> None:
    history = history_of_one_payment(70, 30)
    # The payer's side is posted and the payee's is still held: within the bound.
    history.samples.append(sample(10.0, read(ALICE, 70), read(BOB, 0, pending_credit=30)))
    assert violated(history) == set()
    # 30 minor units gone with no hold and no call in flight: out of bounds.
    history.samples.append(sample(12.0, read(ALICE, 70), read(BOB, 0)))
    assert violated(history) == {"total_out_of_bounds"}
    # The same read, while the payment's first call may still be deciding it: in bounds.
    assert violated(history, indefinite_settle_s=15.0) == set()
    # A negative available balance is reported from any read.
    history.samples.append(sample(13.0, read(ALICE, 10, pending_debit=20), read(BOB, 90)))
    assert "negative_balance" in violated(history)


def history_of_one_authorization(captured: int, posted: int) -> History:
    """Alice authorizes 30 to Bob, who captures 20 of it; the banks posted `posted`."""
    history = History(users=[ALICE, BOB])
    history.intents["k1"] = Intent(
        key="k1", payer="alice", payee="bob", amount_minor=30, manual=True, settle="capture",
        capture_minor=20,
    )  # fmt: skip
    history.calls.append(
        Call(key="k1", phase=Phase.RUN, start_s=1.0, end_s=2.0, outcome=Outcome.SUCCEEDED,
             payment_id="p1", status="REQUIRES_CAPTURE", code="OK")
    )  # fmt: skip
    history.settlements.append(
        Settlement(key="k1", action="capture", phase=Phase.RUN, start_s=3.0, end_s=3.5,
                   outcome=Outcome.SUCCEEDED, payment_id="p1", amount_minor=20,
                   status="SUCCEEDED", amount_captured=20, code="OK")
    )  # fmt: skip
    history.gateway_payments = [
        GatewayPayment(payment_id="p1", status="SUCCEEDED", payer="alice", payee="bob",
                       amount_minor=30, key="k1", manual=True, amount_captured=captured),
    ]  # fmt: skip
    history.quiescent = sample(25.0, read(ALICE, 100 - posted), read(BOB, posted))
    history.pending_settled_after_s = 0.5
    return history


def test_checker_accepts_a_partial_capture_posted_once() -> None:
    assert violated(history_of_one_authorization(20, 20)) == set()


def test_checker_reports_a_capture_that_moved_more_than_captured() -> None:
    assert violated(history_of_one_authorization(20, 30)) == {"balance_mismatch"}


def test_checker_reports_a_capture_recorded_otherwise_than_answered() -> None:
    assert violated(history_of_one_authorization(25, 25)) == {"capture_mismatch"}
    over = history_of_one_authorization(35, 35)
    over.quiescent = sample(25.0, read(ALICE, 65), read(BOB, 35))
    assert "capture_mismatch" in violated(over)


def test_checker_reports_an_authorization_left_awaiting_capture() -> None:
    history = history_of_one_authorization(0, 0)
    history.settlements.clear()
    history.gateway_payments = [
        GatewayPayment(payment_id="p1", status="REQUIRES_CAPTURE", payer="alice", payee="bob",
                       amount_minor=30, key="k1", manual=True),
    ]  # fmt: skip
    assert violated(history) == {"payment_not_final"}


def history_of_one_refund(refunds: list[tuple[str, int]], answered: list[str]) -> History:
    """Alice pays Bob 30, who refunds 10 under key k1/refund-0: the gateway lists `refunds`
    (refund id, amount), all SUCCEEDED under that key; the calls were answered `answered`."""
    history = history_of_one_payment(70, 30)
    moved = sum(amount for _, amount in refunds)
    history.gateway_payments = [
        dataclasses.replace(history.gateway_payments[0], amount_refunded=moved)
    ]
    history.gateway_refunds = [
        GatewayRefund(refund_id=rid, payment_id="p1", status="SUCCEEDED", amount_minor=amount,
                      refund_key="k1/refund-0")
        for rid, amount in refunds
    ]  # fmt: skip
    history.refunds = [
        RefundCall(key="k1", index=0, phase=Phase.RUN, start_s=3.0, end_s=3.1,
                   outcome=Outcome.SUCCEEDED, payment_id="p1", amount_minor=10, refund_id=rid,
                   status="SUCCEEDED", code="OK")
        for rid in answered
    ]  # fmt: skip
    history.quiescent = sample(25.0, read(ALICE, 70 + moved), read(BOB, 30 - moved))
    return history


def test_checker_accepts_a_refund_made_once() -> None:
    assert violated(history_of_one_refund([("r1", 10)], ["r1", "r1"])) == set()


def test_checker_reports_a_refund_made_twice_for_one_key() -> None:
    twice = history_of_one_refund([("r1", 10), ("r2", 10)], ["r1", "r2"])
    assert violated(twice) == {"refund_mismatch"}


def test_checker_reports_refunds_past_what_moved_and_money_without_its_refund() -> None:
    assert "refund_mismatch" in violated(history_of_one_refund([("r1", 40)], []))
    unlisted = history_of_one_refund([("r1", 10)], ["r1"])
    unlisted.quiescent = sample(25.0, read(ALICE, 90), read(BOB, 10))  # 20 went back
    assert violated(unlisted) == {"balance_mismatch"}


def test_checker_bounds_totals_read_during_a_refund_by_the_refund_in_flight() -> None:
    history = history_of_one_refund([("r1", 10)], ["r1"])
    # Bob's account read before his bank held the refund, Alice's after hers posted it,
    # while the RefundPayment call (3.0 s to 3.1 s) ran: within the bound.
    history.samples.append(sample(3.05, read(ALICE, 80), read(BOB, 30)))
    assert violated(history, indefinite_settle_s=0.5) == set()
    # The same read with no call in flight: out of bounds.
    history.samples.append(sample(8.0, read(ALICE, 80), read(BOB, 30)))
    assert violated(history, indefinite_settle_s=0.5) == {"total_out_of_bounds"}


def with_events(history: History, *events: tuple[str, int, str, str]) -> History:
    """The history with the gateway's events read: (username, sequence, type, status)."""
    history.events_read = True
    history.gateway_events = [
        GatewayEvent(username=u, sequence=n, type=t, object_id="p1", status=s)
        for u, n, t, s in events
    ]
    return history


def test_checker_accepts_one_final_event_per_party() -> None:
    history = with_events(history_of_one_payment(70, 30),
                          ("alice", 1, "payment.succeeded", "SUCCEEDED"),
                          ("bob", 1, "payment.succeeded", "SUCCEEDED"))  # fmt: skip
    assert violated(history) == set()


def test_checker_reports_missing_doubled_and_wrong_events() -> None:
    missing = with_events(history_of_one_payment(70, 30),
                          ("alice", 1, "payment.succeeded", "SUCCEEDED"))  # fmt: skip
    assert violated(missing) == {"event_mismatch"}
    doubled = with_events(history_of_one_payment(70, 30),
                          ("alice", 1, "payment.succeeded", "SUCCEEDED"),
                          ("alice", 2, "payment.succeeded", "SUCCEEDED"),
                          ("bob", 1, "payment.succeeded", "SUCCEEDED"))  # fmt: skip
    assert violated(doubled) == {"event_mismatch"}
    wrong = with_events(history_of_one_payment(70, 30),
                        ("alice", 1, "payment.failed", "FAILED"),
                        ("bob", 2, "payment.succeeded", "SUCCEEDED"))  # fmt: skip
    assert violated(wrong) == {"event_mismatch"}  # a wrong type, and bob's start at 2


CAROL = User(username="carol", bank_id="bank-c", account_number="3", initial_minor=0)
SPLIT_LEGS = (("bank-a", "1", -30), ("bank-b", "2", 10), ("bank-c", "3", 20))


def history_of_one_split(status: str, posted: tuple[tuple[str, str, int], ...]) -> History:
    """Alice pays 30 split 10 to Bob and 20 to Carol, one account at each bank; the gateway
    lists it `status`, the banks' journals hold the legs `posted` (bank, account, amount),
    and the balances say the same."""
    history = History(users=[ALICE, BOB, CAROL])
    splits = (("bob", 10), ("carol", 20))
    history.intents["k1"] = Intent(key="k1", payer="alice", payee="bob", amount_minor=30,
                                   splits=splits)  # fmt: skip
    history.calls.append(
        Call(key="k1", phase=Phase.RUN, start_s=1.0, end_s=2.0, outcome=Outcome.SUCCEEDED,
             payment_id="p1", status="SUCCEEDED", code="OK", batch=1)
        if status == "SUCCEEDED"
        else Call(key="k1", phase=Phase.RUN, start_s=1.0, end_s=2.0, outcome=Outcome.REFUSED,
                  code="FAILED_PRECONDITION", reason="INSUFFICIENT_FUNDS", batch=1)
    )  # fmt: skip
    history.gateway_payments = [
        GatewayPayment(payment_id="p1", status=status, payer="alice", payee="bob",
                       amount_minor=30, key="k1", splits=splits),
    ]  # fmt: skip
    history.journal = [
        JournalEntry(bank_id=bank, account_number=account, reference="p1", amount_minor=amount)
        for bank, account, amount in posted
    ]
    history.journal_read = True
    balances = {account: amount for _, account, amount in posted}
    history.quiescent = sample(25.0, *(read(u, u.initial_minor + balances.get(u.account_number, 0))
                                       for u in history.users))  # fmt: skip
    history.pending_settled_after_s = 0.5
    return history


def test_checker_accepts_a_split_payment_posted_at_every_bank_or_at_none() -> None:
    assert violated(history_of_one_split("SUCCEEDED", SPLIT_LEGS)) == set()
    assert violated(history_of_one_split("FAILED", ())) == set()


def test_checker_reports_a_split_payment_that_moved_some_legs_only() -> None:
    # Committed at the payer's bank only: Alice paid 30 that reached nobody.
    one_leg = history_of_one_split("SUCCEEDED", SPLIT_LEGS[:1])
    assert violated(one_leg) == {"split_partial", "money_not_conserved", "balance_mismatch"}
    [found] = check_history(one_leg, CheckSettings()).violations["split_partial"]
    assert found.example["missing"] == [["bank-b", "2", 10], ["bank-c", "3", 20]]
    # Both payees paid, the payer's debit voided: money made from nothing.
    assert "split_partial" in violated(history_of_one_split("SUCCEEDED", SPLIT_LEGS[1:]))
    # A FAILED split payment that paid one payee anyway.
    failed = history_of_one_split("FAILED", SPLIT_LEGS[2:])
    assert violated(failed) == {"split_partial", "money_not_conserved", "balance_mismatch"}


def test_checker_reports_a_split_leg_posted_twice_or_for_another_amount() -> None:
    twice = history_of_one_split("SUCCEEDED", (*SPLIT_LEGS, SPLIT_LEGS[1]))
    assert "split_partial" in violated(twice)
    other = history_of_one_split("SUCCEEDED", (SPLIT_LEGS[0], ("bank-b", "2", 20), SPLIT_LEGS[2]))
    assert "split_partial" in violated(other)


def test_checker_wants_one_final_event_for_every_payee_of_a_split_payment() -> None:
    events = (("alice", 1, "payment.succeeded", "SUCCEEDED"),
              ("bob", 1, "payment.succeeded", "SUCCEEDED"))  # fmt: skip
    history = with_events(history_of_one_split("SUCCEEDED", SPLIT_LEGS), *events)
    assert violated(history) == {"event_mismatch"}  # none for carol
    carol = ("carol", 1, "payment.succeeded", "SUCCEEDED")
    complete = with_events(history_of_one_split("SUCCEEDED", SPLIT_LEGS), *events, carol)
    assert violated(complete) == set()


def test_a_split_intent_pays_others_at_every_bank_in_parts_that_add_up() -> None:
    users = [User(username=f"u{i}", bank_id=f"bank-{'abc'[i % 3]}", account_number=str(i),
                  initial_minor=0) for i in range(9)]  # fmt: skip
    bank_of = {u.username: u.bank_id for u in users}
    rng = random.Random(3)
    sizes = set()
    for n in range(300):
        payer = users[n % len(users)]
        intent = split_intent(rng, f"k{n}", payer, users, 200_00)
        payees = [payee for payee, _ in intent.splits]
        sizes.add(len(payees))
        assert len(set(payees)) == len(payees) and payer.username not in payees
        assert {bank_of[p] for p in payees} | {payer.bank_id} == {"bank-a", "bank-b", "bank-c"}
        assert all(part > 0 for _, part in intent.splits)
        assert sum(part for _, part in intent.splits) == intent.amount_minor <= 200_00
        assert intent.payee == payees[0] and not intent.manual and not intent.refund_minor
    assert sizes == {2, 3}


def test_a_split_intent_draws_its_refunds_last_and_none_without_refunds() -> None:
    users = [User(username=f"u{i}", bank_id=f"bank-{'abc'[i % 3]}", account_number=str(i),
                  initial_minor=0) for i in range(9)]  # fmt: skip
    drawn = 0
    for n in range(100):
        plain_rng, refunded_rng = random.Random(n), random.Random(n)
        plain = split_intent(plain_rng, "k", users[0], users, 200_00)
        refunded = split_intent(refunded_rng, "k", users[0], users, 200_00, refund_p=0.5)
        # The payment is the one a seed makes without refunds; only its refunds are added.
        assert dataclasses.replace(refunded, refund_minor=()) == plain
        assert len(refunded.refund_minor) <= 3
        assert all(0 < amount <= max(1, plain.amount_minor // 2)
                   for amount in refunded.refund_minor)  # fmt: skip
        drawn += bool(refunded.refund_minor)
        # The draw of whether to refund is the only number drawn beyond the payment's.
        if not refunded.refund_minor:
            assert refunded_rng.getstate() != plain_rng.getstate()
            plain_rng.random()
            assert refunded_rng.getstate() == plain_rng.getstate()
    assert 25 <= drawn <= 75


# Bob refunds 15 of Alice's split payment: 5 of his part of 10, 10 of Carol's 20.
REFUND_SHARES = (("bob", 5), ("carol", 10))
REFUND_LEGS = (("bank-b", "2", -5), ("bank-c", "3", -10), ("bank-a", "1", 15))


def history_of_one_split_refund(
    status: str,
    posted: tuple[tuple[str, str, int], ...],
    shares: tuple[tuple[str, int], ...] = REFUND_SHARES,
) -> History:
    """history_of_one_split's payment, SUCCEEDED at every bank, and its first payee Bob's
    refund of 15 under k1/refund-0: the gateway lists it `status` with `shares`, Bob was
    answered so, the banks' journals hold its legs `posted` under its id, and the balances
    say the same."""
    history = history_of_one_split("SUCCEEDED", SPLIT_LEGS)
    history.intents["k1"] = dataclasses.replace(history.intents["k1"], refund_minor=(15,))
    refunded = 15 if status == "SUCCEEDED" else 0
    history.gateway_payments = [
        dataclasses.replace(history.gateway_payments[0], amount_refunded=refunded)
    ]
    history.gateway_refunds = [
        GatewayRefund(refund_id="r1", payment_id="p1", status=status, amount_minor=15,
                      refund_key="k1/refund-0", splits=shares),
    ]  # fmt: skip
    history.refunds = [
        RefundCall(key="k1", index=0, phase=Phase.RUN, start_s=3.0, end_s=3.1,
                   outcome=Outcome.SUCCEEDED, payment_id="p1", amount_minor=15, refund_id="r1",
                   status="SUCCEEDED", code="OK", splits=shares)
        if status == "SUCCEEDED"
        else RefundCall(key="k1", index=0, phase=Phase.RUN, start_s=3.0, end_s=3.1,
                        outcome=Outcome.REFUSED, payment_id="p1", amount_minor=15,
                        code="FAILED_PRECONDITION", reason="INSUFFICIENT_FUNDS")
    ]  # fmt: skip
    history.journal += [
        JournalEntry(bank_id=bank, account_number=account, reference="r1", amount_minor=amount)
        for bank, account, amount in posted
    ]
    return read_as_posted(history)


def read_as_posted(history: History) -> History:
    """The history with its read after recovery: each account's initial balance plus what
    the journals posted to it."""
    balances = {u.account_number: u.initial_minor for u in history.users}
    for entry in history.journal:
        balances[entry.account_number] += entry.amount_minor
    history.quiescent = sample(25.0, *(read(u, balances[u.account_number])
                                       for u in history.users))  # fmt: skip
    return history


def test_checker_accepts_a_split_refund_posted_at_every_bank_or_a_failed_one_at_none() -> None:
    assert violated(history_of_one_split_refund("SUCCEEDED", REFUND_LEGS)) == set()
    assert violated(history_of_one_split_refund("FAILED", ())) == set()


def test_checker_reports_a_split_refund_with_a_share_missing() -> None:
    # Carol's bank aborted her share while the others committed: Alice got 10 from nobody.
    missing = history_of_one_split_refund("SUCCEEDED", (REFUND_LEGS[0], REFUND_LEGS[2]))
    assert violated(missing) == {"split_partial", "money_not_conserved", "balance_mismatch"}
    [found] = check_history(missing, CheckSettings()).violations["split_partial"]
    assert found.example["refund_id"] == "r1" and found.example["payment_id"] == "p1"
    assert found.example["missing"] == [["bank-c", "3", -10]]
    assert found.example["unexpected"] == []
    # A FAILED refund that took Bob's share anyway.
    failed = history_of_one_split_refund("FAILED", REFUND_LEGS[:1])
    assert violated(failed) == {"split_partial", "money_not_conserved", "balance_mismatch"}


def test_checker_reports_a_split_refund_share_posted_twice() -> None:
    twice = history_of_one_split_refund("SUCCEEDED", (*REFUND_LEGS, REFUND_LEGS[0]))
    assert violated(twice) == {"split_partial", "money_not_conserved", "balance_mismatch"}
    [found] = check_history(twice, CheckSettings()).violations["split_partial"]
    assert found.example["unexpected"] == [["bank-b", "2", -5]]


def test_checker_reports_a_payee_giving_back_more_than_its_part() -> None:
    # The banks posted what the gateway listed, but Bob gave back 12 of his part of 10 (from
    # money of his own).
    over = history_of_one_split_refund(
        "SUCCEEDED", (("bank-b", "2", -12), ("bank-c", "3", -3), ("bank-a", "1", 15)),
        shares=(("bob", 12), ("carol", 3)),
    )  # fmt: skip
    over.users = [ALICE, dataclasses.replace(BOB, initial_minor=50), CAROL]
    assert violated(read_as_posted(over)) == {"refund_mismatch"}
    [found] = check_history(over, CheckSettings()).violations["refund_mismatch"]
    assert "bob gave back 12" in found.message
    # Shares that do not add up to the refund: Alice got 15, her payees gave 14.
    short = history_of_one_split_refund(
        "SUCCEEDED", (("bank-b", "2", -5), ("bank-c", "3", -9), ("bank-a", "1", 15)),
        shares=(("bob", 5), ("carol", 9)),
    )  # fmt: skip
    assert violated(short) == {"refund_mismatch", "money_not_conserved"}


def test_checker_reports_a_split_refund_answered_with_other_shares_than_listed() -> None:
    history = history_of_one_split_refund("SUCCEEDED", REFUND_LEGS)
    history.refunds.append(
        dataclasses.replace(history.refunds[0], phase=Phase.REPLAY, splits=(("bob", 15),))
    )
    assert violated(history) == {"refund_mismatch"}


def test_checker_wants_a_split_refunds_final_event_for_every_payee_it_takes_from() -> None:
    history = history_of_one_split_refund("SUCCEEDED", REFUND_LEGS)
    history.events_read = True
    for user in ("alice", "bob", "carol"):
        history.gateway_events += [
            GatewayEvent(username=user, sequence=1, type="payment.succeeded", object_id="p1",
                         status="SUCCEEDED"),
            GatewayEvent(username=user, sequence=2, type="refund.succeeded", object_id="r1",
                         status="SUCCEEDED"),
        ]  # fmt: skip
    assert violated(history) == set()
    history.gateway_events = [e for e in history.gateway_events if e.sequence == 1
                              or e.username != "carol"]  # fmt: skip
    assert violated(history) == {"event_mismatch"}  # none of the refund for carol
