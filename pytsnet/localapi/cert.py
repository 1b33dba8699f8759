"""The LocalAPI's ``cert/<domain>`` endpoint (Go ``ipn/localapi/cert.go`` ``serveCert``), what
``tailscale cert`` calls: the node's cert for one of its CertDomains.

Go's handler needs ``PermitWrite`` or ``PermitCert`` ("cert access denied"; here write access, the
port has no cert-only permission), gets the pair (cache or ACME) and writes it as ``type``: ``cert``
(the default, also ``crt``), ``key``, or ``pair`` (key then cert, what ``tailscale cert`` and
``LocalClient.CertPair`` read); another type is 400. Any failure is Go's lazy 500 with the error's
text, which never holds key material. ``min_validity`` is not supported (400, never ignored).
"""

from __future__ import annotations

from typing import Protocol

from pytsnet.localapi.server import LocalApi, LocalRequest, LocalResponse

__all__ = ["CertBackend", "register"]


class CertBackend(Protocol):
    def cert_pair_blocking(self, domain: str, timeout: float = ...) -> tuple[bytes, bytes]: ...


def register(api: LocalApi, backend: CertBackend) -> None:
    """Add ``/localapi/v0/cert/`` to ``api`` (write access)."""

    def serve(_api: LocalApi, req: LocalRequest) -> LocalResponse:
        domain = req.path.removeprefix("/localapi/v0/cert/")
        if req.query.get("min_validity"):
            return LocalResponse.error(400, "min_validity is not supported by this node")
        kind = req.query.get("type", "")
        if kind not in ("", "crt", "cert", "key", "pair"):
            return LocalResponse.error(400, 'invalid type; want "cert" (default), "key", or "pair"')
        try:
            cert, key = backend.cert_pair_blocking(domain)
        except Exception as e:  # typed: HttpsNotEnabled, InvalidCertDomain, AcmeFailed, AskTimeout
            return LocalResponse.error(500, str(e))
        body = key if kind == "key" else key + cert if kind == "pair" else cert
        return LocalResponse(200, body, "text/plain")

    api.route("cert/", serve, "write", "cert")
