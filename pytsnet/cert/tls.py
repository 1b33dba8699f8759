"""The public home of the server-side TLS helpers (``server_ssl_context``, ``ContextCache``,
``renewing_context``); they live in ``pytsnet.actors.cert.tls`` so Serve's actors use the same ones."""

from pytsnet.actors.cert.tls import (
    DEFAULT_ALPN,
    CertProvider,
    ContextCache,
    renewing_context,
    server_ssl_context,
)

__all__ = ["DEFAULT_ALPN", "CertProvider", "ContextCache", "renewing_context", "server_ssl_context"]
