"""The servers' entry points: a stop request is honoured from the process's first instant.

supervisord may ask a program to stop while it is still importing its modules (a `make
stop` right after `make run`, on a busy machine): with Python's default SIGTERM the program
would die "terminated by SIGTERM", which looks like a crash. These entry points install a
handler that exits cleanly (status 0) before importing anything heavy; the program's own
handlers replace it once it runs (common/process.py, then serve()).
"""

from __future__ import annotations

import signal
from types import FrameType


def _stop_while_importing(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)


def _stoppable() -> None:
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _stop_while_importing)


def gateway() -> None:
    _stoppable()
    from paygate.gateway.main import main  # noqa: PLC0415  (after the handler, on purpose)

    main()


def bank() -> None:
    _stoppable()
    from paygate.bank.main import main  # noqa: PLC0415  (after the handler, on purpose)

    main()


def relay() -> None:
    _stoppable()
    from paygate.relay.main import main  # noqa: PLC0415  (after the handler, on purpose)

    main()
