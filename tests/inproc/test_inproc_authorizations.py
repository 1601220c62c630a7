"""Authorizations in-process: the suite tier's tests (tests/test_authorizations.py) run
unchanged against this tier's servers, so that CapturePayment and CancelPayment are
answered and refused here too (test_zz_every_rpc.py)."""

from __future__ import annotations

from test_authorizations import (  # noqa: F401 (fixtures, helpers and tests collected here)
    authorize,
    cancel,
    capture,
    channel,
    refusal,
    test_a_cancellation_releases_everything,
    test_a_capture_and_a_cancellation_answer_again_for_their_keys,
    test_a_capture_of_zero_takes_everything_within_one_bank_too,
    test_a_partial_capture_moves_that_amount_and_releases_the_rest_at_both_banks,
    test_an_authorization_holds_the_money_and_moves_nothing,
    test_refusals_say_why_and_change_nothing,
)
