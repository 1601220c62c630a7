"""common/sql.py: a statement written once with named parameters, in each driver's form, and
a table declared once, mapping its rows to records and back."""

from __future__ import annotations

import dataclasses
import enum
import sqlite3

import pytest
from paygate.common.invariants import InvariantViolation
from paygate.common.sql import POSTGRES, SQLITE, Column, Table


def test_a_statement_takes_its_values_by_name_in_either_dialect() -> None:
    text = (
        "UPDATE t SET owner = :owner, n = n % 2 WHERE x::BIGINT > :low"
        " AND (owner IS NULL OR owner = :owner)"
    )
    lite, pg = SQLITE.compile(text), POSTGRES.compile(text)
    assert lite.names == pg.names == ("owner", "low", "owner")
    assert lite.text == (
        "UPDATE t SET owner = ?, n = n % 2 WHERE x::BIGINT > ? AND (owner IS NULL OR owner = ?)"
    )
    assert pg.text == (
        "UPDATE t SET owner = %s, n = n %% 2 WHERE x::BIGINT > %s"
        " AND (owner IS NULL OR owner = %s)"
    )
    assert lite.args({"low": 5, "owner": "g", "unused": 0}) == ("g", 5, "g")
    assert SQLITE.compile("SELECT :one").args({"one": 1}) == (1,)
    assert SQLITE.compile("SELECT 1").args({}) == ()
    with pytest.raises(KeyError, match="low"):
        lite.args({"owner": "g"})


def test_sqlite_runs_a_compiled_statement() -> None:
    statement = SQLITE.compile("SELECT :b - :a, :a")
    with sqlite3.connect(":memory:") as conn:
        assert conn.execute(statement.text, statement.args({"a": 1, "b": 5})).fetchone() == (4, 1)


class Colour(enum.StrEnum):
    RED = "red"


@dataclasses.dataclass(frozen=True, kw_only=True)
class Paint:
    name: str
    colour: Colour
    amount_minor: int
    dry: bool = False


PAINTS = Table(
    "paints",
    Paint,
    (
        "name",
        Column("colour", load=Colour, dump=str),
        Column("amount", field="amount_minor"),
        Column("dry", load=bool),
    ),
)


def test_a_table_maps_its_rows_to_records_and_back() -> None:
    assert PAINTS.columns == "name, colour, amount, dry"
    assert PAINTS.params == ":name, :colour, :amount, :dry"
    assert PAINTS.qualified("p") == "p.name, p.colour, p.amount, p.dry"
    paint = Paint(name="n", colour=Colour.RED, amount_minor=5, dry=True)
    values = PAINTS.values(paint)
    assert values == {"name": "n", "colour": "red", "amount": 5, "dry": True}
    assert type(values["colour"]) is str
    assert PAINTS.from_row(("n", "red", 5, 1)) == paint
    with pytest.raises(ValueError, match="zip"):
        PAINTS.from_row(("n", "red", 5))


def test_a_table_declares_every_field_of_its_record() -> None:
    @dataclasses.dataclass(frozen=True)
    class Point:
        x: int
        y: int

    assert Table("points", Point, ("x", "y")).from_row((1, 2)) == Point(1, 2)
    with pytest.raises(InvariantViolation, match="record fields"):
        Table("points", Point, ("x", "z"))
