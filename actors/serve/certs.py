"""The TLS server contexts of one Serve tree: the cert provider's pair per domain, loaded once.

Every HTTPS or ``TerminateTLS`` connection asks for the context of a domain (the client's SNI, or
the handler's name). Loading a pair (``server_ssl_context``: temp files, PEM parsing) per connection
is wasted work on the hot path, so the tree shares one ``ContextCache``: contexts keyed by the pair's
digest, at most ``MAX_CONTEXTS`` kept (LRU), a domain's renewed pair replacing its old context. The
provider is still asked on every connection (it is the cert cache's to say when a pair is renewed).
"""

from __future__ import annotations

import ssl

from pytsnet.actors.cert.tls import CertProvider, ContextCache

__all__ = ["MAX_CONTEXTS", "ServeCerts"]

MAX_CONTEXTS = 32
"""Distinct pairs kept: a node's own name and its services' names fit many times over."""


class ServeCerts:
    """``context(domain)``: the server context for the pair ``provider(domain)`` gives now."""

    def __init__(self, provider: CertProvider, *, max_contexts: int = MAX_CONTEXTS) -> None:
        self.provider = provider
        self.contexts = ContextCache(alpn=(), max_entries=max_contexts)  # Serve offers no ALPN here

    def context(self, domain: str) -> ssl.SSLContext:
        """Raises what the provider raises (no HTTPS, ACME down) or ``ssl.SSLError`` (an unusable pair)."""
        cert, key = self.provider(domain)
        ctx = self.contexts.context(cert, key, name=domain)
        # A client's EOF without close_notify is its end, not a fatal error: OpenSSL would otherwise
        # answer it with a decode_error alert (Go's crypto/tls sends none) and refuse the session's
        # own close_notify after it. Idempotent, on Serve's own contexts only.
        ctx.options |= ssl.OP_IGNORE_UNEXPECTED_EOF
        return ctx
