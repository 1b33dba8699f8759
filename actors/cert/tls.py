"""Server-side TLS contexts from PEM bytes, for everything that terminates TLS with the node's cert
(``listen_tls``, Serve's actors, Funnel); in the actors layer so Serve's connection actors and the
facade share one implementation (``pytsnet.cert.tls`` re-exports it).

``ssl`` loads a key pair only from files, so ``server_ssl_context`` writes the pair to a private
temporary directory (mode 0700, file 0600), loads it and removes it at once. ``CertProvider`` is the
seam other code takes (``ActorDevice.cert_pair_blocking``, or a test CA's): ``domain → (cert chain
PEM, key PEM)``. ``ContextCache`` keeps one context per pair, so a renewed cert gets a new context and
an unchanged one is not reloaded on every connection.
"""

from __future__ import annotations

import hashlib
import os
import ssl
import tempfile
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

__all__ = ["DEFAULT_ALPN", "CertProvider", "ContextCache", "renewing_context", "server_ssl_context"]

CertProvider = Callable[[str], tuple[bytes, bytes]]
"""``domain → (cert chain PEM, private key PEM)``."""

DEFAULT_ALPN: tuple[str, ...] = ("h2", "http/1.1")
"""What Go's ``ListenTLS`` offers (``tls.Config.NextProtos``)."""


def server_ssl_context(cert_pem: bytes, key_pem: bytes, *,
                       alpn: Sequence[str] = DEFAULT_ALPN) -> ssl.SSLContext:
    """A TLS 1.2+ server context serving ``cert_pem`` (leaf first, then intermediates) with ``key_pem``.
    ``ssl.SSLError`` if the pair does not load (a key not matching the cert)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    with tempfile.TemporaryDirectory(prefix="pytsnet-tls-") as d:
        cert_file, key_file = Path(d) / "cert.pem", Path(d) / "key.pem"
        cert_file.write_bytes(cert_pem)
        fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(key_pem)
        ctx.load_cert_chain(cert_file, key_file)
    if alpn:
        ctx.set_alpn_protocols(list(alpn))
    return ctx


class ContextCache:
    """The context for the pair a provider returns now (a new one only when the pair changed)."""

    def __init__(self, alpn: Sequence[str] = DEFAULT_ALPN) -> None:
        self._alpn = tuple(alpn)
        self._lock = threading.Lock()
        self._current: tuple[bytes, ssl.SSLContext] | None = None

    def context(self, cert_pem: bytes, key_pem: bytes) -> ssl.SSLContext:
        digest = hashlib.sha256(cert_pem + b"\0" + key_pem).digest()
        with self._lock:
            if self._current is not None and self._current[0] == digest:
                return self._current[1]
        ctx = server_ssl_context(cert_pem, key_pem, alpn=self._alpn)
        with self._lock:
            self._current = (digest, ctx)
        return ctx


def renewing_context(provider: CertProvider, domain: str, *,
                     alpn: Sequence[str] = DEFAULT_ALPN) -> ssl.SSLContext:
    """One context for a long-lived blocking server (``ssl.SSLContext.wrap_socket`` on a socket-bridge
    connection, uvicorn's ``ssl=``…) that follows renewals: each handshake asks ``provider(domain)``
    (a cache hit, normally) from the context's SNI callback and switches to that pair's context. A
    provider that fails fails that handshake only (``ssl.SSLError`` to the server, an alert to the
    client)."""
    cache = ContextCache(alpn)
    ctx = cache.context(*provider(domain))

    def on_hello(sock: ssl.SSLObject | ssl.SSLSocket, _name: str | None, _ctx: ssl.SSLContext) -> int | None:
        try:
            sock.context = cache.context(*provider(domain))
        except Exception:
            return ssl.ALERT_DESCRIPTION_INTERNAL_ERROR
        return None

    ctx.sni_callback = on_hello
    return ctx
