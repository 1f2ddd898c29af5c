"""A small certificate authority for the broker's TLS listener, made with the openssl CLI.

The openssl command is on every Linux server that runs Mosquitto, so the collector needs no
extra Python package for a job done once per school. Keys are EC P-256: small, fast on the
cheap ARM boards some classroom devices use, and supported by Mosquitto 2.0 and paho.
"""

from __future__ import annotations

import ipaddress
import re
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from campuswatch.collector.broker.credentials import write_atomically

CA_DAYS: Final = 3650
# Browsers and some TLS stacks refuse server certificates valid for more than 825 days.
SERVER_DAYS: Final = 825
_DNS_NAME = re.compile(r"(?=.{1,253}\Z)(\*\.)?([A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9])?\.?)+")


class CertificateError(RuntimeError):
    """openssl failed, or the given CA files cannot sign (unreadable, not a pair, not a CA)."""


@dataclass(frozen=True, slots=True)
class CertificatePair:
    cert: Path
    key: Path


def _openssl(*args: str) -> str:
    binary = shutil.which("openssl")
    if binary is None:
        raise CertificateError("openssl is not installed (apt-get install openssl)")
    result = subprocess.run(
        [binary, *args], capture_output=True, text=True, check=False, timeout=120
    )
    if result.returncode != 0:
        detail = (result.stderr or result.stdout).strip().splitlines()
        raise CertificateError(f"openssl {args[0]} failed: {' / '.join(detail[-3:])}")
    return result.stdout


def subject_alt_names(hostnames: Sequence[str]) -> str:
    """``DNS:x,IP:y`` for an openssl extension; refuses anything that is neither."""
    entries: list[str] = []
    for name in hostnames:
        name = name.strip()
        try:
            entries.append(f"IP:{ipaddress.ip_address(name)}")
            continue
        except ValueError:
            pass
        if not _DNS_NAME.fullmatch(name):
            raise CertificateError(f"{name[:80]!r} is neither a host name nor an IP address")
        entries.append(f"DNS:{name.rstrip('.')}")
    if not entries:
        raise CertificateError("the server certificate needs at least one host name or IP")
    return ",".join(dict.fromkeys(entries))


def is_host_address(value: str) -> bool:
    """An IP address or a DNS name (what a listener may bind or a certificate may name)."""
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return _DNS_NAME.fullmatch(value) is not None
    return True


def _install(source: Path, destination: Path, mode: int, group: str | None = None) -> None:
    """Move a file openssl made in a private scratch folder into place with ``mode``.

    openssl creates its outputs with the umask's mode: made in a 0700 folder and copied with
    an explicit mode, a key is never readable by others, not even for a moment.
    """
    write_atomically(destination, source.read_text(encoding="ascii"), mode=mode, group=group)


def create_ca(directory: Path, common_name: str = "CampusWatch broker CA") -> CertificatePair:
    pair = CertificatePair(directory / "ca.pem", directory / "ca.key")
    with tempfile.TemporaryDirectory(prefix="cw-broker-") as scratch:
        key, cert = Path(scratch) / "ca.key", Path(scratch) / "ca.pem"
        _openssl(
            "req", "-x509", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
            "-nodes", "-sha256", "-days", str(CA_DAYS),
            "-subj", f"/CN={_subject_text(common_name)}",
            "-addext", "basicConstraints=critical,CA:TRUE,pathlen:0",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign",
            "-keyout", str(key), "-out", str(cert),
        )  # fmt: skip
        _install(key, pair.key, 0o600)
        _install(cert, pair.cert, 0o644)
    return pair


def check_ca(pair: CertificatePair) -> None:
    """Refuse a CA certificate and key that do not belong together or cannot sign."""
    for path in (pair.cert, pair.key):
        if not path.is_file():
            raise CertificateError(f"{path} does not exist")
    cert_key = _openssl("x509", "-in", str(pair.cert), "-noout", "-pubkey")
    private_key = _openssl("pkey", "-in", str(pair.key), "-pubout")
    if cert_key.strip() != private_key.strip():
        raise CertificateError(f"{pair.key} is not the private key of {pair.cert}")
    text = _openssl("x509", "-in", str(pair.cert), "-noout", "-ext", "basicConstraints")
    if "CA:TRUE" not in text:
        raise CertificateError(f"{pair.cert} is not a CA certificate (basicConstraints)")


def issue_server_certificate(
    ca: CertificatePair, directory: Path, hostnames: Sequence[str], *, key_group: str | None = None
) -> CertificatePair:
    """``key_group``: Mosquitto's group, which must read the key after dropping root."""
    san = subject_alt_names(hostnames)
    pair = CertificatePair(directory / "server.pem", directory / "server.key")
    with tempfile.TemporaryDirectory(prefix="cw-broker-") as scratch:
        request = Path(scratch) / "server.csr"
        extensions = Path(scratch) / "server.ext"
        key, cert = Path(scratch) / "server.key", Path(scratch) / "server.pem"
        extensions.write_text(
            f"subjectAltName={san}\n"
            "basicConstraints=critical,CA:FALSE\n"
            "keyUsage=critical,digitalSignature,keyEncipherment\n"
            "extendedKeyUsage=serverAuth\n"
            "subjectKeyIdentifier=hash\n"
            "authorityKeyIdentifier=keyid,issuer\n",
            encoding="ascii",
        )
        _openssl(
            "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-subj", f"/CN={_subject_text(hostnames[0])}",
            "-keyout", str(key), "-out", str(request),
        )  # fmt: skip
        _openssl(
            "x509", "-req", "-in", str(request), "-CA", str(ca.cert), "-CAkey", str(ca.key),
            "-set_serial", str(secrets.randbits(63)), "-sha256", "-days", str(SERVER_DAYS),
            "-extfile", str(extensions), "-out", str(cert),
        )  # fmt: skip
        _openssl("verify", "-CAfile", str(ca.cert), str(cert))
        _install(key, pair.key, 0o640, key_group)
        _install(cert, pair.cert, 0o644)
    return pair


def _subject_text(value: str) -> str:
    # openssl -subj treats "/" and "=" as structure; keep the common name plain.
    cleaned = re.sub(r"[^A-Za-z0-9 .:_-]", "_", value.strip())[:64]
    return cleaned or "campuswatch"
