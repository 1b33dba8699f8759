"""``TlsListener``: a tailnet TCP listener whose accepted streams are TLS-terminated with the node's
certificate (Go's ``tsnet.Server.ListenTLS``).

``accept`` returns each tailnet connection at once as a ``TlsStream`` whose handshake runs on first
use, in the task serving it (as Go's ``tls.NewListener``), so a client that stalls its handshake
holds up only itself. Each handshake asks for the current pair (the cert manager answers from its
cache and renews as Go does, so a long-lived listener follows renewals). A client that fails the
handshake costs only its own connection: it is closed and counted (``handshake_failures``).
"""

from __future__ import annotations

import ssl
from collections.abc import Awaitable, Callable, Sequence

from pytsnet.cert.stream import HANDSHAKE_TIMEOUT, TlsStream
from pytsnet.cert.tls import DEFAULT_ALPN, ContextCache
from pytsnet.net.stream import TcpListener

__all__ = ["HANDSHAKE_TIMEOUT", "TlsListener"]


class TlsListener:
    def __init__(self, listener: TcpListener, domain: str,
                 pair: Callable[[str], Awaitable[tuple[bytes, bytes]]], *,
                 alpn: Sequence[str] = DEFAULT_ALPN, handshake_timeout: float = HANDSHAKE_TIMEOUT) -> None:
        self.listener = listener
        self.domain = domain
        """The name the certificate is for (the node's MagicDNS name)."""
        self._pair = pair
        self._contexts = ContextCache(alpn)
        self._timeout = handshake_timeout
        self.handshake_failures = 0

    async def accept(self) -> TlsStream:
        """The next connection; TLS is terminated on its first ``receive``/``send`` (or
        ``handshake()``), so serve it in its own task. A cert that cannot be had (``HttpsNotEnabled``,
        ``AcmeFailed``) fails that connection's handshake (``anyio.BrokenResourceError``)."""
        stream = await self.listener.accept()
        return TlsStream(stream, self._context, peer=stream.remote_address, handshake_timeout=self._timeout,
                         on_failed=self._count_failure)

    async def _context(self) -> ssl.SSLContext:
        return self._contexts.context(*await self._pair(self.domain))

    def _count_failure(self) -> None:
        self.handshake_failures += 1

    async def aclose(self) -> None:
        await self.listener.aclose()

    async def __aenter__(self) -> TlsListener:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
