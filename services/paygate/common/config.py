"""The configuration of a Paygate suite: one object, built once at start, passed down.

Precedence, lowest first: the defaults below, the TOML file named by `--config` or the
`PAYGATE_CONFIG` environment variable, then command-line flags of the process
(`paygate-gateway --listen ... --metrics ... --admin-listen ...` runs a second gateway
from the same file:
`with_gateway_addresses`). Relative
paths are resolved against the current directory, which supervisord sets to the directory
it was started from (the repository root for `make run`, a temporary folder in tests).

Example file (every key optional):

    var_dir = "var"
    certs_dir = "certs"

    [gateway]
    listen = "127.0.0.1:50051"
    metrics = "127.0.0.1:9151"
    admin_listen = "127.0.0.1:50151"   # AdminService, for the operators' certificate
    database = "var/gateway.db"   # or "postgresql://user@host:5432/dbname" (docs/storage.md)
    bcrypt_rounds = 12
    prepare_timeout_s = 2.0

    [banks.bank-a]
    listen = "127.0.0.1:50061"
    metrics = "127.0.0.1:9161"
    demo_accounts = "ops/demo-accounts/bank-a.toml"

    [relay]                       # paygate-relay, off unless run (docs/events.md)
    amqp_url = "amqp://guest:guest@127.0.0.1:5672/"   # or $PAYGATE_RELAY_AMQP_URL
    exchange = "paygate.events"
    metrics = "127.0.0.1:9171"
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import re
import tomllib
from collections.abc import Mapping
from typing import Any

from paygate.common.config_checks import (
    ConfigError,
    check_address,
    check_bounds,
    check_positive,
    check_table,
    check_value,
)
from paygate.common.database_url import DatabaseLocation, PostgresUrl, database_location
from paygate.common.money import MAX_AMOUNT_MINOR
from paygate.common.relay_config import RelayConfig, check_relay, relay_config

__all__ = ["ConfigError", "RelayConfig", "SuiteConfig", "load_config", "read_config_file"]

CONFIG_ENV = "PAYGATE_CONFIG"

DEFAULT_GATEWAY_LISTEN = "127.0.0.1:50051"
DEFAULT_GATEWAY_METRICS = "127.0.0.1:9151"
# The gateway's admin port: AdminService, over mutual TLS, for the operators' certificate.
DEFAULT_GATEWAY_ADMIN_LISTEN = "127.0.0.1:50151"
TOTP_KEY_FILE = "totp.key"  # in certs_dir, unless [gateway] totp_key_file names another
DEFAULT_BANKS: dict[str, tuple[str, str]] = {
    "bank-a": ("127.0.0.1:50061", "127.0.0.1:9161"),
    "bank-b": ("127.0.0.1:50062", "127.0.0.1:9162"),
    "bank-c": ("127.0.0.1:50063", "127.0.0.1:9163"),
}
DEFAULT_BCRYPT_ROUNDS = 12
DEFAULT_TOKEN_TTL_S = 3600
DEFAULT_PREPARE_TIMEOUT_S = 2.0
DEFAULT_BANK_CALL_TIMEOUT_S = 2.0
DEFAULT_IDEMPOTENCY_TTL_S = 24 * 3600
DEFAULT_MAX_PAYMENT_MINOR = 100_000_000  # 1,000,000.00 in a two-digit currency
DEFAULT_RECOVERY_INTERVAL_S = 2.0
DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024
# The largest BatchCreatePaymentsRequest and response: 1,000 items of the longest fields a
# valid payment has (255-character keys, 500-character descriptions, 4 bytes a character)
# are about 3.2 MB, and their answers about 2.2 MB (docs/protocol.md, "Bulk payouts").
DEFAULT_MAX_BATCH_MESSAGE_BYTES = 4 * 1024 * 1024
DEFAULT_MAX_CONCURRENT_RPCS = 256
DEFAULT_GRACE_S = 5.0
# Batches of bank calls (gateway/batching.py): at most this many calls in one batch RPC,
# and at most this many batch RPCs on the wire per bank and operation at once.
DEFAULT_BATCH_MAX_SIZE = 128
DEFAULT_AUTHORIZATION_TTL_S = 7 * 24 * 3600.0
DEFAULT_EVENT_RETENTION_S = 30 * 24 * 3600.0  # Stripe keeps events 30 days
DEFAULT_HOUSEKEEPING_INTERVAL_S = 60.0
# The most transactions one batch call to a bank may carry: a bank refuses a larger batch
# (INVALID_ARGUMENT, nothing applied), so batch_max_size may not be set above it.
MAX_BATCH_SIZE = 256
DEFAULT_BATCH_MAX_IN_FLIGHT = 2
DEFAULT_BATCH_LINGER_S = 0.0
DEFAULT_LOGIN_FAILURE_WINDOW_S = 15 * 60
DEFAULT_LOGIN_MAX_FAILURES_PER_USER = 5
# An address can be shared by many people (NAT, an office), so it gets a higher limit.
DEFAULT_LOGIN_MAX_FAILURES_PER_ADDRESS = 50


@dataclasses.dataclass(frozen=True, kw_only=True)
class TlsFiles:
    """The PEM files of one identity: the CA to trust, and its own certificate and key."""

    ca: pathlib.Path
    cert: pathlib.Path
    key: pathlib.Path


@dataclasses.dataclass(frozen=True, kw_only=True)
class BankConfig:
    bank_id: str
    listen: str
    metrics: str
    database: DatabaseLocation  # a SQLite file, or a PostgresUrl
    demo_accounts: pathlib.Path | None
    tls: TlsFiles
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    max_concurrent_rpcs: int = DEFAULT_MAX_CONCURRENT_RPCS
    grace_s: float = DEFAULT_GRACE_S
    fault_injection: bool = False


@dataclasses.dataclass(frozen=True, kw_only=True)
class GatewayConfig:
    listen: str
    metrics: str
    database: DatabaseLocation  # a SQLite file, or a PostgresUrl
    tls: TlsFiles
    bank_addresses: Mapping[str, str]
    # Where AdminService is served (gateway/operators.py): mutual TLS, the client
    # certificate required (grpcio cannot make it optional on the public port).
    admin_listen: str = DEFAULT_GATEWAY_ADMIN_LISTEN
    bcrypt_rounds: int = DEFAULT_BCRYPT_ROUNDS
    token_ttl_s: int = DEFAULT_TOKEN_TTL_S
    prepare_timeout_s: float = DEFAULT_PREPARE_TIMEOUT_S
    bank_call_timeout_s: float = DEFAULT_BANK_CALL_TIMEOUT_S
    idempotency_ttl_s: int = DEFAULT_IDEMPOTENCY_TTL_S
    max_payment_minor: int = DEFAULT_MAX_PAYMENT_MINOR
    recovery_interval_s: float = DEFAULT_RECOVERY_INTERVAL_S
    login_failure_window_s: float = DEFAULT_LOGIN_FAILURE_WINDOW_S
    login_max_failures_per_user: int = DEFAULT_LOGIN_MAX_FAILURES_PER_USER
    login_max_failures_per_address: int = DEFAULT_LOGIN_MAX_FAILURES_PER_ADDRESS
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    # BatchCreatePayments' own limit on its request and response (every other method of the
    # public port keeps max_message_bytes; common/request_size_interceptor.py).
    max_batch_message_bytes: int = DEFAULT_MAX_BATCH_MESSAGE_BYTES
    max_concurrent_rpcs: int = DEFAULT_MAX_CONCURRENT_RPCS
    grace_s: float = DEFAULT_GRACE_S
    fault_injection: bool = False
    # How long a gateway owns a transaction it drives (gateway/coordinator.py); None:
    # 3 x prepare_timeout_s.
    lease_s: float | None = None
    # How long a session found valid is remembered in memory; None: automatic (the
    # default of gateway/session_cache.py on SQLite, 0 on PostgreSQL, where other gateway
    # replicas may revoke the session).
    session_cache_ttl_s: float | None = None
    # Batching of the calls to each bank (1: every call is sent alone).
    batch_max_size: int = DEFAULT_BATCH_MAX_SIZE
    batch_max_in_flight: int = DEFAULT_BATCH_MAX_IN_FLIGHT
    # How long a Prepare, or a Commit, waits for others to the same bank, to leave as one
    # batch RPC (0: not at all; docs/performance.md).
    batch_prepare_linger_s: float = DEFAULT_BATCH_LINGER_S
    batch_commit_linger_s: float = DEFAULT_BATCH_LINGER_S
    # A payment within one bank as one call that posts on yes (gateway/transitions.py).
    # Off only while gateways of an older version share the database (docs/storage.md).
    one_phase_commit: bool = True
    # How long an authorization (a payment with manual capture) holds the payer's money
    # before it is cancelled uncaptured: Stripe's 7 days by default.
    authorization_ttl_s: float = DEFAULT_AUTHORIZATION_TTL_S
    # How long events are kept (gateway/events.py); a cursor older than that is refused.
    event_retention_s: float = DEFAULT_EVENT_RETENTION_S
    # How often expired keys, sessions, login failures and events are pruned.
    housekeeping_interval_s: float = DEFAULT_HOUSEKEEPING_INTERVAL_S
    # The key that seals users' two-factor secrets (gateway/totp.py): a file readable by
    # its owner only, made by ops/gen_certs.py; by default certs_dir/totp.key.
    totp_key_file: pathlib.Path | None = None
    # A deliberately broken protocol (gateway/transitions.py BROKEN_VARIANTS), only with
    # fault_injection: for the tests that show paygate-chaos catches one. Never in production.
    broken_protocol: str = ""

    @property
    def effective_lease_s(self) -> float:
        return self.lease_s if self.lease_s is not None else 3 * self.prepare_timeout_s


@dataclasses.dataclass(frozen=True, kw_only=True)
class SuiteConfig:
    """Everything about one suite: where its processes listen and where their files are."""

    var_dir: pathlib.Path
    certs_dir: pathlib.Path
    gateway: GatewayConfig
    banks: Mapping[str, BankConfig]
    relay: RelayConfig = RelayConfig()

    def tls_for(self, identity: str) -> TlsFiles:
        return tls_files(self.certs_dir, identity)


def tls_files(certs_dir: pathlib.Path, identity: str) -> TlsFiles:
    return TlsFiles(
        ca=certs_dir / "ca.pem",
        cert=certs_dir / f"{identity}.pem",
        key=certs_dir / f"{identity}-key.pem",
    )


def _path(value: Any, base: pathlib.Path) -> pathlib.Path:
    path = pathlib.Path(str(value)).expanduser()
    return path if path.is_absolute() else base / path


def load_config(path: str | os.PathLike[str] | None = None) -> SuiteConfig:
    """Build the suite's configuration from defaults, a TOML file and the environment."""
    if path is None:
        path = os.environ.get(CONFIG_ENV) or None
    return read_config_file(path, base=pathlib.Path.cwd())


