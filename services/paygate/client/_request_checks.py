"""What the client refuses before sending: a request that could not even be encoded, or
that the gateway is sure to refuse for its shape. The gateway checks the rest."""

from __future__ import annotations

from paygate.client._models import INVALID_RESPONSE
from paygate.errors import InvalidArgument, PaygateError

MAX_AMOUNT_MINOR = 2**63 - 1  # the request's int64 field; the gateway's own limit is lower
KEY_MAX_LENGTH = 255  # the gateway's limit on an idempotency key


DEFAULT_PAGE_SIZE = 20  # what a list call asks for when not told


def check_payment_fields(
    payee_username: object, amount_minor: object, currency: object, description: object,
    idempotency_key: object,
) -> None:
    """Refuse, with InvalidArgument, a payment that could not be sent as a request at all.

    The gateway checks the rest (its names, currencies and amount limit): those answers are
    final, and a queued payment that gets one is recorded as failed.
    """
    if isinstance(amount_minor, bool) or not isinstance(amount_minor, int):
        raise InvalidArgument(
            f"amount_minor must be a whole number of minor units (cents), not {amount_minor!r}"
        )
    if not 0 < amount_minor <= MAX_AMOUNT_MINOR:
        raise InvalidArgument(f"amount_minor must be positive, not {amount_minor}")
    fields = {"payee_username": payee_username, "currency": currency, "description": description}
    for name, value in fields.items():
        if not isinstance(value, str):
            raise InvalidArgument(f"{name} must be a string, not {type(value).__name__}")
    if not payee_username:
        raise InvalidArgument("payee_username is required")
    _check_key(idempotency_key)


def check_capture_fields(
    payment_id: object, amount_minor: object, idempotency_key: object
) -> None:
    """Refuse, with InvalidArgument, a capture or cancellation that could not be sent;
    `amount_minor` None (or a cancellation's) stands for the whole authorization."""
    if not isinstance(payment_id, str) or not payment_id:
        raise InvalidArgument("payment_id must be a non-empty string")
    if amount_minor is not None:
        if isinstance(amount_minor, bool) or not isinstance(amount_minor, int):
            raise InvalidArgument(
                f"amount_minor must be a whole number of minor units (cents), not {amount_minor!r}"
            )
        # 0 would mean "all" to the gateway: whoever means all says None.
        if not 0 < amount_minor <= MAX_AMOUNT_MINOR:
            raise InvalidArgument(
                f"amount_minor must be positive (None captures all), not {amount_minor}"
            )
    _check_key(idempotency_key)


def _check_key(idempotency_key: object) -> None:
    if (
        not isinstance(idempotency_key, str)
        or not 0 < len(idempotency_key) <= KEY_MAX_LENGTH
        or not idempotency_key.isprintable()
    ):
        raise InvalidArgument(
            f"idempotency_key must be 1 to {KEY_MAX_LENGTH} printable characters"
        )


def checked_next_page_token(current: str, received: str) -> str:
    """The next page's token, refusing one that would fetch the same page forever."""
    if received and received == current:
        raise PaygateError("gateway returned the same page token again", reason=INVALID_RESPONSE)
    return received
