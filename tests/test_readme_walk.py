"""README's five-minute walk, run as written against a suite of its own, and compared with
what the commands print.

Every `$ command` of the walk's first shell block runs in order (the `source` line aside),
as a person would type it; `register` and `login` get the password on standard input with
`--password-stdin`, as README says scripts do, instead of at a terminal prompt. `paygate mfa
enable` gets the password the same way, then, once it has printed the new key, the code an
authenticator app would show, computed here from that key (tests/totp_codes.py); a later
`login` of that user gets such a code on the line after the password. Each line README
shows after a command must be the line the command printed, byte for byte, but for what
differs at every run: the payment ids (README's first id stands for the first id the walk
made, and so on, and the same for refunds), the times, the key, the recovery codes, and the
QR code's drawing (a block of lines of █ ▀ ▄ on both sides). `paygate events --follow`
runs until it has printed the lines README shows, and is then stopped with Ctrl-C.
"""

from __future__ import annotations

import pathlib
import re
import shlex
import subprocess
from collections.abc import Iterator

import pytest
from interactive import Interaction
from suite import BIN, REPO, Suite, started_suite
from totp_codes import Authenticator
from users import ISSUED_RECOVERY_CODES, ISSUED_TOTP_SECRETS, PASSWORD

pytestmark = pytest.mark.suite

WALK_HEADING = "## Pay between two demo users in five minutes"
PAYMENT_ID = re.compile(r"(?:pay|re)_[0-9a-f]{24}")  # payments' ids and refunds'
TIME = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC")
KEY = re.compile(r"\b[A-Z2-7]{32}\b")
RECOVERY_CODE = re.compile(r"\b[a-z2-7]{4}(?:-[a-z2-7]{4}){3}\b")
QR_LINE = re.compile(r"[█▀▄ ]+")
ASKS_PASSWORD = ("register", "login")


def walk() -> list[tuple[str, list[str]]]:
    """(command, the lines README shows after it), in order."""
    text = (REPO / "README.md").read_text()
    section = text.split(WALK_HEADING, 1)[1]
    block = section.split("```sh\n", 1)[1].split("```", 1)[0]
    steps: list[tuple[str, list[str]]] = []
    for line in block.splitlines():
        if line.startswith("$ "):
            steps.append((line[2:].split("  #", 1)[0].strip(), []))
        elif steps and line:
            steps[-1][1].append(line)
    return steps


@pytest.fixture(scope="module")
def own_suite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Suite]:
    with started_suite(tmp_path_factory.mktemp("readme")) as suite:
        yield suite


def test_the_walk_has_the_steps_a_newcomer_takes() -> None:
    commands = [shlex.split(command)[:2] for command, _ in walk()]
    wanted_steps = (["paygate", "register"], ["paygate", "pay"], ["paygate", "capture"],
                    ["paygate", "mfa"], ["paygate", "refund"], ["paygate", "events"],
                    ["paygate", "cancel"])
    for wanted in wanted_steps:
        assert wanted in commands, commands


def test_readme_walk_prints_what_readme_shows(own_suite: Suite, tmp_path: pathlib.Path) -> None:
    env = own_suite.env(tmp_path / "config")
    ids: dict[str, str] = {}  # README's payment id -> the one this run made
    apps: dict[str, Authenticator] = {}  # a user's authenticator app, once enabled
    user = ""  # who is logged in
    for command, shown in walk():
        args = [PAYMENT_ID.sub(lambda m: ids.get(m[0], m[0]), a) for a in shlex.split(command)]
        if args[0] == "source":
            continue
        if args[:3] == ["paygate", "mfa", "enable"]:
            done = enable_two_factor(own_suite, args, env, apps, user)
        elif "--follow" in args:
            done = follow_for(own_suite, args, env, len(shown))
        else:
            stdin = None
            if args[0] == "paygate" and args[1] in ASKS_PASSWORD:
                args.append("--password-stdin")
                stdin = f"{PASSWORD}\n"
                if args[1] == "login":
                    user = args[2]
                    stdin += f"{apps[user].code(steps_back=0)}\n" if user in apps else ""
            done = own_suite.cli(args[0], *args[1:], input=stdin, env=env)
        assert done.returncode == 0, f"$ {command}\n{done.stdout}{done.stderr}"
        printed = without_qr_drawing(done.stdout.splitlines())
        readme = without_qr_drawing(shown)
        assert len(printed) == len(readme), f"$ {command}\nprinted:\n{done.stdout}"
        for readme_line, line in zip(readme, printed, strict=True):
            for readme_id, real_id in zip(
                PAYMENT_ID.findall(readme_line), PAYMENT_ID.findall(line), strict=False
            ):
                ids.setdefault(readme_id, real_id)
            expected = PAYMENT_ID.sub(lambda m: ids.get(m[0], m[0]), readme_line)
            assert masked(line) == masked(expected), f"$ {command}"


def enable_two_factor(
    suite: Suite, args: list[str], env: dict[str, str], apps: dict[str, Authenticator],
    user: str,
) -> subprocess.CompletedProcess[str]:
    """`paygate mfa enable` answered as a script would: the password, then a code of the key
    it printed, as an app that scanned it would show."""
    running = Interaction(
        [str(BIN / "paygate"), *args[1:], "--password-stdin"], env, suite.dir, terminal=False
    )
    running.answer("", PASSWORD)
    key = running.printed(re.compile(r"^key: ([A-Z2-7]{32})$", re.MULTILINE)).group(1)
    apps[user] = Authenticator(key)
    ISSUED_TOTP_SECRETS.append(key)
    running.answer("", apps[user].code(steps_back=0))
    done = running.finish()
    ISSUED_RECOVERY_CODES.extend(RECOVERY_CODE.findall(done.stdout))
    return done


def follow_for(
    suite: Suite, args: list[str], env: dict[str, str], lines: int
) -> subprocess.CompletedProcess[str]:
    """`paygate events --follow` until it has printed `lines` lines (what README shows);
    then Ctrl-C, as a person ends it."""
    running = Interaction([str(BIN / "paygate"), *args[1:]], env, suite.dir, terminal=False)
    pattern = re.compile(r"\A(?:.*\n){" + str(lines) + "}")
    printed = running.printed(pattern).group(0)
    running.interrupt()
    done = running.finish()
    return subprocess.CompletedProcess(args, done.returncode, printed, done.stderr)


def without_qr_drawing(lines: list[str]) -> list[str]:
    """The lines with each block of QR code lines as one line, <QR code>."""
    kept: list[str] = []
    for line in lines:
        if QR_LINE.fullmatch(line):
            if kept[-1:] != ["<QR code>"]:
                kept.append("<QR code>")
        else:
            kept.append(line)
    return kept


def masked(line: str) -> str:
    """The line without what differs at every run: times, keys, recovery codes."""
    return RECOVERY_CODE.sub("<recovery code>", KEY.sub("<key>", TIME.sub("<time>", line)))
