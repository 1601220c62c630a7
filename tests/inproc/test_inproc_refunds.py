"""Refunds in-process: the suite tier's partial refunds and refusals (tests/test_refunds.py)
run unchanged against this tier's servers, so that RefundPayment and ListRefunds are
answered and refused here too (test_zz_every_rpc.py)."""

from __future__ import annotations

from test_refunds import (  # noqa: F401 (fixtures and tests collected from this module)
    channel,
    test_every_refusal_says_why_and_keys_replay,
    test_partial_refunds_up_to_the_amount_paid_and_not_a_cent_more,
)
