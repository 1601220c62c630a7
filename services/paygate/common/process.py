"""Running a server process: start-up refusals are reported as one clear log line."""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
from collections.abc import Coroutine
from typing import Any

from paygate.common.tls import InsecureKeyFile

EXIT_REFUSED = 2
# The cycle collector's thresholds: the youngest generation every 20,000 allocations net of
# frees (CPython's default is 700), the older ones every 20 collections of the one below
# (default 10). A server call allocates thousands of short-lived objects; collecting them
# in bulk took ~15 % off the gateway's CPU per payment (docs/performance.md, "What was
# tried").
GC_THRESHOLDS = (20_000, 20, 20)


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
    tune_gc()
    try:
        asyncio.run(main)
    except (InsecureKeyFile, FileNotFoundError) as exc:
        logging.getLogger("paygate").critical(
            "refusing to start", extra={"fields": {"error": str(exc)}}
        )
        raise SystemExit(EXIT_REFUSED) from None


def tune_gc() -> None:
    """Leave what start-up allocated (modules, classes) out of every later collection, and
    collect the rest in larger, rarer passes (GC_THRESHOLDS). Memory stays bounded: the
    collector still runs, only less often."""
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
