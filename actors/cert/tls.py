"""Server-side TLS contexts from PEM bytes, for everything that terminates TLS with the node's cert
(``listen_tls``, Serve's actors, Funnel); in the actors layer so Serve's connection actors and the
facade share one implementation (``pytsnet.cert.tls`` re-exports it).

``ssl`` loads a key pair only from files, so ``server_ssl_context`` writes the pair to a private
temporary directory (mode 0700, file 0600), loads it and removes it at once. ``CertProvider`` is the
seam other code takes (``ActorDevice.cert_pair_blocking``, or a test CA's): ``domain → (cert chain
PEM, key PEM)``. ``ContextCache`` keeps one context per pair (a bounded LRU), so a renewed cert gets a
new context and an unchanged one is not reloaded on every connection.
"""

from __future__ import annotations

import hashlib
import os
import ssl
import tempfile
import threading
from collections import OrderedDict
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
    """Contexts by their pair's digest, the ``max_entries`` most recently used kept (LRU): an
    unchanged pair is not reloaded on every connection. A pair asked for under a ``name`` (a domain)
    replaces that name's previous one: a renewed cert gets a new context and the old one is dropped
    at once (unless another name still uses it)."""

    def __init__(self, alpn: Sequence[str] = DEFAULT_ALPN, *, max_entries: int = 1) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self._alpn = tuple(alpn)
        self._max = max_entries
        self._lock = threading.Lock()
        self._entries: OrderedDict[bytes, ssl.SSLContext] = OrderedDict()
        self._names: dict[str, bytes] = {}

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def context(self, cert_pem: bytes, key_pem: bytes, *, name: str = "") -> ssl.SSLContext:
        """The context serving this pair (``ssl.SSLError`` if it does not load: nothing is kept)."""
        digest = hashlib.sha256(cert_pem + b"\0" + key_pem).digest()
        with self._lock:
            ctx = self._entries.get(digest)
            if ctx is not None:
                self._entries.move_to_end(digest)
                self._use(name, digest)
                return ctx
        ctx = server_ssl_context(cert_pem, key_pem, alpn=self._alpn)  # file I/O: outside the lock
        with self._lock:
            ctx = self._entries.setdefault(digest, ctx)  # another thread may have loaded it meanwhile
            self._entries.move_to_end(digest)
            self._use(name, digest)
            while len(self._entries) > self._max:
                old, _ = self._entries.popitem(last=False)
                self._names = {n: d for n, d in self._names.items() if d != old}
        return ctx

    def _use(self, name: str, digest: bytes) -> None:
        """``name`` serves ``digest`` now; its previous pair goes unless another name still serves it."""
        before = self._names.get(name)
        self._names[name] = digest
        if before is not None and before != digest and before not in self._names.values():
            self._entries.pop(before, None)


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
