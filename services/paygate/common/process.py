"""Running a server process: start-up refusals are reported as one clear log line."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

from paygate.common.tls import InsecureKeyFile

EXIT_REFUSED = 2


def run_until_stopped(main: Coroutine[Any, Any, None]) -> None:
    """Run the process's main coroutine; refuse to start, with exit code 2, on unsafe setup."""
    try:
        asyncio.run(main)
    except (InsecureKeyFile, FileNotFoundError) as exc:
        logging.getLogger("paygate").critical(
            "refusing to start", extra={"fields": {"error": str(exc)}}
        )
        raise SystemExit(EXIT_REFUSED) from None