def read_config_file(path: str | os.PathLike[str] | None, *, base: pathlib.Path) -> SuiteConfig:
    """The configuration in the TOML file at `path` (None: the defaults), relative paths
    resolved against `base`, the directory the processes run in. ConfigError if the file
    cannot be read, is not TOML, or sets something wrong (check_config)."""
    data: dict[str, Any] = {}
    if path is not None:
        try:
            with open(path, "rb") as f:
                data = tomllib.load(f)
        except OSError as exc:
            raise ConfigError(f"cannot read {os.fspath(path)}: {exc.strerror}") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{os.fspath(path)} is not valid TOML: {exc}") from None
    return config_from_mapping(data, base=base)


# What the file may set at its top level; [gateway] and [banks.NAME] take their
# dataclass's fields, except those the code sets.
_TOP_LEVEL: dict[str, type] = {"var_dir": str, "certs_dir": str, "fault_injection": bool}
SET_BY_CODE = ("bank_id", "tls", "bank_addresses", "fault_injection")
# Every number set in the file must be above 0, except these (0 switches them off), and
# within these bounds where they have some.
_ZERO_ALLOWED = ("session_cache_ttl_s", "grace_s")
_BOUNDS: dict[str, tuple[float, float]] = {
    "bcrypt_rounds": (4, 31),
    "batch_max_size": (1, MAX_BATCH_SIZE),
    # 0: off; a call waits at most this long for company, far inside its deadline.
    "batch_prepare_linger_s": (0, 0.5),
    "batch_commit_linger_s": (0, 0.5),
    # A bank refuses a larger leg: such a payment would be retried forever as BANK_UNAVAILABLE.
    "max_payment_minor": (1, MAX_AMOUNT_MINOR),
}
_ADDRESSES = ("listen", "metrics", "admin_listen")
# A bank's name is part of file names (certs/NAME.pem) and of its default schema.
_BANK_ID = re.compile(r"[a-z][a-z0-9-]{0,62}")


