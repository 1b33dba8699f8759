"""``TlsListener``: a tailnet TCP listener whose accepted streams are TLS-terminated with the node's
certificate (Go's ``tsnet.Server.ListenTLS``).

Each ``accept`` takes the next tailnet connection, asks for the current pair (the cert manager
answers from its cache and renews as Go does, so a long-lived listener follows renewals) and runs the
handshake (bounded by ``handshake_timeout``). A client that fails the handshake costs only its own
connection: it is closed and counted (``handshake_failures``) and ``accept`` goes on to the next one.
"""

from __future__ import annotations

import ssl
from collections.abc import Awaitable, Callable, Sequence

import anyio
from anyio.streams.tls import TLSStream

from pytsnet.cert.tls import DEFAULT_ALPN, ContextCache
from pytsnet.net.stream import TcpListener

__all__ = ["HANDSHAKE_TIMEOUT", "TlsListener"]

HANDSHAKE_TIMEOUT = 10.0


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

    async def accept(self) -> TLSStream:
        """The next connection whose TLS handshake succeeded. A cert that cannot be had
        (``HttpsNotEnabled``, ``AcmeFailed``) raises here, after closing the connection."""
        while True:
            stream = await self.listener.accept()
            try:
                cert_pem, key_pem = await self._pair(self.domain)
                ctx = self._contexts.context(cert_pem, key_pem)
            except BaseException:
                await stream.aclose()
                raise
            try:
                with anyio.fail_after(self._timeout):
                    return await TLSStream.wrap(stream, server_side=True, ssl_context=ctx,
                                                standard_compatible=False)
            except (ssl.SSLError, OSError, TimeoutError, anyio.BrokenResourceError, anyio.EndOfStream):
                self.handshake_failures += 1
                await stream.aclose()

    async def aclose(self) -> None:
        await self.listener.aclose()

    async def __aenter__(self) -> TlsListener:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
