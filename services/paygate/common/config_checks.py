"""Checks of what a configuration file sets, each raising ConfigError with the key's name.

config.py decides what is checked (which keys exist, which numbers may be 0); this module
knows how: a setting's TOML value against its dataclass field's type, numbers against
their bounds, addresses against HOST:PORT. A process refuses to start on the first
failure (exit status 2), before it opens anything.
"""

from __future__ import annotations

import dataclasses
import math
import pathlib
import re
import types
import typing
from collections.abc import Collection, Mapping
from typing import Any

from paygate.common.database_url import PostgresUrl

# What a file's value must be, by the field's type (None is never written in TOML: an
# optional field set in the file has its type). Paths and database locations are strings.
_KINDS: dict[Any, type] = {
    bool: bool,
    int: int,
    float: float,
    str: str,
    pathlib.Path: str,
    PostgresUrl: str,
}
_WANTED = {bool: "true or false", int: "a whole number", float: "a number", str: "a string"}
MAX_PORT = 65535
AMQP_SCHEMES = ("amqp://", "amqps://")
# An exchange name as RabbitMQ takes it, without the `amq.` prefix it reserves.
_EXCHANGE = re.compile(r"(?!amq\.)[A-Za-z0-9_.:-]{1,127}")


class ConfigError(ValueError):
    """A configuration the processes cannot run with; the message names the key."""


def kind_of(expected: Any) -> type:
    """The TOML kind a field of type `expected` takes (a programmer error if none)."""
    members = [k for k in typing.get_args(expected) if k is not types.NoneType] or [expected]
    for member in members:
        if member in _KINDS:
            return _KINDS[member]
    raise TypeError(f"no configuration kind for fields of type {expected!r}")


def check_value(where: str, value: Any, expected: Any) -> None:
    """The value, as TOML gives it, fits the field's type; a bool is not a whole number,
    a whole number is a number, and a number is finite."""
    kind = kind_of(expected)
    if kind is bool:
        fits = isinstance(value, bool)
    elif kind is float:
        fits = isinstance(value, (int, float)) and not isinstance(value, bool)
    else:
        fits = isinstance(value, kind) and not isinstance(value, bool)
    if not fits:
        raise ConfigError(f"{where} must be {_WANTED[kind]}, not {value!r}")
    if kind is float and not math.isfinite(value):
        raise ConfigError(f"{where} must be a finite number, not {value!r}")


def check_table(
    section: str, table: Any, cls: type, *, set_by_code: Collection[str]
) -> Mapping[str, Any]:
    """Every key of the table is a field of cls that the file may set, of its type."""
    if not isinstance(table, Mapping):
        raise ConfigError(f"[{section}] must be a table, not {table!r}")
    hints = typing.get_type_hints(cls)
    settable = {f.name for f in dataclasses.fields(cls)} - set(set_by_code)
    for key, value in table.items():
        if key not in settable:
            raise ConfigError(
                f"[{section}] has no setting {key!r}; it has: {', '.join(sorted(settable))}"
            )
        check_value(f"[{section}] {key}", value, hints[key])
    return table


def check_bounds(where: str, value: float, least: float, most: float | None = None) -> None:
    if value < least or (most is not None and value > most):
        bounds = (
            f"at least {_number(least)}"
            if most is None
            else f"from {_number(least)} to {_number(most)}"
        )
        raise ConfigError(f"{where} must be {bounds}, not {value!r}")


def _number(value: float) -> str:
    """A bound as written: 1000000000000000, not 1e+15; 0.5, not 0.500000."""
    return str(value) if isinstance(value, int) else f"{value:g}"


def check_positive(where: str, value: float) -> None:
    if not value > 0:
        raise ConfigError(f"{where} must be above 0, not {value!r}")


def check_address(where: str, value: str) -> None:
    """HOST:PORT, the port from 0 (a free one) to 65535; the host may be empty (all)."""
    host, colon, port = value.rpartition(":")
    if not colon or not port.isdigit() or int(port) > MAX_PORT or " " in host:
        raise ConfigError(f"{where} must be HOST:PORT (a port from 0 to 65535), not {value!r}")


def check_amqp_url(where: str, value: str) -> None:
    """An AMQP URL; the message never repeats it (it may hold a password)."""
    if not value.startswith(AMQP_SCHEMES):
        raise ConfigError(f"{where} must start with amqp:// or amqps://")


def check_exchange(where: str, value: str) -> None:
    if not _EXCHANGE.fullmatch(value):
        raise ConfigError(
            f"{where} must be 1 to 127 letters, digits, '_', '.', ':' or '-', not starting"
            f" with 'amq.', not {value!r}"
        )