def check_config(data: Mapping[str, Any]) -> None:
    """Raise ConfigError, naming the key, for anything the file sets that is unknown, of the
    wrong type or out of bounds: a misspelt key or `one_phase_commit = "false"` (a string,
    which Python would read as true) must stop the process at start, not be ignored."""
    for key, value in data.items():
        if key in ("gateway", "banks", "relay"):
            continue
        if key not in _TOP_LEVEL:
            known = ", ".join([*_TOP_LEVEL, "[gateway]", "[banks.NAME]", "[relay]"])
            raise ConfigError(f"unknown setting {key!r}; the file may set: {known}")
        check_value(key, value, _TOP_LEVEL[key])
    tables: dict[str, tuple[Any, type]] = {"gateway": (data.get("gateway", {}), GatewayConfig)}
    banks = data.get("banks", {})
    if not isinstance(banks, Mapping):
        raise ConfigError(f"[banks] must hold tables such as [banks.bank-a], not {banks!r}")
    for bank_id, table in banks.items():
        if not _BANK_ID.fullmatch(bank_id):
            raise ConfigError(
                f"[banks.{bank_id}]: a bank's name is lower-case letters, digits and '-',"
                " starting with a letter"
            )
        tables[f"banks.{bank_id}"] = (table, BankConfig)
    for section, (table, cls) in tables.items():
        for key, value in check_table(section, table, cls, set_by_code=SET_BY_CODE).items():
            where = f"[{section}] {key}"
            if key in _ADDRESSES:
                check_address(where, value)
            elif key in _BOUNDS:
                check_bounds(where, value, *_BOUNDS[key])
            elif key in _ZERO_ALLOWED:
                check_bounds(where, value, 0)
            elif isinstance(value, (int, float)) and not isinstance(value, bool):
                check_positive(where, value)
    check_relay(check_table("relay", data.get("relay", {}), RelayConfig, set_by_code=()))


