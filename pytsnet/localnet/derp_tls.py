"""The self-signed certificate behind the local DERP relay's TLS listener.

Go's ``derphttp`` client speaks TLS to a DERP node unless ``TS_DEBUG_USE_DERP_HTTP`` is set
(``useHTTPS``). It dials ``IPv4:DERPPort`` and sends SNI = ``HostName`` (``tlsServerName``); with the
node's ``InsecureForTests`` it skips verification (``tlsClient``), so a self-signed certificate is
enough. The certificate still names the host (IP SAN or DNS SAN) so a Python client can verify it
by pinning this file as its only trust anchor. It is generated once and kept in the state dir so
restarts serve the same certificate.
"""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

CERT_FILE, KEY_FILE = "derp-cert.pem", "derp-key.pem"
VALIDITY = datetime.timedelta(days=3650)


def _san(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def ensure_certificate(state_dir: Path, host: str) -> tuple[Path, Path]:
    """``(cert, key)`` PEM paths in ``state_dir``; made (P-256, self-signed for ``host``) if absent
    or if the stored one does not name ``host``."""
    cert_path, key_path = state_dir / CERT_FILE, state_dir / KEY_FILE
    if cert_path.exists() and key_path.exists():
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        try:
            names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        except x509.ExtensionNotFound:
            names = x509.SubjectAlternativeName([])
        if _san(host) in names:
            return cert_path, key_path
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + VALIDITY)
            .add_extension(x509.SubjectAlternativeName([_san(host)]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(key, hashes.SHA256()))
    state_dir.mkdir(parents=True, exist_ok=True)
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key_path.chmod(0o600)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert_path, key_path


def server_context(cert_path: Path, key_path: Path) -> ssl.SSLContext:
    """A server context for the DERP listener: TLS 1.2 or newer (Go's client negotiates 1.3)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert_path, key_path)
    return ctx
