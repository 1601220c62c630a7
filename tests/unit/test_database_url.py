"""Database locations in the config: a path means SQLite, a postgresql:// URL PostgreSQL."""

from __future__ import annotations

import pathlib

import pytest
from paygate.bank.store import SqliteLedgerStore
from paygate.bank.store_postgres import PostgresLedgerStore
from paygate.bank.stores import ledger_store
from paygate.common.config import config_from_mapping
from paygate.common.database_url import PostgresUrl
from paygate.gateway.store import SqliteGatewayStore
from paygate.gateway.store_postgres import PostgresGatewayStore
from paygate.gateway.stores import gateway_store

URL = "postgresql://paygate:s3cret-pw@db.internal:5432/paygate"


def test_a_url_never_shows_its_password() -> None:
    url = PostgresUrl(URL)
    for shown in (repr(url), str(url), f"{url}", repr({"database": url})):
        assert "s3cret-pw" not in shown
        assert "paygate:***@db.internal:5432/paygate" in shown


def test_the_schema_comes_from_the_search_path_in_the_options() -> None:
    assert PostgresUrl(URL).schema is None
    assert PostgresUrl(URL + "?options=-csearch_path%3Dgw_1").schema == "gw_1"
    assert PostgresUrl(URL + "?options=-c%20search_path%3Dbank_a,public").schema == "bank_a"
    with pytest.raises(ValueError, match="schema name"):
        _ = PostgresUrl(URL + "?options=-csearch_path%3DDrop;Table").schema


def test_the_config_picks_the_store_by_the_database_value(tmp_path: pathlib.Path) -> None:
    config = config_from_mapping(
        {"gateway": {"database": URL}, "banks": {"bank-a": {"database": URL}}}, base=tmp_path
    )
    assert config.gateway.database == PostgresUrl(URL)
    assert isinstance(gateway_store(config.gateway), PostgresGatewayStore)
    assert isinstance(ledger_store(config.banks["bank-a"]), PostgresLedgerStore)
    # The default stays SQLite, in files under var/.
    assert config.banks["bank-b"].database == tmp_path / "var" / "bank-b.db"
    assert isinstance(ledger_store(config.banks["bank-b"]), SqliteLedgerStore)
    default = config_from_mapping({}, base=tmp_path)
    assert isinstance(gateway_store(default.gateway), SqliteGatewayStore)
