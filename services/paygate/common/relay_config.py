"""paygate-relay's configuration: the [relay] table of the suite's file (common/config.py).

The relay (services/paygate/relay) reads the gateway's database ([gateway] database) and
publishes every event to a topic exchange of a RabbitMQ broker (docs/events.md).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from typing import Any

from paygate.common.config_checks import (
    ConfigError,
    check_address,
    check_amqp_url,
    check_bounds,
    check_exchange,
    check_positive,
)

# The broker's URL holds a password: it may come from the environment instead of the file.
RELAY_AMQP_URL_ENV = "PAYGATE_RELAY_AMQP_URL"
DEFAULT_RELAY_AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"
DEFAULT_RELAY_EXCHANGE = "paygate.events"
DEFAULT_RELAY_METRICS = "127.0.0.1:9171"
DEFAULT_RELAY_BATCH_SIZE = 100
MAX_RELAY_BATCH_SIZE = 1000  # events published, confirmed and marked together
DEFAULT_RELAY_POLL_INTERVAL_S = 0.5
DEFAULT_RELAY_TIMEOUT_S = 5.0
DEFAULT_RELAY_LEASE_S = 15.0
# A lease outlives a pass (renewal, publication and marking, each within timeout_s).
RELAY_LEASE_TIMEOUTS_MIN = 3
DEFAULT_RELAY_RECONNECT_MAX_S = 30.0
_RELAY_BOUNDS: dict[str, tuple[float, float]] = {"batch_size": (1, MAX_RELAY_BATCH_SIZE)}


@dataclasses.dataclass(frozen=True, kw_only=True)
class RelayConfig:
    """paygate-relay: it reads the gateway's database ([gateway] database) and publishes
    every event to a topic exchange of a RabbitMQ broker (docs/events.md)."""

    # amqp:// or amqps://; it holds a password, so it is never shown (repr, logs).
    amqp_url: str = dataclasses.field(default=DEFAULT_RELAY_AMQP_URL, repr=False)
    exchange: str = DEFAULT_RELAY_EXCHANGE
    metrics: str = DEFAULT_RELAY_METRICS  # /metrics and /healthz
    batch_size: int = DEFAULT_RELAY_BATCH_SIZE
    poll_interval_s: float = DEFAULT_RELAY_POLL_INTERVAL_S
    # The deadline of every broker and database operation (one batch's confirms included).
    timeout_s: float = DEFAULT_RELAY_TIMEOUT_S
    # How long a relay owns the right to publish without renewing it (relay_lease).
    lease_s: float = DEFAULT_RELAY_LEASE_S
    # The longest wait between two attempts to reach a broker that is down.
    reconnect_max_s: float = DEFAULT_RELAY_RECONNECT_MAX_S


def check_relay(table: Mapping[str, Any]) -> None:
    """The [relay] table's values (its keys and types are checked already)."""
    for key, value in table.items():
        where = f"[relay] {key}"
        if key == "metrics":
            check_address(where, value)
        elif key in _RELAY_BOUNDS:
            check_bounds(where, value, *_RELAY_BOUNDS[key])
        elif isinstance(value, (int, float)):
            check_positive(where, value)
    if "amqp_url" in table:
        check_amqp_url("[relay] amqp_url", table["amqp_url"])
    if "exchange" in table:
        check_exchange("[relay] exchange", table["exchange"])
    lease_s = table.get("lease_s", DEFAULT_RELAY_LEASE_S)
    timeout_s = table.get("timeout_s", DEFAULT_RELAY_TIMEOUT_S)
    if lease_s < RELAY_LEASE_TIMEOUTS_MIN * timeout_s:
        raise ConfigError(
            f"[relay] lease_s ({lease_s:g}) must be at least {RELAY_LEASE_TIMEOUTS_MIN} times"
            f" timeout_s ({timeout_s:g}): a lease outlives a renewal, a batch and its mark"
        )


def relay_config(table: Mapping[str, Any]) -> RelayConfig:
    """The [relay] table (checked by check_relay), its URL from the environment if set there."""
    table = dict(table)
    from_env = os.environ.get(RELAY_AMQP_URL_ENV, "")
    if from_env:
        check_amqp_url(f"${RELAY_AMQP_URL_ENV}", from_env)
        table["amqp_url"] = from_env
    return RelayConfig(**table)
