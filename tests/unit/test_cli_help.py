"""Every option, argument and command of `paygate` and `paygate-admin` says what it is in --help."""

from __future__ import annotations

import argparse
from collections.abc import Iterator

import pytest
from paygate.admin.cli import build_parser as admin_parser
from paygate.client.cli import build_parser as client_parser


def undescribed(parser: argparse.ArgumentParser) -> Iterator[str]:
    """`prog: option` for each action of `parser` and its subcommands that has no help."""
    for action in parser._actions:
        names = "/".join(action.option_strings) or action.metavar or action.dest
        if not action.help or action.help == argparse.SUPPRESS:
            yield f"{parser.prog}: {names}"
        if isinstance(action, argparse._SubParsersAction):
            described = {choice.dest for choice in action._choices_actions if choice.help}
            for name, subparser in action.choices.items():
                if name not in described:
                    yield f"{parser.prog}: command {name}"
                yield from undescribed(subparser)


@pytest.mark.parametrize(
    "parser", [client_parser({}), admin_parser()], ids=["paygate", "paygate-admin"]
)
def test_every_option_argument_and_command_has_a_description(
    parser: argparse.ArgumentParser,
) -> None:
    assert list(undescribed(parser)) == []


def test_the_walk_finds_an_option_without_help() -> None:
    parser = argparse.ArgumentParser(prog="p")
    commands = parser.add_subparsers(help="commands")
    commands.add_parser("go", help="go").add_argument("--far")
    commands.add_parser("stop")
    assert list(undescribed(parser)) == ["p go: --far", "p: command stop"]
