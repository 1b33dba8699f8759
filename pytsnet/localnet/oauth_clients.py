"""OAuth clients of the local tailnet: secret clients and workload-identity (federated) clients.

A record lives in the database's ``meta`` table under ``oauth_client:<id>`` (JSON), so the admin
command can add one while another process serves, and the server reads it per request. A secret
client's secret (``tskey-client-<id>-<48 hex>``) is shown once, at creation; only its SHA-256 is
stored (a 192-bit random secret needs no slow hash). A federated client holds the issuer, the
subject pattern, the audience and the public key (PEM) its ID tokens must be signed with.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from pytsnet.localnet.store import Store

__all__ = ["SCOPES", "Federation", "OAuthClient", "OAuthClientError", "authenticate_secret",
           "create_federated_client", "create_secret_client", "get_client"]

SCOPES = frozenset({"all", "auth_keys", "auth_keys:read"})
"""Scopes this API knows (Tailscale's names); minting a key needs ``auth_keys`` or ``all``."""
SECRET_PREFIX = "tskey-client-"
_META = "oauth_client:"


class OAuthClientError(ValueError):
    """A client cannot be created as asked (unknown scope, bad tag, unreadable public key)."""


@dataclass(frozen=True)
class Federation:
    issuer: str
    subject: str
    """An ``fnmatch`` pattern of the ``sub`` claim (``repo:org/app:*``), as Tailscale's wildcards."""
    audience: str
    public_key_pem: str = field(repr=False)


@dataclass(frozen=True)
class OAuthClient:
    id: str
    scopes: tuple[str, ...]
    tags: tuple[str, ...]
    created: float
    secret_hash: str = field(default="", repr=False)
    federation: Federation | None = None

    def may_mint(self) -> bool:
        return bool({"auth_keys", "all"} & set(self.scopes))


def _hash(secret: str) -> str:
    return "sha256:" + hashlib.sha256(secret.encode()).hexdigest()


def _check(scopes: list[str], tags: list[str]) -> None:
    unknown = sorted(set(scopes) - SCOPES)
    if not scopes or unknown:
        raise OAuthClientError(f"scopes must be among {sorted(SCOPES)}, got {scopes}")
    bad = [t for t in tags if not t.startswith("tag:") or len(t) <= 4]
    if bad or not tags:
        raise OAuthClientError(f"an OAuth client needs tags like tag:NAME (its keys carry them), got {tags}")


def _save(store: Store, c: OAuthClient) -> None:
    doc: dict[str, object] = {"scopes": list(c.scopes), "tags": list(c.tags), "created": c.created,
                              "secret_hash": c.secret_hash}
    if c.federation is not None:
        f = c.federation
        doc["federation"] = {"issuer": f.issuer, "subject": f.subject, "audience": f.audience,
                             "public_key_pem": f.public_key_pem}
    store.set_meta(_META + c.id, json.dumps(doc))


def _new_id() -> str:
    return "k" + secrets.token_hex(6) + "CNTRL"


def create_secret_client(store: Store, scopes: list[str], tags: list[str]) -> tuple[OAuthClient, str]:
    """A new client and its secret (the only time the secret exists in clear)."""
    _check(scopes, tags)
    cid = _new_id()
    secret = f"{SECRET_PREFIX}{cid}-{secrets.token_hex(24)}"
    client = OAuthClient(cid, tuple(scopes), tuple(sorted(set(tags))), time.time(), _hash(secret))
    _save(store, client)
    return client, secret


def create_federated_client(store: Store, scopes: list[str], tags: list[str], *, issuer: str, subject: str,
                            audience: str, public_key_pem: str) -> OAuthClient:
    """A client that ID tokens from ``issuer`` (signed with this RSA or P-256 key) authenticate."""
    _check(scopes, tags)
    if not issuer or not subject or not audience:
        raise OAuthClientError("a federated client needs an issuer, a subject pattern and an audience")
    try:
        key = load_pem_public_key(public_key_pem.encode())
    except (ValueError, TypeError) as e:
        raise OAuthClientError(f"public key: not a PEM public key ({e})") from None
    if not isinstance(key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey):
        raise OAuthClientError("public key: want RSA (RS256) or P-256 (ES256)")
    client = OAuthClient(_new_id(), tuple(scopes), tuple(sorted(set(tags))), time.time(),
                         federation=Federation(issuer, subject, audience, public_key_pem))
    _save(store, client)
    return client


def get_client(store: Store, client_id: str) -> OAuthClient | None:
    raw = store.get_meta(_META + client_id) if client_id else None
    if raw is None:
        return None
    doc = json.loads(raw)
    fed = doc.get("federation")
    return OAuthClient(client_id, tuple(doc["scopes"]), tuple(doc["tags"]), float(doc["created"]),
                       str(doc.get("secret_hash", "")), Federation(**fed) if fed else None)


def authenticate_secret(store: Store, secret: str) -> OAuthClient | None:
    """The secret client this secret belongs to (its ID is inside it), or None. Constant-time compare."""
    if not secret.startswith(SECRET_PREFIX):
        return None
    cid = secret[len(SECRET_PREFIX):].rpartition("-")[0]
    client = get_client(store, cid)
    if client is None or not client.secret_hash:
        return None
    return client if hmac.compare_digest(client.secret_hash, _hash(secret)) else None
