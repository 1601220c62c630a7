"""What a gateway replica changes in its settings: the session cache, its lease, its addresses."""

from __future__ import annotations

import pathlib

from paygate.common.config import config_from_mapping, with_gateway_addresses
from paygate.gateway.main import account_settings
from paygate.gateway.session_cache import DEFAULT_TTL_S

URL = "postgresql://paygate@db.internal:5432/paygate"


def test_the_session_cache_is_off_on_a_shared_database_unless_configured(
    tmp_path: pathlib.Path,
) -> None:
    sqlite = config_from_mapping({}, base=tmp_path).gateway
    postgres = config_from_mapping({"gateway": {"database": URL}}, base=tmp_path).gateway
    chosen = config_from_mapping(
        {"gateway": {"database": URL, "session_cache_ttl_s": 1.5}}, base=tmp_path
    ).gateway
    assert account_settings(sqlite).session_cache_ttl_s == DEFAULT_TTL_S
    assert account_settings(postgres).session_cache_ttl_s == 0
    assert account_settings(chosen).session_cache_ttl_s == 1.5


def test_the_lease_outlasts_the_prepare_phase_unless_configured(tmp_path: pathlib.Path) -> None:
    default = config_from_mapping({"gateway": {"prepare_timeout_s": 1.0}}, base=tmp_path)
    assert default.gateway.effective_lease_s == 3.0
    chosen = config_from_mapping({"gateway": {"lease_s": 10.0}}, base=tmp_path)
    assert chosen.gateway.effective_lease_s == 10.0


def test_flags_override_the_files_addresses(tmp_path: pathlib.Path) -> None:
    config = config_from_mapping({"gateway": {"listen": "127.0.0.1:1"}}, base=tmp_path)
    moved = with_gateway_addresses(config, listen="127.0.0.1:2", metrics=None)
    assert (moved.gateway.listen, moved.gateway.metrics) == ("127.0.0.1:2", config.gateway.metrics)
    assert moved.gateway.database == config.gateway.database
