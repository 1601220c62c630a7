"""How `paygate` asks for a password, a link code or a one-time code: on the terminal, or
one line of stdin.

A password is never a command-line argument, where other users could see it. The end of
input (Ctrl-D at a prompt, an empty or closed stdin) is an answer, said as an error, never
a traceback. A one-time code may be one (`--code`: it works once, within a minute), or the
line after the password on standard input (scripts), or is asked on the terminal.
"""

from __future__ import annotations

import getpass
import sys

from paygate.client.cli_errors import CliError


def read_password(from_stdin: bool, *, confirm: bool, prompt: str = "password: ") -> str:
    if from_stdin:
        line = read_stdin_line()
        password = line[:-1] if line.endswith("\n") else line
    elif not has_terminal():
        # getpass would fall back to reading standard input, with a warning, and end in a
        # traceback at its end: say what to do instead.
        raise CliError("no terminal to ask for the password: pipe it in with --password-stdin")
    else:
        password = ask_secret(prompt, "password")  # on the terminal, whatever stdin is
        if confirm and ask_secret("password (again): ", "password") != password:
            raise CliError("the passwords do not match")
    if not password:
        raise CliError("empty password")
    return password


def read_new_password(from_stdin: bool) -> str:
    """A new password: the next line of stdin, or asked twice on the terminal."""
    if from_stdin:
        line = read_stdin_line()
        password = line[:-1] if line.endswith("\n") else line
    else:
        password = ask_secret("new password: ", "new password")
        if ask_secret("new password (again): ", "new password") != password:
            raise CliError("the new passwords do not match")
    if not password:
        raise CliError("empty new password: nothing was changed")
    return password


def read_code(given: str | None, from_stdin: bool, prompt: str, *, missing: str) -> str:
    """A one-time code: `given` (--code), else the next line of stdin when `from_stdin`
    (the line after the password), else asked on the terminal. `missing` says what to do
    when there is no code and no terminal to ask on."""
    if given is not None:
        code = given.strip()
    elif from_stdin and (line := read_stdin_line().strip()):
        code = line
    elif has_terminal():
        code = ask_secret(prompt, "code").strip()
    else:
        raise CliError(missing)
    if not code:
        raise CliError("empty one-time code: nothing was done")
    return code


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
