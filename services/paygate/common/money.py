"""Money: integer minor units, ISO-4217 currencies, exact decimal parsing.

Amounts are never floats. Text typed by people ("12.50") is parsed with a regular
expression into an int of minor units; anything that is not exactly representable is
rejected rather than rounded.
"""

from __future__ import annotations

import re

from paygate.errors import InvalidArgument

# The most one amount may be anywhere: a payment, a leg of a bank transaction, a deposit, an
# opening balance (10,000,000,000,000.00 in a currency of two decimals).
MAX_AMOUNT_MINOR = 10**15

# ISO-4217 codes accepted by Paygate, with the number of digits after the decimal point.
MINOR_UNIT_DIGITS: dict[str, int] = {
    "USD": 2,
    "EUR": 2,
    "GBP": 2,
    "CHF": 2,
    "CAD": 2,
    "AUD": 2,
    "SEK": 2,
    "NOK": 2,
    "DKK": 2,
    "PLN": 2,
    "INR": 2,
    "JPY": 0,
    "KRW": 0,
    "KWD": 3,
    "BHD": 3,
}

DEFAULT_CURRENCY = "USD"
_DECIMAL = re.compile(r"^(?P<units>[0-9]{1,15})(?:\.(?P<fraction>[0-9]+))?$")


def check_currency(currency: str) -> str:
    if currency not in MINOR_UNIT_DIGITS:
        raise InvalidArgument(
            f"unknown currency {currency!r}: expected an ISO-4217 code such as 'USD'"
        )
    return currency


def parse_amount(text: str, currency: str = DEFAULT_CURRENCY) -> int:
    """Parse decimal text in the currency's major unit ("12.50") into minor units (1250)."""
    digits = MINOR_UNIT_DIGITS[check_currency(currency)]
    match = _DECIMAL.match(text.strip())
    if match is None and text.strip().startswith("-"):
        raise InvalidArgument(f"amount {text!r} is negative: amounts are positive")
    if match is None:
        raise InvalidArgument(f"amount {text!r} is not a decimal number such as 12.50")
    fraction = match.group("fraction") or ""
    if len(fraction) > digits:
        raise InvalidArgument(
            f"amount {text!r} has more than {digits} digits after the point for {currency}"
        )
    # int ** int is typed Any (a negative exponent gives a float); digits is never negative.
    scale: int = 10**digits
    return int(match.group("units")) * scale + int(fraction.ljust(digits, "0") or "0")


def format_amount(amount_minor: int, currency: str = DEFAULT_CURRENCY) -> str:
    """Format minor units as decimal text in the major unit: 1250 -> "12.50"."""
    digits = MINOR_UNIT_DIGITS.get(currency, 2)
    sign = "-" if amount_minor < 0 else ""
    units, fraction = divmod(abs(amount_minor), 10**digits)
    if digits == 0:
        return f"{sign}{units}"
    return f"{sign}{units}.{fraction:0{digits}d}"
