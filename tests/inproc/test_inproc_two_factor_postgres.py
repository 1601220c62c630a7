"""Two-factor login with the gateway on PostgreSQL: what its tables keep of a TOTP secret.

The gateway runs in this process (tests/inproc) with its data in a fresh schema of the
server at PAYGATE_TEST_POSTGRES_URL (the banks on SQLite); without a reachable server the
test is skipped, with the reason. A user turns two-factor login on through the gateway's
RPCs, then every row of every table of the gateway's schema, as text, is searched: the
user's name is there, the base32 secret and the recovery codes are not. (The SQLite file
is searched by tests/inproc/test_inproc_two_factor.py and, under supervisord, by
tests/test_account_security.py; the store alone by tests/test_store_contract_security.py.)
"""

from __future__ import annotations

import pathlib
from collections.abc import Iterator

import pytest
from gateway_calls import RPC_TIMEOUT_S, bearer, login, register
from paygate.common.database_url import PostgresUrl
from paygate.gen.paygate.v1 import gateway_pb2 as pb
from paygate.gen.paygate.v1 import gateway_pb2_grpc as pbg
from pgtest import Schemas, require_postgres
from servers import Servers
from suite import GATEWAY
from totp_clock import set_clock
from totp_codes import rfc6238
from two_factor_db import gateway_database_text, secrets_in
from users import ISSUED_RECOVERY_CODES, ISSUED_TOTP_SECRETS, PASSWORD, unique_name


@pytest.fixture(scope="module")
def suite(tmp_path_factory: pytest.TempPathFactory, certs_dir: pathlib.Path) -> Iterator[Servers]:
    schemas = Schemas(require_postgres())
    try:
        servers = Servers.start(
            tmp_path_factory.mktemp("inproc-2fa-postgres"),
            certs_dir,
            database_urls={GATEWAY: schemas.url_for(GATEWAY).url},
        )
        try:
            yield servers
        finally:
            servers.stop()
    finally:
        schemas.close()


def test_the_gateway_tables_hold_no_totp_secret_or_recovery_code_in_clear(
    servers: Servers,
) -> None:
    database = servers.config.gateway.database
    assert isinstance(database, PostgresUrl), "the gateway must keep its data in PostgreSQL"
    name = unique_name("mfa")
    with servers.gateway_channel_sync() as channel, set_clock(servers) as clock:
        stub = pbg.GatewayServiceStub(channel)
        register(stub, name, servers.admin_open_account("bank-a", 1_00))
        token = login(stub, name)
        enrolled = stub.EnrollTotp(
            pb.EnrollTotpRequest(password=PASSWORD), metadata=bearer(token), timeout=RPC_TIMEOUT_S
        )
        ISSUED_TOTP_SECRETS.append(enrolled.secret)
        confirmed = stub.ConfirmTotp(
            pb.ConfirmTotpRequest(code=rfc6238(enrolled.secret, clock.step)),
            metadata=bearer(token),
            timeout=RPC_TIMEOUT_S,
        )
        codes = list(confirmed.recovery_codes)
        ISSUED_RECOVERY_CODES.extend(codes)
        clock.advance()
        stub.Login(
            pb.LoginRequest(
                username=name, password=PASSWORD, one_time_code=rfc6238(enrolled.secret, clock.step)
            ),
            timeout=RPC_TIMEOUT_S,
        )  # two-factor is on, and the secret was read

    text = gateway_database_text(database)
    assert name.encode() in text, "the search must see the users' rows"
    assert secrets_in(text, [enrolled.secret, *codes]) == []
