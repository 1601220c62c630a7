"""Native code's standard error as JSON log lines: every line of a process's log is JSON.

gRPC's C core logs through absl to file descriptor 2, in glog's text format
(`E1207 21:57:58.472104   10775 ssl_transport_security.cc:3238] No match found for server
name: bank-a`): a failed TLS handshake, for instance. `route_native_stderr` makes descriptor
2 a pipe, and a thread turns each line read from it into a JSON line (logger "grpc", its
level, its source file, its text) written to the real standard error. Python's own writes
(sys.stderr: the JSON log handler, a traceback) keep going straight to the real standard
error, unchanged: they never wait on the thread, and a crash's traceback is never lost.

The one limit: a native line written just before the process dies (a C-core fatal error
aborts at once) may still be in the pipe, unread, and is lost with it.
"""

from __future__ import annotations

import datetime
import io
import json
import os
import re
import sys
import threading
from typing import Any, BinaryIO

LOGGER = "grpc"
LINE_MAX_BYTES = 16 * 1024  # a longer native line is cut, not held in memory whole
# glog's prefix: severity, MMDD, time, thread id, file:line].
_GLOG = re.compile(r"^([IWEF])\d{4} [\d:.]+\s+\d+ ([^\]\s]+)\] ?(.*)$")
_LEVELS = {"I": "info", "W": "warning", "E": "error", "F": "critical"}


def route_native_stderr() -> None:
    """Route descriptor 2 through a pipe that turns native lines into JSON (see above).
    Call it before logging is set up: sys.stderr is then the real standard error."""
    real = os.dup(2)
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)
    sys.stderr = io.TextIOWrapper(
        io.FileIO(real, "w", closefd=False), encoding="utf-8", errors="backslashreplace",
        line_buffering=True,
    )
    source = os.fdopen(read_end, "rb")
    threading.Thread(
        target=relay, args=(source, real), name="native-stderr", daemon=True
    ).start()


def relay(source: BinaryIO, destination_fd: int) -> None:
    """Copy lines from `source` to `destination_fd` as JSON lines, until end of file."""
    while True:
        line = source.readline(LINE_MAX_BYTES)
        if not line:
            return
        text = line.decode("utf-8", errors="backslashreplace").rstrip("\r\n")
        if text:
            os.write(destination_fd, (as_json_line(text) + "\n").encode())


def as_json_line(text: str) -> str:
    """A line of native output as a JSON log line; one that is JSON already, as it is."""
    if text.startswith("{"):
        try:
            json.loads(text)
            return text
        except ValueError:
            pass
    line: dict[str, Any] = {
        "time": datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds"),
        "level": "warning",  # not in glog's format: unknown, so worth a look
        "logger": LOGGER,
        "msg": text,
    }
    found = _GLOG.match(text)
    if found:
        severity, source, message = found.groups()
        line.update(level=_LEVELS[severity], msg=message, source=source)
    return json.dumps(line, separators=(",", ":"))
