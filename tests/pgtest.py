"""PostgreSQL for tests: the server named by PAYGATE_TEST_POSTGRES_URL, and throwaway schemas.

    PAYGATE_TEST_POSTGRES_URL=postgresql://postgres@127.0.0.1:5432/postgres pytest

Tests that need the server call `require_postgres()`, which skips them with the reason when
the variable is unset or the server does not answer. Every schema a test makes comes from
`Schemas`, is named pgtest_<random>_<name>, and is dropped when the Schemas is closed.
"""

from __future__ import annotations

import os
import urllib.parse
import uuid

import psycopg
import pytest
from paygate.common.database_url import PostgresUrl
from paygate.common.postgres import drop_schema

POSTGRES_URL_ENV = "PAYGATE_TEST_POSTGRES_URL"
CONNECT_TIMEOUT_S = 3
EXAMPLE_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


def postgres_url() -> tuple[PostgresUrl | None, str]:
    """The test server's URL if it answers, else None and why not."""
    value = os.environ.get(POSTGRES_URL_ENV, "")
    if not value:
        return None, f"{POSTGRES_URL_ENV} is not set (e.g. {EXAMPLE_URL})"
    url = PostgresUrl(value)
    try:
        with psycopg.connect(url.url, connect_timeout=CONNECT_TIMEOUT_S) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        return None, f"PostgreSQL at {url} ({POSTGRES_URL_ENV}) is not reachable: {exc}"
    return url, ""


def require_postgres() -> PostgresUrl:
    url, reason = postgres_url()
    if url is None:
        pytest.skip(reason)
    return url


def with_schema(url: PostgresUrl, schema: str) -> PostgresUrl:
    """The URL with `options=-csearch_path=SCHEMA` in its query, the way a config names one."""
    parts = urllib.parse.urlsplit(url.url)
    query = urllib.parse.parse_qsl(parts.query)
    query = [(k, v) for k, v in query if k != "options"] + [("options", f"-csearch_path={schema}")]
    return PostgresUrl(urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query))))


class Schemas:
    """Fresh schemas on the test server, all dropped by close()."""

    def __init__(self, url: PostgresUrl) -> None:
        self.url = url
        self.run = uuid.uuid4().hex[:8]
        self.made: list[str] = []

    def new(self, name: str) -> str:
        schema = f"pgtest_{self.run}_{len(self.made)}_{name.replace('-', '_')}"
        self.made.append(schema)
        return schema

    def url_for(self, name: str) -> PostgresUrl:
        return with_schema(self.url, self.new(name))

    def close(self) -> None:
        for schema in self.made:
            drop_schema(self.url, schema)
        self.made.clear()
