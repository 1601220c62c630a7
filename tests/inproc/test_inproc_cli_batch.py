"""`paygate pay-batch FILE.csv` as a user runs it: the real console script, a subprocess,
against the real gateway and banks of this process (tests/inproc). A line per payment and a
summary; the same file again replays instead of paying twice; a file with a bad line pays
nothing; on a terminal, a progress bar on stderr."""

from __future__ import annotations

import os
import pathlib
import pty
import re
import subprocess
from collections.abc import Iterator

import grpc
import pytest
from servers import Servers
from suite import BIN
from users import PASSWORD, TestUser, assert_settled, new_user

TIMEOUT_S = 60.0


@pytest.fixture
def channel(servers: Servers) -> Iterator[grpc.Channel]:
    with servers.gateway_channel_sync() as ch:
        yield ch


def environment(servers: Servers, home: pathlib.Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PAYGATE_")}
    env.update(
        PAYGATE_GATEWAY=servers.gateway_target,
        PAYGATE_CA_CERT=str(servers.config.certs_dir / "ca.pem"),
        XDG_CONFIG_HOME=str(home),
        XDG_STATE_HOME=str(home / "state"),
    )
    return env


def paygate(
    servers: Servers, home: pathlib.Path, *args: str, input: str = ""
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "paygate"), *args], cwd=home, env=environment(servers, home), input=input,
        capture_output=True, text=True, timeout=TIMEOUT_S, check=False,
    )  # fmt: skip


def logged_in(servers: Servers, home: pathlib.Path, user: TestUser) -> None:
    home.mkdir(parents=True, exist_ok=True)
    done = paygate(servers, home, "login", user.username, "--password-stdin", input=PASSWORD)
    assert done.returncode == 0, done.stderr


def test_a_file_is_paid_line_by_line_and_running_it_again_pays_nothing_twice(
    servers: Servers, channel: grpc.Channel, tmp_path: pathlib.Path
) -> None:
    alice = new_user(servers, channel, "bank-a", 50_00)
    bob = new_user(servers, channel, "bank-b", 0)
    carol = new_user(servers, channel, "bank-c", 0)
    logged_in(servers, tmp_path, alice)
    payouts = tmp_path / "payouts.csv"
    payouts.write_text(
        "payee,amount,description,idempotency_key\n"
        f"{bob.username},12.50,invoice 1041,\n"
        "nobody-at-all,1.00,,\n"
        f"{carol.username},100.00,too much,\n"
        f'{carol.username},7.00,"refund, order 77",order-77\n'
    )
    first = paygate(servers, tmp_path, "pay-batch", str(payouts))

    assert first.returncode == 1, first.stderr
    lines = first.stdout.splitlines()
    assert re.fullmatch(
        rf"line 2: paid {bob.username} 12\.50 USD: payment pay_[0-9a-f]{{24}} SUCCEEDED", lines[0]
    ), lines
    assert lines[1].startswith("line 3: FAILED nobody-at-all 1.00 USD: ") and lines[1].endswith(
        "[NOT_FOUND]"
    )
    assert lines[2].startswith(f"line 4: FAILED {carol.username} 100.00 USD: ")
    assert lines[2].endswith("[INSUFFICIENT_FUNDS]")
    assert lines[3].startswith(f"line 5: paid {carol.username} 7.00 USD: payment pay_")
    assert lines[4] == "2 of 4 paid (0 of them before: replayed), 2 failed; 19.50 USD paid now"
    assert first.stderr == "error: 2 of 4 payments failed (listed above)\n"
    assert_settled(alice, 30_50)

    again = paygate(servers, tmp_path, "pay-batch", str(payouts))
    lines_again = again.stdout.splitlines()
    assert lines_again[0] == lines[0] + " (replayed: paid before; nothing moved now)"
    assert lines_again[3] == lines[3] + " (replayed: paid before; nothing moved now)"
    assert lines_again[1] == lines[1]  # nothing was recorded: asked anew
    assert lines_again[2] == lines[2] + " (replayed: this key's answer)"
    assert lines_again[4] == "2 of 4 paid (2 of them before: replayed), 2 failed; 0.00 USD paid now"
    assert_settled(alice, 30_50)
    assert_settled(bob, 12_50)
    assert_settled(carol, 7_00)


def test_a_file_with_a_bad_line_pays_nothing(
    servers: Servers, channel: grpc.Channel, tmp_path: pathlib.Path
) -> None:
    alice = new_user(servers, channel, "bank-a", 50_00)
    bob = new_user(servers, channel, "bank-b", 0)
    logged_in(servers, tmp_path, alice)
    payouts = tmp_path / "payouts.csv"
    payouts.write_text(f"{bob.username},1.00\n{bob.username},2.505\n")
    done = paygate(servers, tmp_path, "pay-batch", str(payouts))
    assert done.returncode == 1 and done.stdout == ""
    assert "nothing was paid: fix these lines" in done.stderr
    assert "line 2: amount '2.505' has more than 2 digits" in done.stderr
    assert_settled(alice, 50_00)


def test_on_a_terminal_a_progress_bar_counts_the_payments(
    servers: Servers, channel: grpc.Channel, tmp_path: pathlib.Path
) -> None:
    alice = new_user(servers, channel, "bank-a", 500_00)
    bob = new_user(servers, channel, "bank-b", 0)
    logged_in(servers, tmp_path, alice)
    payouts = tmp_path / "payouts.csv"
    payouts.write_text("".join(f"{bob.username},1.00,line {n}\n" for n in range(150)))
    terminal, stderr = pty.openpty()
    try:
        done = subprocess.run(
            [str(BIN / "paygate"), "pay-batch", str(payouts)], cwd=tmp_path,
            env=environment(servers, tmp_path), stdout=subprocess.PIPE, stderr=stderr,
            text=True, timeout=TIMEOUT_S, check=False,
        )  # fmt: skip
        os.close(stderr)
        shown = read_all(terminal)
    finally:
        os.close(terminal)
    assert done.returncode == 0
    assert "[..............................] 0/150 payments answered" in shown
    assert "[##############################] 150/150 payments answered" in shown
    assert shown.endswith("\r\x1b[K")  # cleared before the results' lines, and at the end
    assert done.stdout.splitlines()[-1].startswith("150 of 150 paid")
    assert_settled(bob, 150_00)


def read_all(fd: int) -> str:
    chunks = []
    while True:
        try:
            chunk = os.read(fd, 4096)
        except OSError:  # EIO: the other end is closed
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks).decode()
