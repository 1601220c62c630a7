"""The transition function's shape: pure, small, and described by ARCHITECTURE.md's table.

The behaviour itself is tested by test_transitions_properties.py (random histories) and by
the suite tests that pass through it (test_payments.py, test_crash_points.py, ...)."""

from __future__ import annotations

import ast
import collections
import dataclasses
import pathlib
import re

import pytest
from paygate.common.config import ConfigError, GatewayConfig, config_from_mapping
from paygate.common.invariants import InvariantViolation
from paygate.errors import (
    BANK_TIMEOUT,
    INSUFFICIENT_FUNDS,
    TRANSACTION_ABORTED,
    TRANSACTION_COMMITTED,
)
from paygate.gateway import transitions as t
from paygate.gateway.main import transition_function
from paygate.gateway.models import TxnState

ROOT = pathlib.Path(__file__).resolve().parents[2]
GATEWAY = ROOT / "services" / "paygate" / "gateway"
NO_IO = {"asyncio", "grpc", "psycopg", "sqlite3", "time", "datetime", "random", "socket", "os"}
DRIVER_MAX_LINES = 350
FUNCTION_MAX_LINES = 60


def imported_modules(path: pathlib.Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return found


def test_the_transition_module_does_no_io_and_reads_no_clock() -> None:
    imported = {name.split(".")[0] for name in imported_modules(GATEWAY / "transitions.py")}
    assert not imported & NO_IO, imported & NO_IO


def test_the_driver_fits_in_one_sitting_and_no_function_is_long() -> None:
    driver = GATEWAY / "coordinator.py"
    assert len(driver.read_text().splitlines()) < DRIVER_MAX_LINES
    for path in (driver, GATEWAY / "transitions.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                assert length <= FUNCTION_MAX_LINES, f"{path.name}:{node.name} {length} lines"


# The state table -------------------------------------------------------------------------


def alphabet(banks: tuple[str, ...]) -> list[t.Event]:
    """Every kind of event, with each value that leads somewhere different."""
    per_bank: list[t.Event] = []
    for bank in banks:
        per_bank += [
            t.Voted(bank, True, posted=False),
            t.Voted(bank, True, posted=True),
            t.Voted(bank, False, INSUFFICIENT_FUNDS),
            t.Voted(bank, False, TRANSACTION_ABORTED),
            t.PrepareFailed(bank, BANK_TIMEOUT, "slow", answered=False),
            t.PrepareFailed(bank, "INVALID_ARGUMENT", "refused", answered=True),
            t.Acked(bank),
            t.NotAcked(bank, BANK_TIMEOUT),
            t.Refused(bank, TRANSACTION_COMMITTED),
            t.Refused(bank, TRANSACTION_ABORTED),
        ]
    return [
        t.LeaseRenewed(True),
        t.LeaseRenewed(False),
        t.VotesTimedOut(),
        t.BackoffElapsed(),
        *(
            t.Recorded(state, applied)
            for state in TxnState
            if state != TxnState.PREPARING
            for applied in (True, False)
        ),
        *per_bank,
    ]


def explored_transitions() -> dict[tuple[str, str], set[str]]:
    """(stage, event) -> the stages it leads to, over every transaction reachable from a new
    payment (two banks; one bank, one or two phases; an authorization), from one recovery
    finds, and from a capture or a cancellation of an authorization."""
    kinds = (("a", "b"), False, False), (("a",), True, False), (("a",), False, False)
    authorization = (("a", "b"), False, True)
    firsts: list[tuple[TxnState, t.Event]] = [
        (TxnState.PREPARING, t.Begin()),
        (TxnState.PREPARING, t.Recover()),
        (TxnState.COMMITTING, t.Recover()),
        (TxnState.ABORTING, t.Recover()),
    ]
    later: list[tuple[TxnState, t.Event]] = [
        (TxnState.AUTHORIZED, t.Recover()),
        (TxnState.AUTHORIZED, t.Capture(5)),
        (TxnState.AUTHORIZED, t.Cancel("CANCELED", "canceled")),
    ]
    starts = [
        (t.new_txn(payment_id="p", banks=banks, one_phase=one_phase, state=state, rounds=3,
                   manual=manual), first)
        for banks, one_phase, manual in (*kinds, authorization)
        for state, first in (firsts + later if manual else firsts)
    ]  # fmt: skip
    table: dict[tuple[str, str], set[str]] = collections.defaultdict(set)
    seen: set[t.Txn] = set()
    todo: list[tuple[t.Txn, list[t.Event]]] = [(txn, [first]) for txn, first in starts]
    while todo:
        txn, events = todo.pop()
        for event in events:
            try:
                after, _ = t.step(txn, event)
            except InvariantViolation:
                continue  # a store answer that cannot happen from here
            if (txn.stage, type(event)) not in t.TRANSITIONS:
                continue
            table[(txn.stage.name, type(event).__name__)].add(after.stage.name)
            if after not in seen:
                seen.add(after)
                todo.append((after, alphabet(after.banks)))
    return table


def documented_transitions() -> dict[tuple[str, str], set[str]]:
    text = (ROOT / "ARCHITECTURE.md").read_text()
    section = text.split("<!-- transitions table -->")[1]
    rows = re.findall(r"^\| `(\w+)` \| `(\w+)` \| (.+?) \|$", section, re.MULTILINE)
    return {(stage, event): set(re.findall(r"`(\w+)`", to)) for stage, event, to in rows}


def markdown(table: dict[tuple[str, str], set[str]]) -> str:
    order = {stage.name: i for i, stage in enumerate(t.Stage)}
    rows = sorted(table.items(), key=lambda row: (order[row[0][0]], row[0][1]))
    return "\n".join(
        f"| `{stage}` | `{event}` | {', '.join(f'`{s}`' for s in sorted(to, key=order.get))} |"
        for (stage, event), to in rows
    )


def test_architecture_md_lists_every_transition_of_the_code() -> None:
    explored = explored_transitions()
    assert {key for key in explored} == {
        (stage.name, event.__name__) for stage, event in t.TRANSITIONS
    }, "every handler is reached"
    assert documented_transitions() == explored, (
        "ARCHITECTURE.md's transition table differs from the code; the code's is:\n"
        + markdown(explored)
    )


def gateway_config(**settings: object) -> GatewayConfig:
    base = config_from_mapping({}, base=pathlib.Path("/nonexistent")).gateway
    return dataclasses.replace(base, **settings)  # type: ignore[arg-type]


def test_a_broken_variant_needs_fault_injection() -> None:
    assert transition_function(gateway_config()) is t.step
    with pytest.raises(ConfigError, match="fault_injection"):
        transition_function(gateway_config(broken_protocol="forgets-commit-decision"))
    with pytest.raises(ConfigError, match="forgets-commit-decision"):
        transition_function(gateway_config(broken_protocol="no-such", fault_injection=True))
    broken = transition_function(
        gateway_config(broken_protocol="forgets-commit-decision", fault_injection=True)
    )
    assert broken is not t.step


def decisions_sent(step: t.Step, banks: tuple[str, ...]) -> tuple[list[t.Action], t.Txn]:
    """A payment at `banks` driven to its commit decision and acknowledged by every bank: the
    SendDecisions of the commit and the finish recorded, and the transaction at the end."""
    txn = t.new_txn(payment_id="pay_1", banks=banks, one_phase=False, state=TxnState.PREPARING,
                    rounds=3)  # fmt: skip
    txn, _ = step(txn, t.Begin())
    for bank in banks:
        txn, _ = step(txn, t.Voted(bank, yes=True))
    txn, actions = step(txn, t.Recorded(TxnState.COMMITTING))
    sent = [a for a in actions if isinstance(a, t.SendDecision)]
    for bank in banks:
        txn, actions = step(txn, t.Acked(bank))
    return [*sent, *(a for a in actions if isinstance(a, t.RecordFinish))], txn


def test_the_split_leg_variant_commits_at_the_first_of_three_banks_and_aborts_the_others() -> None:
    broken = t.BROKEN_VARIANTS["commits-one-split-leg"](t.step)
    three = ("bank-a", "bank-b", "bank-c")
    actions, txn = decisions_sent(broken, three)
    assert actions == [
        t.SendDecision(("bank-a",), commit=True),
        t.SendDecision(("bank-b", "bank-c"), commit=False),
        t.RecordFinish(TxnState.COMMITTED),  # the gateway sees nothing wrong
    ]
    assert txn.stage == t.Stage.DONE
    # At two banks (every payment but a split one) it is the real protocol.
    two = ("bank-a", "bank-b")
    assert decisions_sent(broken, two) == decisions_sent(t.step, two)
