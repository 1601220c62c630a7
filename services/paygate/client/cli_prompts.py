"""How `paygate` asks for a password or a link code: on the terminal, or one line of stdin.

A password is never a command-line argument, where other users could see it. The end of
input (Ctrl-D at a prompt, an empty or closed stdin) is an answer, said as an error, never
a traceback.
"""

from __future__ import annotations

import getpass
import sys

from paygate.client.cli_errors import CliError


def read_password(from_stdin: bool, *, confirm: bool) -> str:
    if from_stdin:
        line = read_stdin_line()
        password = line[:-1] if line.endswith("\n") else line
    elif not has_terminal():
        # getpass would fall back to reading standard input, with a warning, and end in a
        # traceback at its end: say what to do instead.
        raise CliError("no terminal to ask for the password: pipe it in with --password-stdin")
    else:
        password = ask_secret("password: ", "password")  # on the terminal, whatever stdin is
        if confirm and ask_secret("password (again): ", "password") != password:
            raise CliError("the passwords do not match")
    if not password:
        raise CliError("empty password")
    return password


def ask_secret(prompt: str, what: str) -> str:
    """Ask on the terminal without echo; the end of input (Ctrl-D) is an answer, not a crash."""
    try:
        return getpass.getpass(prompt)
    except EOFError:
        if sys.stderr is not None and sys.stderr.isatty():
            print(file=sys.stderr)  # getpass left the cursor after its prompt
        raise CliError(f"no {what} given (the input ended): nothing was done") from None


def read_stdin_line() -> str:
    """One line of standard input; "" when it is empty or closed."""
    return sys.stdin.readline() if sys.stdin is not None else ""


def has_terminal() -> bool:
    """Whether this process has a terminal to ask on (getpass asks on /dev/tty)."""
    try:
        with open("/dev/tty", "rb"):
            return True
    except OSError:
        return False
