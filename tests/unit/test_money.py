"""parse_amount and format_amount: exact decimal text <-> integer minor units."""

from __future__ import annotations

import pytest
from paygate.common.money import format_amount, parse_amount
from paygate.errors import InvalidArgument


@pytest.mark.parametrize(
    ("text", "currency", "amount_minor"),
    [
        ("12.50", "USD", 1250),
        ("12.5", "USD", 1250),
        ("12", "USD", 1200),
        ("0.01", "USD", 1),
        ("0", "USD", 0),
        (" 7.05 ", "EUR", 705),
        ("1000", "JPY", 1000),
        ("1.234", "KWD", 1234),
        # 0.29 * 100 is 28.999999999999996 as a float: parsing must not go through floats.
        ("0.29", "USD", 29),
        ("999999999999999.99", "USD", 99_999_999_999_999_999),
    ],
)
def test_parse_amount_is_exact(text: str, currency: str, amount_minor: int) -> None:
    assert parse_amount(text, currency) == amount_minor


@pytest.mark.parametrize(
    ("text", "currency"),
    [
        ("12.505", "USD"),  # more digits than the currency has
        ("-1", "USD"),
        ("1e3", "USD"),
        ("", "USD"),
        ("   ", "USD"),
        ("1.", "USD"),
        (".5", "USD"),
        ("1,00", "USD"),
        ("NaN", "USD"),
        ("1000000000000000", "USD"),  # 16 integer digits: more than int64 cents can hold
        ("1.5", "JPY"),  # JPY has no minor unit
        ("1.0", "JPY"),
        ("1.00", "XYZ"),  # not a known currency
    ],
)
def test_parse_amount_rejects(text: str, currency: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        parse_amount(text, currency)
    assert caught.value.reason == "INVALID_ARGUMENT"


def test_parse_amount_defaults_to_usd() -> None:
    assert parse_amount("3.10") == 310


@pytest.mark.parametrize(
    ("amount_minor", "currency", "text"),
    [
        (1250, "USD", "12.50"),
        (5, "USD", "0.05"),
        (0, "USD", "0.00"),
        (-1250, "USD", "-12.50"),
        (1000, "JPY", "1000"),
        (1234, "KWD", "1.234"),
    ],
)
def test_format_amount(amount_minor: int, currency: str, text: str) -> None:
    assert format_amount(amount_minor, currency) == text


@pytest.mark.parametrize("currency", ["USD", "JPY", "KWD"])
@pytest.mark.parametrize("amount_minor", [0, 1, 99, 100, 101, 123_456_789])
def test_format_then_parse_round_trips(amount_minor: int, currency: str) -> None:
    assert parse_amount(format_amount(amount_minor, currency), currency) == amount_minor
