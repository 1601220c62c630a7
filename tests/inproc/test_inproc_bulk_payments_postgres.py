"""The in-process bulk payout tests again, with the gateway and the three banks on PostgreSQL
(each item's writes commit on their own there, instead of SQLite's group commits).

The tests are test_inproc_bulk_payments.py's own functions, imported here, as
test_inproc_payments_postgres.py does for payments; the `suite` fixture is that module's.
Without a reachable server every test here is skipped, with the reason.
"""

from __future__ import annotations

import test_inproc_bulk_payments
import test_inproc_payments_postgres

channel = test_inproc_bulk_payments.channel
suite = test_inproc_payments_postgres.suite
# Every test of test_inproc_bulk_payments.py, under the same name (parametrizations included).
globals().update(
    {
        name: getattr(test_inproc_bulk_payments, name)
        for name in dir(test_inproc_bulk_payments)
        if name.startswith("test_")
    }
)
