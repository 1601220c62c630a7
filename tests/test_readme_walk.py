"""README's five-minute walk, run as written against a suite of its own, and compared with
what the commands print.

Every `$ command` of the walk's first shell block runs in order (the `source` line aside),
as a person would type it; `register` and `login` get the password on standard input with
`--password-stdin`, as README says scripts do, instead of at a terminal prompt. Each line
README shows after a command must be the line the command printed, byte for byte, but for
what differs at every run: the payment ids (README's first id stands for the first id the
walk made, and so on) and the times.
"""

from __future__ import annotations

import pathlib
import re
import shlex
from collections.abc import Iterator

import pytest
from suite import REPO, Suite, started_suite
from users import PASSWORD

pytestmark = pytest.mark.suite

WALK_HEADING = "## Pay between two demo users in five minutes"
PAYMENT_ID = re.compile(r"pay_[0-9a-f]{24}")
TIME = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC")
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
    for wanted in (["paygate", "register"], ["paygate", "pay"], ["paygate", "capture"]):
        assert wanted in commands, commands


def test_readme_walk_prints_what_readme_shows(own_suite: Suite, tmp_path: pathlib.Path) -> None:
    env = own_suite.env(tmp_path / "config")
    ids: dict[str, str] = {}  # README's payment id -> the one this run made
    for command, shown in walk():
        args = [PAYMENT_ID.sub(lambda m: ids.get(m[0], m[0]), a) for a in shlex.split(command)]
        if args[0] == "source":
            continue
        stdin = None
        if args[0] == "paygate" and args[1] in ASKS_PASSWORD:
            args.append("--password-stdin")
            stdin = f"{PASSWORD}\n"
        done = own_suite.cli(args[0], *args[1:], input=stdin, env=env)
        assert done.returncode == 0, f"$ {command}\n{done.stdout}{done.stderr}"
        printed = done.stdout.splitlines()
        assert len(printed) == len(shown), f"$ {command}\nprinted:\n{done.stdout}"
        for readme_line, line in zip(shown, printed, strict=True):
            for readme_id, real_id in zip(
                PAYMENT_ID.findall(readme_line), PAYMENT_ID.findall(line), strict=False
            ):
                ids.setdefault(readme_id, real_id)
            expected = TIME.sub(
                "<time>", PAYMENT_ID.sub(lambda m: ids.get(m[0], m[0]), readme_line)
            )
            assert TIME.sub("<time>", line) == expected, f"$ {command}"
