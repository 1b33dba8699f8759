"""The node's certificates in its state store, under Go's key names (``cert.go`` ``certStateStore``):
``acme-account.key.pem`` (the ACME account key, P-256 PEM), ``<domain>.crt`` (the chain, PEM) and
``<domain>.key`` (its private key, PEM). Also the checks on a cached pair (Go's ``validCertPEM``)
and the renewal time (``domainRenewalTimeByExpiry``: 2/3 of the way through its lifetime).

Like Go with a non-default ACME directory, a cached chain is not verified up to a root (pebble's
root changes at every start): the leaf must name the domain, be inside its validity period at
``now`` and match the stored key.
"""

from __future__ import annotations

import datetime
import re

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from pytsnet.actors.control.store import StateStore

__all__ = ["ACME_ACCOUNT_KEY", "CachedPair", "cert_key", "key_key", "load_valid", "renew_at",
           "valid_looking_domain"]

ACME_ACCOUNT_KEY = "acme-account.key.pem"
_DOMAIN = re.compile(r"^[a-z0-9]([a-z0-9-]{0,62})(\.[a-z0-9]([a-z0-9-]{0,62}))+$")


def valid_looking_domain(name: str) -> bool:
    """Go's ``validLookingCertDomain`` (no ``..``, ``:``, ``/``, ``\\``, NUL; has a dot), stricter:
    lower-case DNS labels only, since the name becomes a state-store key."""
    return len(name) <= 253 and bool(_DOMAIN.match(name))


def cert_key(domain: str) -> str:
    return f"{domain}.crt"


def key_key(domain: str) -> str:
    return f"{domain}.key"


class CachedPair:
    """A parsed pair from the store."""

    def __init__(self, cert_pem: bytes, key_pem: bytes, leaf: x509.Certificate) -> None:
        self.cert_pem, self.key_pem, self.leaf = cert_pem, key_pem, leaf

    @property
    def not_before(self) -> float:
        return self.leaf.not_valid_before_utc.timestamp()

    @property
    def not_after(self) -> float:
        return self.leaf.not_valid_after_utc.timestamp()


def renew_at(pair: CachedPair) -> float:
    """When Go starts a renewal: ``NotBefore + 2/3·(NotAfter - NotBefore)`` (tailscale issue 8204)."""
    return pair.not_before + (pair.not_after - pair.not_before) * 2 / 3


def load_valid(store: StateStore, domain: str, now: float) -> CachedPair | None:
    """The stored pair for ``domain`` if it is usable at ``now``, else None (missing, expired, not for
    this domain, key not matching, unparseable)."""
    cert_pem, key_pem = store.read_state(cert_key(domain)), store.read_state(key_key(domain))
    if not cert_pem or not key_pem:
        return None
    return parse_valid(cert_pem, key_pem, domain, now)


def parse_valid(cert_pem: bytes, key_pem: bytes, domain: str, now: float) -> CachedPair | None:
    try:
        chain = x509.load_pem_x509_certificates(cert_pem)
        key = serialization.load_pem_private_key(key_pem, password=None)
        leaf = chain[0]
        san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = san.get_values_for_type(x509.DNSName)
    except (ValueError, TypeError, x509.ExtensionNotFound, IndexError):
        return None
    if domain not in names:
        return None
    der, spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    if key.public_key().public_bytes(der, spki) != leaf.public_key().public_bytes(der, spki):
        return None
    at = datetime.datetime.fromtimestamp(now, datetime.UTC)
    if not leaf.not_valid_before_utc <= at < leaf.not_valid_after_utc:
        return None
    return CachedPair(cert_pem, key_pem, leaf)