def _database(
    section: str, value: str | None, default: pathlib.Path, base: pathlib.Path
) -> DatabaseLocation:
    try:
        location = database_location(default if value is None else value, base)
        if isinstance(location, PostgresUrl):
            location.schema  # noqa: B018  (reading it checks the schema's name)
    except ValueError as exc:
        raise ConfigError(f"[{section}] database: {exc}") from None
    return location


def config_from_mapping(data: Mapping[str, Any], *, base: pathlib.Path) -> SuiteConfig:
    check_config(data)
    var_dir = _path(data.get("var_dir", "var"), base)
    certs_dir = _path(data.get("certs_dir", "certs"), base)
    # Crash points (paygate.common.faults) are armed only in tests, by this switch.
    fault_injection = bool(data.get("fault_injection", False)) or (
        os.environ.get("PAYGATE_FAULT_INJECTION", "") == "1"
    )

    bank_tables: dict[str, Mapping[str, Any]] = {name: {} for name in DEFAULT_BANKS}
    bank_tables.update(data.get("banks", {}))
    banks: dict[str, BankConfig] = {}
    for bank_id, table in bank_tables.items():
        listen, metrics = DEFAULT_BANKS.get(bank_id, ("127.0.0.1:0", "127.0.0.1:0"))
        demo = table.get("demo_accounts", f"ops/demo-accounts/{bank_id}.toml")
        known = {"listen", "metrics", "database", "demo_accounts"}
        banks[bank_id] = BankConfig(
            bank_id=bank_id,
            listen=table.get("listen", listen),
            metrics=table.get("metrics", metrics),
            database=_database(
                f"banks.{bank_id}", table.get("database"), var_dir / f"{bank_id}.db", base
            ),
            demo_accounts=_path(demo, base) if demo else None,
            tls=tls_files(certs_dir, bank_id),
            fault_injection=fault_injection,
            **{k: v for k, v in table.items() if k not in known},
        )

    table = dict(data.get("gateway", {}))
    gateway = GatewayConfig(
        listen=table.pop("listen", DEFAULT_GATEWAY_LISTEN),
        metrics=table.pop("metrics", DEFAULT_GATEWAY_METRICS),
        database=_database("gateway", table.pop("database", None), var_dir / "gateway.db", base),
        tls=tls_files(certs_dir, "gateway"),
        totp_key_file=_path(table.pop("totp_key_file", certs_dir / TOTP_KEY_FILE), base),
        bank_addresses={bank_id: bank.listen for bank_id, bank in banks.items()},
        fault_injection=fault_injection,
        **table,
    )
    return SuiteConfig(
        var_dir=var_dir,
        certs_dir=certs_dir,
        gateway=gateway,
        banks=banks,
        relay=relay_config(data.get("relay", {})),
    )


def with_gateway_addresses(
    suite: SuiteConfig,
    *,
    listen: str | None = None,
    metrics: str | None = None,
    admin_listen: str | None = None,
) -> SuiteConfig:
    """The config with the gateway's addresses replaced by flags (None: keep the file's)."""
    gateway = dataclasses.replace(
        suite.gateway,
        listen=listen or suite.gateway.listen,
        metrics=metrics or suite.gateway.metrics,
        admin_listen=admin_listen or suite.gateway.admin_listen,
    )
    return dataclasses.replace(suite, gateway=gateway)
