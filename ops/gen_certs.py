"""Make the development CA and the certificates of every identity of the suite.

Usage: python ops/gen_certs.py [--dir certs] [--force]

Writes DIR/ca.pem and, for each identity (gateway, bank-a, bank-b, bank-c, admin),
DIR/NAME.pem and DIR/NAME-key.pem (mode 0600). The certificate's common name is the
identity; banks authorize callers by it. Server certificates are valid for localhost and
127.0.0.1. Also DIR/totp.key (0600), the gateway's key for users' two-factor secrets, made
once and kept even with --force. Existing files are kept unless --force is given. The CA's
private key is kept in DIR/ca-key.pem (0600) so that more identities can be added; none of
it is ever committed.
"""

from __future__ import annotations

import argparse
import base64
import datetime
import ipaddress
import os
import pathlib
import secrets

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

IDENTITIES = ("gateway", "bank-a", "bank-b", "bank-c", "admin")
TOTP_KEY_FILE = "totp.key"
VALID_DAYS = 825


def _write_key(path: pathlib.Path, key: ec.EllipticCurvePrivateKey) -> None:
    data = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(path, 0o600)


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Paygate development"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def make_ca(now: datetime.datetime) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("Paygate development CA"))
        .issuer_name(_name("Paygate development CA"))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    return key, cert


def make_leaf(
    identity: str,
    ca_key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    now: datetime.datetime,
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(identity))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName("localhost"),
                    x509.DNSName(identity),
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                ]
            ),
            critical=False,
        )
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    return key, cert


def write_totp_key(folder: pathlib.Path) -> bool:
    """DIR/totp.key: the gateway's key for users' two-factor secrets (32 random bytes in
    base64, mode 0600), unless it exists. Never replaced, even with --force: secrets
    sealed with it would no longer open."""
    path = folder / TOTP_KEY_FILE
    if path.exists():
        return False
    key = base64.b64encode(secrets.token_bytes(32)) + b"\n"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key)
    return True


def generate(
    folder: pathlib.Path, *, force: bool = False, identities: tuple[str, ...] = IDENTITIES
) -> bool:
    """Write the CA and identity files into `folder`; return False if they were all there."""
    folder.mkdir(parents=True, exist_ok=True)
    wanted = [folder / "ca.pem"] + [
        folder / f"{i}{s}" for i in identities for s in (".pem", "-key.pem")
    ]
    write_totp_key(folder)
    if not force and all(p.exists() for p in wanted):
        return False
    now = datetime.datetime.now(datetime.UTC)
    ca_key, ca_cert = make_ca(now)
    _write_key(folder / "ca-key.pem", ca_key)
    (folder / "ca.pem").write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    for identity in identities:
        key, cert = make_leaf(identity, ca_key, ca_cert, now)
        _write_key(folder / f"{identity}-key.pem", key)
        (folder / f"{identity}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return True


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--dir", default=str(pathlib.Path(__file__).resolve().parent.parent / "certs")
    )
    parser.add_argument("--force", action="store_true", help="replace existing certificates")
    args = parser.parse_args()
    made = generate(pathlib.Path(args.dir), force=args.force)
    print(f"{'wrote' if made else 'kept existing'} certificates in {args.dir}")


if __name__ == "__main__":
    main()
