"""Several gateway addresses in one client target (paygate.common.gateway_targets)."""

from __future__ import annotations

import json

import pytest
from paygate.common.gateway_targets import MAX_ADDRESSES, channel_target


def test_one_address_is_dialed_as_it_is() -> None:
    assert channel_target("localhost:50051") == ("localhost:50051", [])


def test_a_list_is_one_round_robin_channel_checked_against_the_first_host() -> None:
    target, options = channel_target("127.0.0.1:50051, 127.0.0.1:50052")
    assert target == "ipv4:127.0.0.1:50051,127.0.0.1:50052"
    settings = dict(options)
    config = json.loads(str(settings["grpc.service_config"]))
    assert config["loadBalancingConfig"] == [{"round_robin": {}}]
    assert config["methodConfig"][0]["retryPolicy"]["retryableStatusCodes"] == ["UNAVAILABLE"]
    assert settings["grpc.ssl_target_name_override"] == "127.0.0.1"


def test_an_ipv6_list_uses_the_ipv6_resolver() -> None:
    assert channel_target("[::1]:1,[::1]:2")[0] == "ipv6:[::1]:1,[::1]:2"


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("gw1:50051,gw2:50052", "must be IP:PORT"),
        ("127.0.0.1,127.0.0.1:2", "must be IP:PORT"),
        ("127.0.0.1:x,127.0.0.1:2", "has no port"),
        ("127.0.0.1:1,[::1]:2", "mix IPv4 and IPv6"),
        (",".join(f"127.0.0.1:{p}" for p in range(MAX_ADDRESSES + 1)), "at most"),
    ],
)
def test_a_bad_list_is_refused_with_the_reason(target: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        channel_target(target)
