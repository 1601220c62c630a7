"""The in-process split payment tests again, with the gateway and the three banks on
PostgreSQL (test_inproc_split_payments.py's own functions, imported here, as
test_inproc_bulk_payments_postgres.py does). Without a reachable server every test here is
skipped, with the reason.
"""

from __future__ import annotations

import test_inproc_payments_postgres
import test_inproc_split_payments

channel = test_inproc_split_payments.channel
suite = test_inproc_payments_postgres.suite
globals().update(
    {
        name: getattr(test_inproc_split_payments, name)
        for name in dir(test_inproc_split_payments)
        if name.startswith("test_")
    }
)
