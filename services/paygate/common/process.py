"""Running a server process: start-up refusals are reported as one clear log line."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Coroutine
from typing import Any

from paygate.common.tls import InsecureKeyFile

EXIT_REFUSED = 2


def _stop_while_starting(signum: int, frame: object) -> None:
    # Nothing is served yet, and every write so far is a finished SQLite transaction:
    # leaving now loses nothing. serve() installs the graceful handlers once it runs.
    raise SystemExit(0)


def run_until_stopped(main: Coroutine[Any, Any, None]) -> None:
    """Run the process's main coroutine; refuse to start, with exit code 2, on unsafe setup.

    A stop request (SIGTERM, or Ctrl-C's SIGINT) that arrives while the process is still
    starting ends it cleanly, with status 0, like one that arrives while it serves.
    """
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _stop_while_starting)
    try:
        asyncio.run(main)
    except (InsecureKeyFile, FileNotFoundError) as exc:
        logging.getLogger("paygate").critical(
            "refusing to start", extra={"fields": {"error": str(exc)}}
        )
        raise SystemExit(EXIT_REFUSED) from None
