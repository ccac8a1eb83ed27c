"""airlock's certificate authority: the CA runtimes trust for HTTPS through the proxy.

Files under the CA directory ($AIRLOCK_HOME/ca):
- airlock-ca.pem          the certificate runtimes trust (no key);
- mitmproxy-ca.pem        key + certificate, the name mitmproxy's confdir expects;
- mitmproxy-ca-cert.pem   the certificate again, under mitmproxy's name for it.
Files holding the key are 0600. The CA is created once and never rotated silently:
runtimes pin it.
"""
from __future__ import annotations

import datetime
import os
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_CERT = "airlock-ca.pem"
MITM_KEY_AND_CERT = "mitmproxy-ca.pem"
MITM_CERT = "mitmproxy-ca-cert.pem"
VALIDITY = datetime.timedelta(days=3650)
# mitmproxy signs leaf certificates with the CA key and reuses it as the leaf key:
# RSA 2048 is what every TLS client accepts there.
KEY_SIZE = 2048


def ca_cert_path(ca_dir: Path | str) -> Path:
    """The certificate runtimes must trust."""
    return Path(ca_dir) / CA_CERT


def ensure_ca(ca_dir: Path | str) -> Path:
    """Create the CA if it does not exist yet; return the path of the trusted certificate.

    Idempotent. If only mitmproxy's files exist (a CA made by an older setup), the
    airlock name is derived from them instead of minting a new CA.
    """
    ca_dir = Path(ca_dir)
    ca_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(ca_dir, 0o700)
    combined = ca_dir / MITM_KEY_AND_CERT
    if not combined.exists():
        key, cert = _create()
        key_pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
        )
        _write_private(combined, key_pem + cert.public_bytes(serialization.Encoding.PEM))
    cert_pem = _cert_pem(combined.read_bytes())
    for name in (CA_CERT, MITM_CERT):
        path = ca_dir / name
        if not path.exists() or path.read_bytes() != cert_pem:
            path.write_bytes(cert_pem)
            os.chmod(path, 0o644)
    return ca_dir / CA_CERT


def _create() -> tuple[rsa.RSAPrivateKey, x509.Certificate]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=KEY_SIZE)
    name = x509.Name([
        x509.NameAttribute(NameOID.COMMON_NAME, "airlock CA"),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "airlock"),
    ])
    now = datetime.datetime.now(datetime.timezone.utc)
    public = key.public_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        # Backdated a little: a runtime whose clock lags must not reject a fresh CA.
        .not_valid_before(now - datetime.timedelta(days=2))
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def _cert_pem(combined: bytes) -> bytes:
    cert = x509.load_pem_x509_certificates(combined)[0]
    return cert.public_bytes(serialization.Encoding.PEM)


def _write_private(path: Path, data: bytes) -> None:
    # Created 0600 from the start, so the key is never readable by others, not even briefly.
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)
