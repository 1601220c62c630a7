"""Where a process keeps its data: a SQLite file (the default) or a PostgreSQL URL.

The `database` key of the [gateway] and [banks.X] tables holds either a path or a
`postgresql://` URL. A PostgresUrl never shows its password: not in repr, str or logs.

Each process uses its own schema, so the gateway and the banks can share one server and
one database. The schema is the first entry of a `search_path` set in the URL's options
(`...?options=-csearch_path%3Dpaygate_gateway`), else a default chosen per process.
"""

from __future__ import annotations

import dataclasses
import pathlib
import re
import urllib.parse

SCHEMES = ("postgresql", "postgres")
# A plain lower-case identifier: it never needs quoting, so it reads the same in psql.
_SCHEMA = re.compile(r"[a-z_][a-z0-9_]{0,62}")
_SEARCH_PATH = re.compile(r"-c\s*search_path\s*=\s*([^\s,]+)")


def is_postgres_url(value: str) -> bool:
    return urllib.parse.urlsplit(value).scheme in SCHEMES


def check_schema(name: str) -> str:
    """A schema name we create and set without quoting; anything else is a config error."""
    if not _SCHEMA.fullmatch(name):
        raise ValueError(
            f"schema name {name!r} must be lower-case letters, digits and '_' (at most 63)"
        )
    return name


def default_schema(process: str) -> str:
    """The schema of a process when the URL names none: gateway, bank_a, ..."""
    return check_schema(process.replace("-", "_"))


@dataclasses.dataclass(frozen=True)
class PostgresUrl:
    """A libpq connection URL (postgresql://user:password@host:port/dbname?options)."""

    url: str = dataclasses.field(repr=False)

    def __post_init__(self) -> None:
        if not is_postgres_url(self.url):
            raise ValueError("a PostgreSQL URL starts with postgresql://")

    def __repr__(self) -> str:
        return f"PostgresUrl({self.redacted()!r})"

    def __str__(self) -> str:
        return self.redacted()

    def redacted(self) -> str:
        """The URL with any password replaced by ***, for logs and messages."""
        parts = urllib.parse.urlsplit(self.url)
        if parts.password is None:
            return self.url
        netloc = parts.netloc.rpartition("@")
        user = netloc[0].partition(":")[0]
        return urllib.parse.urlunsplit(parts._replace(netloc=f"{user}:***@{netloc[2]}"))

    @property
    def schema(self) -> str | None:
        """The schema named by `-c search_path=...` in the URL's options, if any."""
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.url).query)
        for options in query.get("options", []):
            match = _SEARCH_PATH.search(options)
            if match:
                return check_schema(match.group(1).split(",")[0].strip('"'))
        return None

    def schema_or(self, default: str) -> str:
        return self.schema or default


DatabaseLocation = pathlib.Path | PostgresUrl


def database_location(value: object, base: pathlib.Path) -> DatabaseLocation:
    """A config value as a database: a URL as is, a path resolved against `base`."""
    text = str(value)
    if is_postgres_url(text):
        return PostgresUrl(text)
    path = pathlib.Path(text).expanduser()
    return path if path.is_absolute() else base / path
