"""TLS credentials for servers and clients, and the identity of a mutual-TLS peer.

Every identity (gateway, bank-a, ..., admin) has a certificate signed by the suite's CA,
made by ops/gen_certs.py. Its common name is the identity. Private keys must be readable
by their owner only: a process refuses to start with a group- or world-readable key.
"""

from __future__ import annotations

import pathlib
import stat

import grpc

from paygate.common.config import TlsFiles
from paygate.common.handlers import Context


class InsecureKeyFile(RuntimeError):
    """A private key file is readable by group or others."""


def read_private_key(path: pathlib.Path) -> bytes:
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise InsecureKeyFile(
            f"{path} is readable by group or others (mode {stat.S_IMODE(mode):o}); "
            f"run: chmod 600 {path}"
        )
    return path.read_bytes()


def server_credentials(files: TlsFiles, *, require_client_cert: bool) -> grpc.ServerCredentials:
    return grpc.ssl_server_credentials(
        [(read_private_key(files.key), files.cert.read_bytes())],
        root_certificates=files.ca.read_bytes(),
        require_client_auth=require_client_cert,
    )


def channel_credentials(
    ca: pathlib.Path, client: TlsFiles | None = None
) -> grpc.ChannelCredentials:
    """Credentials that trust `ca`, presenting `client`'s certificate when given (mutual TLS)."""
    if client is None:
        return grpc.ssl_channel_credentials(root_certificates=ca.read_bytes())
    return grpc.ssl_channel_credentials(
        root_certificates=ca.read_bytes(),
        private_key=read_private_key(client.key),
        certificate_chain=client.cert.read_bytes(),
    )


def expect_server_identity(identity: str) -> tuple[str, str]:
    """The channel option that checks the server's certificate names `identity` (a DNS
    name in its subject alternative names), whatever address it is dialled at.

    Every certificate of the suite's CA also names localhost and 127.0.0.1: without this
    option, any of them (another bank's, the admin's) would pass for the bank dialled."""
    return ("grpc.ssl_target_name_override", identity)


def peer_identity(context: Context) -> str | None:
    """The common name of the peer's verified client certificate, or None without one."""
    auth = context.auth_context()
    first = next(iter(auth.get("x509_common_name") or ()), None)
    return first.decode() if first is not None else None
