"""A certificate authority made for the installation, and the broker's certificate.

``jiayuan broker tls --out DIR`` writes into ``DIR``:

- ``ca.crt``: the installation's CA, given to every client (service, gateways, devices) to verify
  the broker with; ``ca.key`` (0600) signs the broker's certificate and nothing else — keep it
  off the broker host once the certificate is made;
- ``server.crt`` / ``server.key`` (0600): the TLS listener's certificate, for the host names and
  addresses given (default ``127.0.0.1`` and ``localhost``) as subject alternative names.

The CA is made once and kept: replacing it would make every provisioned client distrust the
broker. The server certificate is made when missing, when its names change, when it expires
within 30 days, when it no longer matches its key or CA, or with ``--renew``. Keys are ECDSA
P-256 (PKCS #8 PEM), signatures ECDSA with SHA-256; made with cryptography's x509 builder.
"""

from __future__ import annotations

import grp
import ipaddress
import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_CERT, CA_KEY, SERVER_CERT, SERVER_KEY = "ca.crt", "ca.key", "server.crt", "server.key"
DEFAULT_HOSTS = ("127.0.0.1", "localhost")
CA_DAYS = 3650
SERVER_DAYS = 825
RENEW_WITHIN_S = 30 * 86_400


@dataclass(frozen=True)
class TlsFiles:
    ca_cert: Path
    server_cert: Path
    server_key: Path
    made: tuple[str, ...]
    """What this run made: ``ca``, ``server``, both or neither."""


class TlsError(RuntimeError):
    pass


def _new_key(path: Path) -> ec.EllipticCurvePrivateKey:
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    # Created 0600 before any key byte is written into it.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    return key


def _load_key(path: Path) -> ec.EllipticCurvePrivateKey:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (ValueError, TypeError) as e:
        raise TlsError(f"{path}: not an unencrypted PEM private key ({e})") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise TlsError(f"{path}: not an EC key (made by another tool?)")
    return key


def _load_cert(path: Path) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(path.read_bytes())
    except ValueError as e:
        raise TlsError(f"{path}: not a PEM certificate ({e})") from None


def subject_alt_names(hosts: Sequence[str]) -> list[x509.GeneralName]:
    """``127.0.0.1`` as an IP address, ``localhost`` as a DNS name, and so on."""
    names: list[x509.GeneralName] = []
    for h in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            names.append(x509.DNSName(h))
    return names


def _name(org: str, common: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, org),
            x509.NameAttribute(NameOID.COMMON_NAME, common),
        ]
    )


def _usage(*, ca: bool) -> x509.KeyUsage:
    """A CA signs certificates (and CRLs); the broker signs its TLS handshakes."""
    return x509.KeyUsage(
        digital_signature=not ca,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


def _issue(
    path: Path,
    subject: x509.Name,
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Name,
    issuer_key: ec.EllipticCurvePrivateKey,
    days: int,
    *extensions: tuple[x509.ExtensionType, bool],
) -> x509.Certificate:
    """Write the certificate of ``key`` for ``subject``, signed by ``issuer_key``."""
    now = datetime.now(UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + timedelta(days=days))
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), False
        )
    )
    for ext, critical in extensions:
        builder = builder.add_extension(ext, critical)
    cert = builder.sign(issuer_key, hashes.SHA256())
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert


def _server_ok(cert_path: Path, key_path: Path, ca: x509.Certificate, hosts: Sequence[str]) -> bool:
    """Signed by ``ca``, for the key beside it, valid for 30 days more, for exactly ``hosts``."""
    if not (cert_path.exists() and key_path.exists()):
        return False
    try:
        cert = _load_cert(cert_path)
        key = _load_key(key_path)
        cert.verify_directly_issued_by(ca)
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (TlsError, ValueError, TypeError, InvalidSignature, x509.ExtensionNotFound):
        return False
    now = datetime.now(UTC)
    return (
        cert.public_key() == key.public_key()
        and cert.not_valid_before_utc <= now
        and cert.not_valid_after_utc > now + timedelta(seconds=RENEW_WITHIN_S)
        and set(names) == set(subject_alt_names(hosts))
    )


def make_tls(
    out: Path,
    hosts: Sequence[str] = DEFAULT_HOSTS,
    *,
    renew: bool = False,
    group: str | None = None,
    name: str = "jiayuan",
) -> TlsFiles:
    """Make the CA if it is not there, and the broker's certificate if it is missing, stale,
    for other names, or ``renew``. ``group``: make server.key readable by it (Mosquitto's)."""
    if not hosts:
        raise ValueError("at least one host name or address for the broker's certificate")
    out.mkdir(parents=True, exist_ok=True)
    ca_crt, ca_key_path = out / CA_CERT, out / CA_KEY
    crt, key = out / SERVER_CERT, out / SERVER_KEY
    made: list[str] = []
    if ca_crt.exists() and ca_key_path.exists():
        ca_key = _load_key(ca_key_path)
        ca = _load_cert(ca_crt)
    else:
        ca_key = _new_key(ca_key_path)
        subject = _name(name, f"{name} installation CA {os.urandom(4).hex()}")
        ca = _issue(
            ca_crt,
            subject,
            ca_key,
            subject,
            ca_key,
            CA_DAYS,
            (x509.BasicConstraints(ca=True, path_length=0), True),
            (_usage(ca=True), True),
        )
        made.append("ca")
    if made or renew or not _server_ok(crt, key, ca, hosts):
        _issue(
            crt,
            _name(name, hosts[0]),
            _new_key(key),
            ca.subject,
            ca_key,
            SERVER_DAYS,
            (x509.SubjectAlternativeName(subject_alt_names(hosts)), False),
            (x509.BasicConstraints(ca=False, path_length=None), True),
            (_usage(ca=False), True),
            (x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False),
        )
        made.append("server")
    if group:
        os.chown(key, -1, grp.getgrnam(group).gr_gid)
        os.chmod(key, 0o640)
    return TlsFiles(ca_crt, crt, key, tuple(made))
