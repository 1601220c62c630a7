"""SQL written once for SQLite and PostgreSQL: tables declared once, statements compiled twice.

A table is declared once, as a `Table`: its columns in order, each with the field of the
domain record it holds. The select lists, the INSERT values and the mapping of a row to a
record are built from that declaration, so a column and its field are named together in
exactly one place, and a row becomes a record in exactly one place.

A statement is written once, with named parameters (`WHERE payment_id = :payment_id`), and
compiled at import by each `Dialect` into its driver's positional form: `?` for sqlite3,
`%s` for psycopg, one placeholder per occurrence of a name. Both drivers then take a plain
tuple, which `Statement.args` builds from values given by name. What really differs between
the two databases (row locks, bounded deletes, exact bank-wide sums, the time of a write)
is a property of the dialect, named where a statement uses it.
"""

from __future__ import annotations

import dataclasses
import operator
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Generic, Protocol, TypeVar

from paygate.common.invariants import check

R = TypeVar("R")
Values = Mapping[str, object]
Row = Sequence[Any]

NO_VALUES: Values = {}
# A named parameter: `:name`, but not the second colon of PostgreSQL's `::` cast.
_PARAMETER = re.compile(r"(?<![:\w]):([A-Za-z_]\w*)")
# SQLite's SUM fails past a signed 64-bit integer, and a bank's total can pass it (each
# account may hold up to ledger.MAX_BALANCE_MINOR, and there may be many). So on SQLite an
# exact sum is taken in two parts, the quotient and the remainder of each value by
# SUM_SPLIT, which cannot overflow below a billion rows, and the parts are joined in Python.
SUM_SPLIT = 10**9


class Statement:
    """One statement in one dialect: its text, and its parameters' names in order."""

    __slots__ = ("args", "names", "text")

    def __init__(self, text: str, names: Sequence[str]) -> None:
        self.text = text
        self.names = tuple(names)
        # The positional values for named ones, at C speed: an itemgetter returns a bare
        # value for one name, so that case gets a tuple of its own.
        self.args: Callable[[Values], tuple[Any, ...]]
        if not names:
            self.args = lambda values: ()
        elif len(names) == 1:
            name = names[0]
            self.args = lambda values: (values[name],)
        else:
            self.args = operator.itemgetter(*names)

    def __repr__(self) -> str:
        return f"Statement({self.text!r})"


@dataclasses.dataclass(frozen=True)
class Dialect:
    """How one database spells what the two do differently."""

    name: str
    placeholder: str  # the driver's positional placeholder
    doubles_percent: bool  # whether a literal `%` must be written `%%`
    for_update: str  # a write transaction's lock on the rows it reads (none on SQLite)
    for_share: str  # a lock that only keeps the rows read from changing (none on SQLite)
    skip_locked: str  # a row lock that skips rows another transaction holds
    bytewise: str  # the collation that orders text as Python does
    now: str  # the time of a write, as an ISO 8601 text or timestamp
    row_address: str  # a row's physical address, for bounded deletes
    split_sums: bool  # exact sums in two parts (see SUM_SPLIT)
    has_lastrowid: bool  # the cursor holds an INSERT's generated id

    def compile(self, sql: str) -> Statement:
        """`sql`, written with :name parameters, in this dialect."""
        names = _PARAMETER.findall(sql)
        if self.doubles_percent:  # psycopg reads a lone `%` as the start of a placeholder
            sql = sql.replace("%", "%%")
        return Statement(_PARAMETER.sub(self.placeholder, sql), names)

    def returning(self, column: str) -> str:
        """What ends an INSERT of one row for the row's generated id: none where the cursor
        holds it (a RETURNING clause costs SQLite a quarter of such an insert)."""
        return "" if self.has_lastrowid else f" RETURNING {column}"

    def bounded_delete(self, table: str, where: str) -> Statement:
        """Delete up to :limit rows of `table` matching `where`: housekeeping's bounded
        delete. Table and condition are the stores' constants, never input."""
        address = self.row_address
        rows = f"SELECT {address} FROM {table} WHERE {where} LIMIT :limit"
        if address == "ctid":  # = ANY(ARRAY(...)) lets PostgreSQL fetch the rows by address
            return self.compile(f"DELETE FROM {table} WHERE ctid = ANY(ARRAY({rows}))")
        return self.compile(f"DELETE FROM {table} WHERE {address} IN ({rows})")

    def exact_sum(self, expression: str) -> str:
        """The column(s) of an exact sum of `expression`, never NULL; `joined_sums` makes
        them ints."""
        if self.split_sums:
            return (
                f"COALESCE(SUM(({expression}) / {SUM_SPLIT}), 0),"
                f" COALESCE(SUM(({expression}) % {SUM_SPLIT}), 0)"
            )
        return f"COALESCE(SUM({expression}), 0)"

    def joined_sums(self, columns: Sequence[Any]) -> list[int]:
        """The sums of a row of exact_sum columns. SQLite's integer `/` truncates toward
        zero and `%` takes the dividend's sign, so q * SUM_SPLIT + r is exact for negative
        values too. PostgreSQL sums BIGINT as NUMERIC: exact, brought back to int."""
        if self.split_sums:
            return [
                int(q) * SUM_SPLIT + int(r)
                for q, r in zip(columns[0::2], columns[1::2], strict=True)
            ]
        return [int(value) for value in columns]


