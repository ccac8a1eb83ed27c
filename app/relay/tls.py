"""The relay's TLS server certificate, kept under $AIRLOCK_HOME/relay/.

Made on first use with `cryptography`. When $AIRLOCK_HOME/ca holds airlock's CA
(app.ca: airlock-ca.pem, with its key in mitmproxy-ca.pem), the CA signs it, so
runtimes that trust airlock-ca.pem can use sslmode=verify-full. Without a CA it is
self-signed, and sslmode=require still encrypts. It is renewed when it nears expiry or
when the CA changes. Names to verify beyond localhost go in AIRLOCK_RELAY_TLS_HOSTNAMES
(comma separated).
"""
from __future__ import annotations

import datetime as dt
import ipaddress
import os
import socket
import ssl
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from app.ca import CA_CERT, MITM_KEY_AND_CERT  # the CA's key and certificate, under mitmproxy's file name
from app.config import settings

VALID_DAYS = 365
RENEW_BEFORE = dt.timedelta(days=30)


def cert_paths(home: Path | None = None) -> tuple[Path, Path]:
    d = (home or settings().home) / "relay"
    return d / "relay-cert.pem", d / "relay-key.pem"


def server_context(home: Path | None = None) -> ssl.SSLContext:
    cert, key = ensure_certificate(home)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert, key)
    return ctx


def ensure_certificate(home: Path | None = None) -> tuple[Path, Path]:
    home = home or settings().home
    cert_path, key_path = cert_paths(home)
    ca = _load_ca(home / "ca")
    if cert_path.exists() and key_path.exists() and _still_good(cert_path, ca):
        return cert_path, key_path
    cert_path.parent.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    names = _hostnames()
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0]),
                         x509.NameAttribute(NameOID.ORGANIZATION_NAME, "airlock relay")])
    now = dt.datetime.now(dt.timezone.utc)
    issuer_name, signer = (ca[0].subject, ca[1]) if ca else (subject, key)
    sans: list[x509.GeneralName] = []
    for name in names:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            sans.append(x509.DNSName(name))
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=VALID_DAYS))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(signer, hashes.SHA256())
    )
    # Write the key first with 0600, then move into place: no window where it is readable.
    tmp_key = key_path.with_suffix(".tmp")
    fd = os.open(tmp_key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    os.replace(tmp_key, key_path)
    chain = cert.public_bytes(serialization.Encoding.PEM)
    if ca:
        chain += ca[0].public_bytes(serialization.Encoding.PEM)
    tmp_cert = cert_path.with_suffix(".tmp")
    tmp_cert.write_bytes(chain)
    os.replace(tmp_cert, cert_path)
    return cert_path, key_path


def _hostnames() -> list[str]:
    configured = [h.strip() for h in os.environ.get("AIRLOCK_RELAY_TLS_HOSTNAMES", "").split(",") if h.strip()]
    names = configured + ["localhost", "127.0.0.1", "::1", socket.gethostname()]
    return list(dict.fromkeys(names))


def _load_ca(ca_dir: Path):
    cert_file = ca_dir / CA_CERT
    if not cert_file.exists():
        return None
    try:
        cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
        key_file = ca_dir / MITM_KEY_AND_CERT
        if not key_file.exists():
            return None
        return cert, serialization.load_pem_private_key(key_file.read_bytes(), None)
    except (ValueError, TypeError, OSError):
        return None


def _still_good(cert_path: Path, ca) -> bool:
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    except (ValueError, OSError):
        return False
    if cert.not_valid_after_utc - dt.datetime.now(dt.timezone.utc) < RENEW_BEFORE:
        return False
    expected_issuer = ca[0].subject if ca else cert.subject
    return cert.issuer == expected_issuer
