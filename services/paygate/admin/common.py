"""What paygate-admin's commands share: their error, the configuration, the admin
certificate's credentials, and a call with its deadline."""

from __future__ import annotations

import argparse
from typing import Any

import grpc

from paygate.common.config import CONFIG_ENV, ConfigError, SuiteConfig, load_config
from paygate.common.rpc_errors import error_from_rpc
from paygate.common.tls import channel_credentials

ADMIN_IDENTITY = "admin"
DEFAULT_TIMEOUT_S = 10.0


class AdminError(Exception):
    """A failure to report to the operator as `error: <message>`, exit status 1."""


def read_config(path: str | None) -> SuiteConfig:
    try:
        return load_config(path)
    except ConfigError as exc:
        raise AdminError(f"bad configuration: {exc}") from exc


def admin_credentials(config: SuiteConfig) -> grpc.ChannelCredentials:
    """Mutual TLS as the operator: the suite's CA and the `admin` certificate."""
    tls = config.tls_for(ADMIN_IDENTITY)
    try:
        return channel_credentials(tls.ca, client=tls)
    except FileNotFoundError as exc:
        raise AdminError(
            f"cannot read {exc.filename} ({exc.strerror}): the CA and the admin certificate are"
            f" read from certs_dir ({config.certs_dir}) of the configuration; name the suite's"
            f" configuration with --config or {CONFIG_ENV} (relative paths in it are read from"
            " the current directory), or run from the directory the suite runs in"
        ) from exc


def dialing(args: argparse.Namespace, server: str, address: str) -> None:
    """Note which server the command calls, for the message if it does not answer."""
    args.server, args.dialed = server, address


def call(rpc: Any, request: Any, timeout_s: float) -> Any:
    """One call with its deadline; a failure as the paygate.errors exception it stands for."""
    try:
        return rpc(request, timeout=timeout_s)
    except grpc.RpcError as exc:
        raise error_from_rpc(exc) from exc
