"""The self-signed certificate behind the local DERP relay's TLS listener.

Go's ``derphttp`` client speaks TLS to a DERP node unless ``TS_DEBUG_USE_DERP_HTTP`` is set
(``useHTTPS``). It dials ``IPv4:DERPPort`` and sends SNI = ``HostName`` (``tlsServerName``); with the
node's ``InsecureForTests`` it skips verification (``tlsClient``), so a self-signed certificate is
enough. The certificate still names the host (IP SAN or DNS SAN) so a Python client can verify it
by pinning this file as its only trust anchor. It is generated once and kept in the state dir so
restarts serve the same certificate.

After it the server sends Go's "meta cert" (``derpserver.initMetacert``): a throw-away Ed25519
certificate whose Subject CN is ``derpkey`` + the relay's hex public key and whose serial is the DERP
protocol version. Over TLS 1.3 Go's client reads the key from it (``parseMetaCert``) and uses fast
start (``Derp-Fast-Start: 1``: no 101 wait, no ServerKey wait). The relay key changes per start, so
the chain file (leaf + meta cert) is rewritten each time.
"""

from __future__ import annotations

import datetime
import ipaddress
import ssl
import warnings
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import NameOID

from pytsnet.localnet.atrest import private_dir, write_private

CERT_FILE, KEY_FILE, CHAIN_FILE = "derp-cert.pem", "derp-key.pem", "derp-chain.pem"
VALIDITY = datetime.timedelta(days=3650)
META_CERT_CN_PREFIX = "derpkey"  # derp/derpconst MetaCertCommonNamePrefix
META_CERT_VALIDITY = datetime.timedelta(days=30)  # Go: NotBefore now-30d, NotAfter now+30d


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
    private_dir(state_dir)
    write_private(key_path, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                              serialization.NoEncryption()))  # 0600 from creation, atomic
    write_private(cert_path, cert.public_bytes(serialization.Encoding.PEM))
    return cert_path, key_path


def meta_certificate(server_public: bytes, protocol_version: int) -> bytes:
    """Go's DERP meta cert (PEM) announcing ``server_public`` and ``protocol_version``."""
    key = ed25519.Ed25519PrivateKey.generate()
    # 71 characters: over X.520's 64-character CN bound, which Go does not enforce (hence _validate)
    cn = META_CERT_CN_PREFIX + server_public.hex()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn, _validate=False)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(protocol_version)
            .not_valid_before(now - META_CERT_VALIDITY).not_valid_after(now + META_CERT_VALIDITY)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(key, None))
    return cert.public_bytes(serialization.Encoding.PEM)


def server_context(cert_path: Path, key_path: Path, meta_cert: bytes | None = None) -> ssl.SSLContext:
    """A server context for the DERP listener: TLS 1.2 or newer (Go's client negotiates 1.3), the
    leaf followed by ``meta_cert`` when given (written next to the leaf as the chain file)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    chain = cert_path
    if meta_cert is not None:
        chain = cert_path.with_name(CHAIN_FILE)
        write_private(chain, cert_path.read_bytes() + meta_cert)
    ctx.load_cert_chain(chain, key_path)
    return ctx
