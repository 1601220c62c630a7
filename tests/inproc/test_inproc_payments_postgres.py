"""The in-process payment tests again, with the gateway and the three banks on PostgreSQL.

The tests are test_inproc_payments.py's own functions, imported here: pytest collects them in
this module too, where the `suite` fixture below (servers of its own whose stores keep their
data in fresh schemas of the server at PAYGATE_TEST_POSTGRES_URL) overrides the SQLite one.
The schemas are dropped when the module is done. Without a reachable server every test here
is skipped, with the reason. (The tests that need processes: tests/test_payments_postgres.py.)
"""

from __future__ import annotations

import pathlib
from collections.abc import Iterator

import grpc
import psycopg
import pytest
import test_inproc_payments
from paygate.common.database_url import PostgresUrl
from pgtest import Schemas, require_postgres
from servers import Servers
from suite import BANKS, GATEWAY
from users import new_user

channel = test_inproc_payments.channel
# Every test of test_inproc_payments.py, under the same name (parametrizations included).
globals().update(
    {
        name: getattr(test_inproc_payments, name)
        for name in dir(test_inproc_payments)
        if name.startswith("test_")
    }
)


@pytest.fixture(scope="module")
def suite(tmp_path_factory: pytest.TempPathFactory, certs_dir: pathlib.Path) -> Iterator[Servers]:
    schemas = Schemas(require_postgres())
    try:
        urls = {program: schemas.url_for(program).url for program in (GATEWAY, *BANKS)}
        servers = Servers.start(
            tmp_path_factory.mktemp("inproc-postgres"), certs_dir, database_urls=urls
        )
        try:
            yield servers
        finally:
            servers.stop()
    finally:
        schemas.close()


def test_the_servers_keep_their_data_in_postgresql(suite: Servers, channel: grpc.Channel) -> None:
    user = new_user(suite, channel, "bank-b", 3_00)
    assert not list(suite.config.var_dir.glob("*.db")), "no server fell back to SQLite"
    gateway_url = suite.config.gateway.database
    bank_url = suite.config.banks["bank-b"].database
    assert isinstance(gateway_url, PostgresUrl) and isinstance(bank_url, PostgresUrl)
    with psycopg.connect(gateway_url.url) as conn:
        row = conn.execute("SELECT bank_id FROM users WHERE username = %s", (user.username,))
        assert row.fetchone() == ("bank-b",)
    with psycopg.connect(bank_url.url) as conn:
        row = conn.execute(
            "SELECT balance FROM accounts WHERE account_number = %s", (user.account_number,)
        )
        assert row.fetchone() == (3_00,)