SQLITE = Dialect(
    name="sqlite",
    placeholder="?",
    doubles_percent=False,
    for_update="",  # one writer at a time: what a write transaction reads stays put
    for_share="",
    skip_locked="",
    bytewise="",  # BINARY, the default
    now="strftime('%Y-%m-%dT%H:%M:%f+00:00', 'now')",
    row_address="rowid",
    split_sums=True,
    has_lastrowid=True,
)
POSTGRES = Dialect(
    name="postgres",
    placeholder="%s",
    doubles_percent=True,
    for_update=" FOR UPDATE",
    for_share=" FOR SHARE",
    skip_locked=" FOR UPDATE SKIP LOCKED",
    bytewise=' COLLATE "C"',
    now="now()",
    row_address="ctid",
    split_sums=False,
    has_lastrowid=False,
)


@dataclasses.dataclass(frozen=True)
class Column:
    """A column and the field of the record it holds; `load` makes the driver's value the
    field's type (an enum from its text, a bool from SQLite's 0 or 1), `dump` the field's
    value the driver's (a str enum as a plain str, which sqlite3 binds faster)."""

    name: str
    field: str = ""
    load: Callable[[Any], Any] | None = None
    dump: Callable[[Any], Any] | None = None


class Table(Generic[R]):
    """A table's columns in order, each with its record's field: the one place that maps
    the table's rows to records of type R (a dataclass with exactly those fields)."""

    def __init__(self, name: str, record: Callable[..., R], columns: Sequence[str | Column]):
        declared = [c if isinstance(c, Column) else Column(c) for c in columns]
        self.name = name
        self.width = len(declared)
        self.column_names = tuple(c.name for c in declared)
        self.fields = tuple(c.field or c.name for c in declared)
        check(self.width >= 2, f"table {name}: declare two columns or more")
        self._record = record
        self._loads = tuple((c.field or c.name, c.load) for c in declared if c.load)
        self._dumps = tuple((c.name, c.dump) for c in declared if c.dump)
        self._get = operator.attrgetter(*self.fields)
        # "a, b, c" and ":a, :b, :c", for SELECT and INSERT statements.
        self.columns = ", ".join(self.column_names)
        self.params = ", ".join(f":{name}" for name in self.column_names)
        init = [f for f in dataclasses.fields(record) if f.init]  # type: ignore[arg-type]
        check(
            sorted(f.name for f in init) == sorted(self.fields),
            f"table {name}: columns for {self.fields}, record fields {[f.name for f in init]}",
        )
        # The record in a row of exactly the table's columns, selected in their order (a
        # record that takes the values as they come is made from them directly).
        positional = [f.name for f in init if not f.kw_only] == list(self.fields)
        self.from_row: Callable[[Row], R] = (
            self._from_values if positional and not self._loads else self._from_named
        )

    def qualified(self, alias: str) -> str:
        """The select list with each column prefixed by a table alias."""
        return ", ".join(f"{alias}.{name}" for name in self.column_names)

    def _from_values(self, row: Row) -> R:
        return self._record(*row)

    def _from_named(self, row: Row) -> R:
        values = dict(zip(self.fields, row, strict=True))
        for field, load in self._loads:
            values[field] = load(values[field])
        return self._record(**values)

    def values(self, record: R) -> dict[str, object]:
        """The record's values by column name, for `params`."""
        values = dict(zip(self.column_names, self._get(record), strict=False))
        for column, dump in self._dumps:
            values[column] = dump(values[column])
        return values


class Cursor(Protocol):
    def fetchone(self) -> Any: ...
    def fetchall(self) -> Any: ...


class Connection(Protocol):
    """A synchronous connection: sqlite3's, or psycopg's in a worker thread."""

    def execute(self, sql: str, params: tuple[Any, ...], /) -> Cursor: ...


class Database(Protocol):
    async def open(self) -> None: ...
    async def close(self) -> None: ...
    async def healthy(self) -> bool: ...


class OnDatabase:
    """A store whose life is its database's: opened, closed and probed with it."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def open(self) -> None:
        await self._db.open()

    async def close(self) -> None:
        await self._db.close()

    async def healthy(self) -> bool:
        return await self._db.healthy()
