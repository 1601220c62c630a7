"""A console script run as a person or a script runs it, step by step: what it printed so
far, and a keyboard to answer its prompts with, its terminal or its standard input.

    running = Interaction([paygate, "mfa", "enable"], env, cwd, terminal=True)
    running.answer("password: ", password)        # typed at the prompt, once it shows
    key = running.printed(KEY_PATTERN).group(1)   # waits for standard output to show it
    done = running.finish()                       # a CompletedProcess

At a terminal, the command runs on a pseudo-terminal made its controlling terminal, where
getpass asks; otherwise it runs in a session of its own with no terminal (as under cron),
and each answer is a line of its standard input.
"""

from __future__ import annotations

import collections
import os
import pathlib
import pty
import re
import select
import signal
import subprocess
import sys
import time

TIMEOUT_S = 60.0
WAIT_S = 20.0
# Makes the process the leader of a new session whose controlling terminal is its stdin
# (a pseudo-terminal), then runs the command: getpass then asks on that terminal.
ON_TERMINAL = (
    "import fcntl, os, sys, termios; os.setsid(); fcntl.ioctl(0, termios.TIOCSCTTY, 0);"
    " os.execv(sys.argv[1], sys.argv[1:])"
)


class Interaction:
    """A running `paygate`: what it printed so far, and a keyboard (its terminal, or its
    standard input) to answer with."""

    def __init__(self, argv: list[str], env: dict[str, str], cwd: pathlib.Path, terminal: bool):
        self.out, self.screen = b"", b""
        self.answered: collections.Counter[str] = collections.Counter()  # prompt -> times
        if terminal:
            self.terminal, slave = pty.openpty()
            self.process = subprocess.Popen(
                [sys.executable, "-c", ON_TERMINAL, *argv],
                stdin=slave,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=env,
                cwd=cwd,
            )
            os.close(slave)
        else:
            self.terminal = -1
            self.process = subprocess.Popen(
                argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=env,
                cwd=cwd,
                start_new_session=True,  # no terminal: a script
            )

    def _read(self, until: object) -> None:
        assert self.process.stdout is not None
        deadline = time.monotonic() + WAIT_S
        while not until():  # type: ignore[operator]
            assert time.monotonic() < deadline, (self.out, self.screen)
            sources = [self.process.stdout.fileno()] + [self.terminal] * (self.terminal >= 0)
            for fd in select.select(sources, [], [], 0.2)[0]:
                data = os.read(fd, 4096)
                if fd == self.terminal:
                    self.screen += data
                else:
                    self.out += data

    def printed(self, pattern: re.Pattern[str]) -> re.Match[str]:
        """Wait until standard output shows `pattern`; its match."""
        self._read(lambda: pattern.search(self.out.decode(errors="replace")))
        found = pattern.search(self.out.decode())
        assert found is not None
        return found

    def answer(self, prompt: str, text: str) -> None:
        """At a terminal, wait for the next `prompt`, then type; otherwise write a line."""
        if self.terminal >= 0:
            self.answered[prompt] += 1
            self._read(lambda: self.screen.count(prompt.encode()) >= self.answered[prompt])
            os.write(self.terminal, f"{text}\n".encode())
        else:
            assert self.process.stdin is not None
            self.process.stdin.write(f"{text}\n".encode())
            self.process.stdin.flush()

    def interrupt(self) -> None:
        """Ctrl-C: SIGINT to the command."""
        self.process.send_signal(signal.SIGINT)

    def finish(self) -> subprocess.CompletedProcess[str]:
        try:
            rest, err = self.process.communicate(timeout=TIMEOUT_S)
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait()
            if self.terminal >= 0:
                os.close(self.terminal)
        out = (self.out + rest).decode()
        assert "Traceback" not in err.decode(), err.decode()
        return subprocess.CompletedProcess(
            self.process.args, self.process.returncode, out, err.decode()
        )
