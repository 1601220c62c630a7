"""The transition function under random histories (Hypothesis).

Each example builds a model world (protocol_world.py): a payment across two banks (paid at
once, or authorized to be captured in part or cancelled later), or within one bank whose
bank may be of an older version, banks that vote yes or no, and then a
random sequence of moves: a gateway carries out an action, a request or its answer is lost,
delayed past its deadline or duplicated, answers arrive in any order, timers fire, the
gateway crashes, another gateway's recovery claims the transaction while the first still
runs; captures and cancellations race each other and the authorization's expiry (recovery).
The world checks the protocol's invariants after every move, then lets the banks
answer and runs recovery, and checks that the transaction finished at every bank alike.

The same check fails for a deliberately broken transition function (recovery that forgets a
commit decision), which shows the properties can fail.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from paygate.gateway import transitions as t
from protocol_world import (
    AMOUNT_MINOR,
    CALM_FATES,
    FATES,
    NO_REASONS,
    Bank,
    Gateway,
    ProtocolViolation,
    World,
    two_banks,
)

EXAMPLES = 5_000
MAX_MOVES = 40

SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def world_of(data: st.DataObject, step: t.Step) -> World:
    if data.draw(st.booleans(), label="one_phase"):
        bank = Bank("bank-a", data.draw(st.sampled_from(NO_REASONS)), data.draw(st.booleans()))
        return World(one_phase=True, banks=[bank], step=step)
    reasons = (data.draw(st.sampled_from(NO_REASONS)), data.draw(st.sampled_from(NO_REASONS)))
    manual = data.draw(st.booleans(), label="manual capture")
    return World(one_phase=False, banks=two_banks(reasons), step=step, manual=manual)


def random_history(data: st.DataObject, world: World) -> None:
    """Up to MAX_MOVES moves, two random bytes each. Most move the protocol on (a gateway
    acts or steps an event, the network carries a message); a few are a crash, another
    gateway's recovery, a timer firing early, a capture or a cancellation. Half the histories
    are calm (messages are only duplicated, faults rarer), so that many reach the later steps
    before something goes wrong."""
    calm = data.draw(st.booleans(), label="calm")
    fates = CALM_FATES if calm else FATES
    crash, recover, timer = (1, 2, 3) if calm else (2, 4, 7)
    moves = data.draw(st.integers(0, MAX_MOVES), label="moves")
    history = data.draw(st.binary(min_size=2 * moves, max_size=2 * moves), label="history")
    for at in range(0, len(history), 2):
        roll = int.from_bytes(history[at : at + 2], "big")
        kind, pick = roll % 100, roll // 100
        alive = [g for g in world.gateways if g.alive]
        timers = [g for g in alive if g.timers]
        if kind < crash and alive:
            world.crash(alive[pick % len(alive)])
        elif kind < recover:
            world.recover()
        elif kind < timer and timers:
            world.take(timers[pick % len(timers)], timer=True)
        elif kind < 10:
            world.capture(1 + pick % AMOUNT_MINOR)
        elif kind < 12:
            world.cancel()
        else:
            progress(world, alive, pick, fates)


def progress(world: World, alive: list[Gateway], pick: int, fates: tuple[str, ...]) -> None:
    """A gateway acts or steps an event, or the network carries a message."""
    moves = [
        *((world.act, g) for g in alive if g.todo),
        *((world.take, g) for g in alive if g.inbox),
        *((world.deliver, i) for i in range(len(world.network))),
        *((world.reply, i) for i in range(len(world.replies))),
    ]
    if moves:
        move, which = moves[pick % len(moves)]
        if move == world.deliver:
            world.deliver(which, fates[(pick // len(moves)) % len(fates)])
        else:
            move(which)


def check_protocol(data: st.DataObject, step: t.Step) -> None:
    world = world_of(data, step)
    random_history(data, world)
    world.settle()


def test_the_protocol_holds_under_any_history() -> None:
    histories = []

    @SETTINGS
    @given(st.data())
    def protocol_holds(data: st.DataObject) -> None:
        histories.append(1)
        check_protocol(data, t.step)

    protocol_holds()
    assert len(histories) >= EXAMPLES


@pytest.mark.parametrize(
    ("variant", "violation"),
    [
        ("forgets-commit-decision", "Abort sent while committing"),
        ("captures-everything-held", "a Commit of 0, but"),
    ],
)
def test_a_broken_transition_function_fails_the_same_check(variant: str, violation: str) -> None:
    broken = t.BROKEN_VARIANTS[variant](t.step)

    # Finding one failure is the point; shrinking it would only take time.
    @settings(SETTINGS, max_examples=1_000, phases=[Phase.generate], derandomize=True)
    @given(st.data())
    def broken_protocol_holds(data: st.DataObject) -> None:
        check_protocol(data, broken)

    with pytest.raises(ProtocolViolation, match=violation):
        broken_protocol_holds()


def test_a_crash_after_the_commit_decision_is_recovered_by_commits() -> None:
    """One history spelled out: what the random ones are made of."""
    world = World(one_phase=False, banks=two_banks(("", "")), step=t.step)
    request = world.gateways[0]
    while request.todo or world.network or world.replies or request.inbox:
        if request.todo:
            if isinstance(request.todo[0], t.CrashPoint) and (
                request.todo[0].point == "gateway.after_decision"
            ):
                world.crash(request)
                break
            world.act(request)
        elif world.network:
            world.deliver(0, "ok")
        elif world.replies:
            world.reply(0)
        else:
            world.take(request)
    assert world.state == t.TxnState.COMMITTING
    assert {bank.status for bank in world.banks.values()} == {"prepared"}
    world.settle()
    assert world.state == t.TxnState.COMMITTED
    assert {bank.status for bank in world.banks.values()} == {"committed"}
