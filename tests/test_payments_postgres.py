"""The payment suite again, with the gateway and the three banks on PostgreSQL.

(The payment tests that need no process to pause or die run in-process, on PostgreSQL too:
tests/inproc/test_inproc_payments_postgres.py.)

The tests are test_payments.py's own functions, imported here: pytest collects them in this
module too, where the `suite` fixture below (a suite of its own whose four processes keep
their data in fresh schemas of the server at PAYGATE_TEST_POSTGRES_URL) overrides the
shared SQLite suite. The schemas are dropped when the module is done. Without a reachable
server every test here is skipped, with the reason.
"""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import psycopg
import pytest
import test_payments
from paygate.common.database_url import PostgresUrl
from pgtest import Schemas, require_postgres
from suite import BANKS, GATEWAY, Suite
from users import new_user

pytestmark = pytest.mark.suite

channel = test_payments.channel
# Every test of test_payments.py, under the same name (parametrizations included).
globals().update(
    {name: getattr(test_payments, name) for name in dir(test_payments) if name.startswith("test_")}
)


@pytest.fixture(scope="module")
def suite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Suite]:
    schemas = Schemas(require_postgres())
    try:
        urls = {program: schemas.url_for(program).url for program in (GATEWAY, *BANKS)}
        started = Suite.start(tmp_path_factory.mktemp("suite-postgres"), database_urls=urls)
        try:
            yield started
        finally:
            started.stop()
    finally:
        schemas.close()


def test_the_processes_keep_their_data_in_postgresql(suite: Suite, channel: grpc.Channel) -> None:
    user = new_user(suite, channel, "bank-b", 3_00)
    assert not list(suite.config.var_dir.glob("*.db")), "no process fell back to SQLite"
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
