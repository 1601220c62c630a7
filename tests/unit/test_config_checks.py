"""A configuration file with a misspelt key or a value of the wrong type stops the process
at start with a message naming the key; it is never silently ignored or misread."""

from __future__ import annotations

import dataclasses
import pathlib
import subprocess
import sys
import typing

import pytest
from paygate.common.config import (
    SET_BY_CODE,
    BankConfig,
    ConfigError,
    GatewayConfig,
    RelayConfig,
    config_from_mapping,
    read_config_file,
)
from paygate.common.config_checks import kind_of
from paygate.common.database_url import PostgresUrl


def load(data: dict[str, object], tmp_path: pathlib.Path) -> object:
    return config_from_mapping(data, base=tmp_path)


GATEWAY = r"\[gateway\] "
BANK_A = r"\[banks.bank-a\] "
RELAY = r"\[relay\] "


@pytest.mark.parametrize(
    ("data", "message"),
    [
        # A string is true to Python: "false" would switch the setting on.
        (
            {"gateway": {"one_phase_commit": "false"}},
            GATEWAY + "one_phase_commit must be true or false, not 'false'",
        ),
        ({"gateway": {"bcrypt_rounds": True}}, GATEWAY + "bcrypt_rounds must be a whole number"),
        ({"gateway": {"bcrypt_rounds": 12.5}}, GATEWAY + "bcrypt_rounds must be a whole number"),
        ({"gateway": {"prepare_timeout_s": "2"}}, GATEWAY + "prepare_timeout_s must be a number"),
        ({"gateway": {"listen": 50051}}, GATEWAY + "listen must be a string, not 50051"),
        (
            {"gateway": {"prepare_timeout": 2.0}},
            GATEWAY + "has no setting 'prepare_timeout'; it has: .*prepare_timeout_s",
        ),
        ({"gateway": {"tls": "x"}}, GATEWAY + "has no setting 'tls'"),
        ({"banks": {"bank-a": {"grace": 1}}}, BANK_A + "has no setting 'grace'; it has: .*grace_s"),
        ({"banks": {"bank-a": {"database": 7}}}, BANK_A + "database must be a string, not 7"),
        (
            {"banks": {"bank-a": {"database": "postgresql://h/db?options=-csearch_path%3DBad"}}},
            BANK_A + "database: schema name 'Bad'",
        ),
        ({"banks": "bank-a"}, r"\[banks\] must hold tables"),
        ({"gateway": 1}, r"\[gateway\] must be a table"),
        ({"fault_injection": 1}, "fault_injection must be true or false, not 1"),
        ({"var-dir": "v"}, "unknown setting 'var-dir'; the file may set: var_dir, "),
        # Bounds: numbers above 0 unless 0 switches the setting off; addresses; names.
        ({"gateway": {"prepare_timeout_s": 0}}, GATEWAY + "prepare_timeout_s must be above 0"),
        ({"gateway": {"batch_max_in_flight": -1}}, GATEWAY + "batch_max_in_flight must be above 0"),
        ({"gateway": {"lease_s": float("nan")}}, GATEWAY + "lease_s must be a finite number"),
        ({"gateway": {"bcrypt_rounds": 2}}, GATEWAY + "bcrypt_rounds must be from 4 to 31, not 2"),
        # A bank refuses batches of more than 256 calls: payments would fail under load.
        (
            {"gateway": {"batch_max_size": 512}},
            GATEWAY + "batch_max_size must be from 1 to 256, not 512",
        ),
        # A bank refuses a leg over 10**15 minor units: such payments would never end.
        (
            {"gateway": {"max_payment_minor": 10**15 + 1}},
            GATEWAY + "max_payment_minor must be from 1 to 1000000000000000, not 1000000000000001",
        ),
        ({"gateway": {"grace_s": -1}}, GATEWAY + "grace_s must be at least 0, not -1"),
        ({"gateway": {"listen": "localhost"}}, GATEWAY + "listen must be HOST:PORT"),
        (
            {"banks": {"bank-a": {"metrics": "127.0.0.1:99999"}}},
            BANK_A + "metrics must be HOST:PORT",
        ),
        ({"banks": {"Bank A": {}}}, r"\[banks.Bank A\]: a bank's name is lower-case letters"),
        # The relay's table: unknown keys, bounds, and what RabbitMQ and its lease need.
        ({"relay": {"batch": 10}}, RELAY + "has no setting 'batch'; it has: .*batch_size"),
        ({"relay": {"batch_size": 0}}, RELAY + "batch_size must be from 1 to 1000, not 0"),
        ({"relay": {"batch_size": 5000}}, RELAY + "batch_size must be from 1 to 1000"),
        ({"relay": {"poll_interval_s": 0}}, RELAY + "poll_interval_s must be above 0"),
        ({"relay": {"metrics": "9171"}}, RELAY + "metrics must be HOST:PORT"),
        ({"relay": {"amqp_url": "http://u:pw@h/"}}, RELAY + "amqp_url must start with amqp://"),
        ({"relay": {"exchange": "amq.topic"}}, RELAY + "exchange must be 1 to 127 letters"),
        ({"relay": {"exchange": "a b"}}, RELAY + "exchange must be 1 to 127 letters"),
        (
            {"relay": {"timeout_s": 5, "lease_s": 10}},
            RELAY + r"lease_s \(10\) must be at least 3 times timeout_s \(5\)",
        ),
        ({"relay": []}, r"\[relay\] must be a table"),
    ],
)
def test_a_wrong_setting_is_refused_by_name(
    data: dict[str, object], message: str, tmp_path: pathlib.Path
) -> None:
    with pytest.raises(ConfigError, match=message):
        load(data, tmp_path)


