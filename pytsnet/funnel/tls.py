"""A server ``SSLContext`` from PEM bytes (the node's certificate chain and key).

Stand-in until the certificates work (20a, ``pytsnet/cert/tls.py``) is on main, which has the same
helper; the integrator folds the two. ``ssl`` loads a chain only from files, so the PEMs are written
to a private (0700) temporary directory for the load and removed at once: the key never lingers on
disk.
"""

from __future__ import annotations

import ssl
import tempfile
from collections.abc import Sequence
from pathlib import Path

__all__ = ["server_ssl_context"]


def server_ssl_context(cert_pem: bytes, key_pem: bytes, alpn: Sequence[str] = ()) -> ssl.SSLContext:
    """TLS 1.2+ server context for the chain and key; ``alpn`` offered if given (Go's ``ListenFunnel``
    default config offers none). ``ssl.SSLError`` for a chain and key that do not match or parse."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    with tempfile.TemporaryDirectory(prefix="pytsnet-tls-") as d:
        cert, key = Path(d) / "cert.pem", Path(d) / "key.pem"
        cert.write_bytes(cert_pem)
        key.touch(mode=0o600)
        key.write_bytes(key_pem)
        ctx.load_cert_chain(cert, key)
    if alpn:
        ctx.set_alpn_protocols(list(alpn))
    return ctx
