"""Several gateway addresses in one target: "127.0.0.1:50051,127.0.0.1:50052".

A single address is dialed as it is. A comma-separated list becomes one channel over
gRPC's `ipv4:` (or `ipv6:`) resolver, which takes a list of literal addresses, with the
round_robin load balancer: calls spread over every gateway that is up, and a gateway that
goes down is left out until it answers again. A call that a gateway going down fails with
UNAVAILABLE is retried by gRPC (at most 3 attempts, within the call's deadline) and lands
on another; that is safe because a retry carries the same request, so CreatePayment keeps
its idempotency key. The gateways' certificates name their IP address, so TLS is checked
against the first address's host.

The client library dials its target this way; paygate-chaos and paygate-bench use the same
rule for their own channels and for checking a --gateway list.
"""

from __future__ import annotations

import ipaddress
import json

SERVICE_CONFIG = json.dumps(
    {
        "loadBalancingConfig": [{"round_robin": {}}],
        "methodConfig": [
            {
                "name": [{"service": "paygate.v1.GatewayService"}],
                "retryPolicy": {
                    "maxAttempts": 3,
                    "initialBackoff": "0.1s",
                    "maxBackoff": "1s",
                    "backoffMultiplier": 2,
                    "retryableStatusCodes": ["UNAVAILABLE"],
                },
            }
        ],
    }
)
MAX_ADDRESSES = 16


def split_addresses(target: str) -> list[str]:
    return [part.strip() for part in target.split(",") if part.strip()]


def channel_target(target: str) -> tuple[str, list[tuple[str, str]]]:
    """The gRPC target and channel options for one address or a comma-separated list."""
    addresses = split_addresses(target)
    if len(addresses) <= 1:
        return target, []
    if len(addresses) > MAX_ADDRESSES:
        raise ValueError(f"at most {MAX_ADDRESSES} gateway addresses, not {len(addresses)}")
    hosts = {_ip_host(address) for address in addresses}
    versions = {ipaddress.ip_address(host).version for host in hosts}
    if len(versions) != 1:
        raise ValueError(f"gateway addresses mix IPv4 and IPv6: {target!r}")
    scheme = "ipv4" if versions == {4} else "ipv6"
    first_host = _ip_host(addresses[0])
    options = [
        ("grpc.service_config", SERVICE_CONFIG),
        ("grpc.ssl_target_name_override", first_host),
        ("grpc.default_authority", addresses[0]),
    ]
    return f"{scheme}:{','.join(addresses)}", options


def _ip_host(address: str) -> str:
    """The IP literal of HOST:PORT or [HOST]:PORT; a name is refused (the list needs IPs)."""
    host, sep, port = address.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(
            f"in a list of gateway addresses each must be IP:PORT, not {address!r}"
        ) from None
    if not sep or not port.isdigit():
        raise ValueError(f"gateway address {address!r} has no port")
    return host