def test_settings_of_the_right_types_are_taken(tmp_path: pathlib.Path) -> None:
    config = config_from_mapping(
        {
            "var_dir": "v",
            "fault_injection": False,
            "gateway": {
                "one_phase_commit": False,
                "prepare_timeout_s": 3,  # a whole number is a number
                "lease_s": 9.5,  # a field that may be unset (None) takes its type when set
                "session_cache_ttl_s": 0,  # 0 switches the cache off
                "grace_s": 0,
                "listen": ":50051",  # every interface
                "bcrypt_rounds": 10,
            },
            "banks": {
                "bank-a": {"grace_s": 1, "database": "postgresql://h/db", "demo_accounts": ""}
            },
        },
        base=tmp_path,
    )
    gateway = config.gateway
    assert (gateway.one_phase_commit, gateway.prepare_timeout_s) == (False, 3)
    assert gateway.lease_s == 9.5
    assert (gateway.session_cache_ttl_s, gateway.bcrypt_rounds) == (0, 10)
    assert gateway.database == tmp_path / "v" / "gateway.db"
    assert isinstance(config.banks["bank-a"].database, PostgresUrl)
    assert config.banks["bank-a"].demo_accounts is None


def test_the_relay_takes_its_settings_and_its_url_from_the_environment(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = {"relay": {"exchange": "shop.events", "batch_size": 1000, "amqp_url": "amqp://f/"}}
    relay = config_from_mapping(data, base=tmp_path).relay
    assert (relay.exchange, relay.batch_size, relay.amqp_url) == ("shop.events", 1000, "amqp://f/")
    assert config_from_mapping({}, base=tmp_path).relay == RelayConfig()  # off the file: defaults
    monkeypatch.setenv("PAYGATE_RELAY_AMQP_URL", "amqps://relay:s3cret@broker:5671/prod")
    relay = config_from_mapping(data, base=tmp_path).relay
    assert relay.amqp_url == "amqps://relay:s3cret@broker:5671/prod"
    assert "s3cret" not in repr(relay)  # the password is never shown
    monkeypatch.setenv("PAYGATE_RELAY_AMQP_URL", "broker:5672")
    with pytest.raises(ConfigError, match=r"\$PAYGATE_RELAY_AMQP_URL must start with amqp://"):
        config_from_mapping(data, base=tmp_path)


def test_every_setting_a_file_may_set_has_a_check() -> None:
    for cls in (GatewayConfig, BankConfig, RelayConfig):
        hints = typing.get_type_hints(cls)
        for field in dataclasses.fields(cls):
            if field.name not in SET_BY_CODE:
                kind_of(hints[field.name])  # raises TypeError for a type it cannot check


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "cannot read .*paygate.toml: No such file"),
        (b"[gateway\n", "paygate.toml is not valid TOML"),
        (b"\xff\xfe", "paygate.toml is not valid TOML: 'utf-8' codec"),
    ],
)
def test_a_file_that_cannot_be_read_is_a_config_error(
    content: bytes | None, message: str, tmp_path: pathlib.Path
) -> None:
    path = tmp_path / "paygate.toml"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ConfigError, match=message):
        read_config_file(path, base=tmp_path)


@pytest.mark.parametrize(
    ("command", "status", "said"),
    [
        (["paygate-gateway"], 2, "paygate-gateway: bad configuration: "),
        (["paygate-bank", "--bank-id", "bank-a"], 2, "paygate-bank: bad configuration: "),
        (["paygate-bench", "--supervisor-dir", "."], 2, "error: "),
        (["paygate-chaos", "--supervisor-dir", "."], 2, "error: "),
        (["paygate-admin", "account", "--bank", "bank-a", "--account", "1"], 1, "error: bad "),
        (["paygate-relay"], 2, "paygate-relay: bad configuration: "),
    ],
)
def test_every_program_refuses_a_bad_file_and_says_why(
    command: list[str], status: int, said: str, tmp_path: pathlib.Path
) -> None:
    path = tmp_path / "paygate.toml"
    path.write_text('[gateway]\none_phase_commit = "false"\n')
    program = pathlib.Path(sys.executable).parent / command[0]
    result = subprocess.run(
        [program, "--config", str(path), *command[1:]],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert result.returncode == status, result.stderr
    assert said in result.stderr
    assert "[gateway] one_phase_commit must be true or false, not 'false'" in result.stderr
    assert "Traceback" not in result.stderr
    # Refused before anything was opened: no database file, no log folder.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["paygate.toml"]
