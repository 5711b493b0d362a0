"""A certificate authority made for the installation, and the broker's certificate (openssl).

``jiayuan broker tls --out DIR`` writes into ``DIR``:

- ``ca.crt``: the installation's CA, given to every client (service, gateways, devices) to verify
  the broker with; ``ca.key`` (0600) signs the broker's certificate and nothing else — keep it
  off the broker host once the certificate is made;
- ``server.crt`` / ``server.key`` (0600): the TLS listener's certificate, for the host names and
  addresses given (default ``127.0.0.1`` and ``localhost``) as subject alternative names.

The CA is made once and kept: replacing it would make every provisioned client distrust the
broker. The server certificate is made when missing, when its names change, when it expires
within 30 days, or with ``--renew``. Keys are ECDSA P-256.
"""

from __future__ import annotations

import grp
import ipaddress
import os
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

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


def _openssl(*args: str, cwd: Path | None = None) -> str:
    exe = shutil.which("openssl")
    if exe is None:
        raise TlsError("openssl not found: install Debian's openssl package")
    r = subprocess.run([exe, *args], capture_output=True, text=True, cwd=cwd, check=False)
    if r.returncode != 0:
        raise TlsError(f"openssl {args[0]} failed: {r.stderr.strip()[-500:]}")
    return r.stdout


def _new_key(path: Path) -> None:
    # Created 0600 before any key byte is written into it.
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600))
    os.chmod(path, 0o600)
    _openssl(
        "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", str(path)
    )


def san(hosts: Sequence[str]) -> str:
    names = []
    for h in hosts:
        try:
            names.append(f"IP:{ipaddress.ip_address(h)}")
        except ValueError:
            names.append(f"DNS:{h}")
    return ",".join(names)


def _server_ok(cert: Path, ca: Path, hosts: Sequence[str]) -> bool:
    if not cert.exists():
        return False
    try:
        _openssl("verify", "-CAfile", str(ca), str(cert))
        _openssl("x509", "-in", str(cert), "-noout", "-checkend", str(RENEW_WITHIN_S))
        text = _openssl("x509", "-in", str(cert), "-noout", "-ext", "subjectAltName")
    except TlsError:
        return False
    have = {n.strip().replace("IP Address:", "IP:") for n in text.splitlines()[-1].split(",")}
    return have == set(san(hosts).split(","))


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
    ca_crt, ca_key = out / CA_CERT, out / CA_KEY
    crt, key = out / SERVER_CERT, out / SERVER_KEY
    made: list[str] = []
    if not (ca_crt.exists() and ca_key.exists()):
        _new_key(ca_key)
        _openssl(
            "req",
            "-x509",
            "-new",
            "-key",
            str(ca_key),
            "-sha256",
            "-days",
            str(CA_DAYS),
            "-subj",
            f"/O={name}/CN={name} installation CA {os.urandom(4).hex()}",
            "-addext",
            "basicConstraints=critical,CA:TRUE,pathlen:0",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
            "-out",
            str(ca_crt),
        )
        made.append("ca")
    if made or renew or not key.exists() or not _server_ok(crt, ca_crt, hosts):
        _new_key(key)
        with tempfile.TemporaryDirectory() as tmp:
            csr, ext = Path(tmp) / "server.csr", Path(tmp) / "server.ext"
            _openssl(
                "req",
                "-new",
                "-key",
                str(key),
                "-subj",
                f"/O={name}/CN={hosts[0]}",
                "-out",
                str(csr),
            )
            ext.write_text(
                f"subjectAltName={san(hosts)}\n"
                "basicConstraints=critical,CA:FALSE\n"
                "keyUsage=critical,digitalSignature\n"
                "extendedKeyUsage=serverAuth\n"
                "subjectKeyIdentifier=hash\n"
                "authorityKeyIdentifier=keyid,issuer\n"
            )
            _openssl(
                "x509",
                "-req",
                "-in",
                str(csr),
                "-CA",
                str(ca_crt),
                "-CAkey",
                str(ca_key),
                "-set_serial",
                str(int.from_bytes(os.urandom(16), "big") >> 1),
                "-days",
                str(SERVER_DAYS),
                "-sha256",
                "-extfile",
                str(ext),
                "-out",
                str(crt),
            )
        made.append("server")
    if group:
        os.chown(key, -1, grp.getgrnam(group).gr_gid)
        os.chmod(key, 0o640)
    return TlsFiles(ca_crt, crt, key, tuple(made))
