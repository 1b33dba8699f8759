"""The slice of Tailscale's API v2 that bootstrapping needs, on the control server's listener.

* ``POST /api/v2/oauth/token`` — client credentials (HTTP Basic, or ``client_secret`` in the form);
  the client is found from its secret (Go's ``oauthkey`` sends a placeholder client ID).
* ``POST /api/v2/oauth/token-exchange`` — ``client_id`` + ``jwt``: a federated client's ID token,
  verified with its key (:mod:`idtoken`).
* ``POST /api/v2/tailnet/-/keys`` — with ``Authorization: Bearer <access token>``: mint an auth key
  with the requested tags, each of which the client must hold; else HTTP 400 ``{"message":
  "requested tags [...] are invalid or not permitted"}`` (Tailscale's API error shape, Go's
  ``ErrResponse``).

Access tokens live in memory for ``TOKEN_LIFETIME`` (at most ``MAX_TOKENS``, oldest dropped); the
database keeps only their clients. Log lines name client IDs and key prefixes, never a secret, an
access token, an ID token or a key.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import json
import logging
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, unquote_plus

from pytsnet.localnet import http1
from pytsnet.localnet.idtoken import IdTokenRejected, verify_id_token
from pytsnet.localnet.oauth_clients import OAuthClient, authenticate_secret, get_client
from pytsnet.localnet.server import create_authkey
from pytsnet.localnet.store import Store

__all__ = ["PREFIX", "TOKEN_LIFETIME", "ApiServer"]

log = logging.getLogger(__name__)
PREFIX = "/api/v2/"
TOKEN_LIFETIME = 3600.0
MAX_TOKENS = 10_000
KEY_LIFETIME = "90d"
"""Expiry of a minted key (Tailscale's default for API-created keys)."""


@dataclass(frozen=True)
class _Grant:
    client_id: str
    scopes: tuple[str, ...]
    tags: tuple[str, ...]
    expires: float


def _json(status: int, doc: dict[str, Any], headers: dict[str, str] | None = None) -> bytes:
    return http1.response(status, json.dumps(doc).encode(), headers=headers, content_type="application/json")


def _oauth_error(status: int, code: str, why: str) -> bytes:
    """RFC 6749 §5.2's error body, which Go's oauth2 package reads."""
    return _json(status, {"error": code, "error_description": why})


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class ApiServer:
    """Mounted at ``/api/v2/`` by ``LocalTailnet``; one per server (its access tokens)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._grants: OrderedDict[str, _Grant] = OrderedDict()  # sha256(token) → grant
        self.stats = {"tokens_issued": 0, "token_refusals": 0, "keys_minted": 0, "key_refusals": 0}

    async def handle(self, req: http1.Request, reader: asyncio.StreamReader,
                     writer: asyncio.StreamWriter) -> None:
        writer.write(self.answer(req, time.time()))

    def answer(self, req: http1.Request, now: float) -> bytes:
        path = req.path
        routes = {"/api/v2/oauth/token": self._token, "/api/v2/oauth/token-exchange": self._exchange,
                  "/api/v2/tailnet/-/keys": self._keys}
        fn = routes.get(path)
        if fn is None:
            return _json(404, {"message": "not found"})
        if req.method != "POST":
            return _json(405, {"message": "method not allowed"}, {"Allow": "POST"})
        return fn(req, now)

    # -- tokens ----------------------------------------------------------------------------------------
    def _grant(self, client: OAuthClient, now: float) -> bytes:
        token = "tskey-api-" + secrets.token_hex(24)
        for k in [k for k, g in self._grants.items() if g.expires <= now]:
            del self._grants[k]
        while len(self._grants) >= MAX_TOKENS:
            self._grants.popitem(last=False)
        self._grants[hashlib.sha256(token.encode()).hexdigest()] = _Grant(
            client.id, client.scopes, client.tags, now + TOKEN_LIFETIME)
        self.stats["tokens_issued"] += 1
        log.info("api: access token issued to OAuth client %s", client.id)
        return _json(200, {"access_token": token, "token_type": "Bearer", "expires_in": int(TOKEN_LIFETIME),
                           "scope": " ".join(client.scopes)})

    def _refuse_token(self, client_id: str, why: str, status: int = 401,
                      code: str = "invalid_client") -> bytes:
        self.stats["token_refusals"] += 1
        log.info("api: token refused (client %s): %s", client_id[:32] or "?", why)
        return _oauth_error(status, code, why)

    @staticmethod
    def _form(req: http1.Request) -> dict[str, str]:
        try:
            return {k: v[-1] for k, v in parse_qs(req.body.decode("utf-8"), keep_blank_values=True).items()}
        except UnicodeDecodeError:
            return {}

    def _token(self, req: http1.Request, now: float) -> bytes:
        form = self._form(req)
        if form.get("grant_type") != "client_credentials":
            return self._refuse_token("", "grant_type must be client_credentials", 400,
                                      "unsupported_grant_type")
        secret = form.get("client_secret", "")
        auth = req.headers.get("authorization", "")
        if auth[:6].lower() == "basic ":
            try:  # Go's oauth2 query-escapes both halves (AuthStyleInHeader)
                basic = base64.b64decode(auth[6:].strip(), validate=True).decode()
                secret = unquote_plus(basic.partition(":")[2])
            except (binascii.Error, UnicodeDecodeError):
                return self._refuse_token("", "malformed Basic authorization")
        client = authenticate_secret(self.store, secret)
        if client is None:
            return self._refuse_token("", "client authentication failed")
        return self._grant(client, now)

    def _exchange(self, req: http1.Request, now: float) -> bytes:
        form = self._form(req)
        client_id, jwt = form.get("client_id", ""), form.get("jwt", "")
        client = get_client(self.store, client_id)
        if client is None or client.federation is None:
            return self._refuse_token(client_id, "unknown federated client")
        try:
            verify_id_token(jwt, client.federation, now)
        except IdTokenRejected as e:
            return self._refuse_token(client_id, f"ID token rejected: {e}", 400, "invalid_grant")
        return self._grant(client, now)

    # -- keys ------------------------------------------------------------------------------------------
    def _refuse_key(self, status: int, why: str, client_id: str = "") -> bytes:
        self.stats["key_refusals"] += 1
        log.info("api: key request refused (client %s): %s", client_id or "?", why)
        return _json(status, {"message": why})

    def _keys(self, req: http1.Request, now: float) -> bytes:
        auth = req.headers.get("authorization", "")
        token = auth[7:].strip() if auth[:7].lower() == "bearer " else ""
        grant = self._grants.get(hashlib.sha256(token.encode()).hexdigest()) if token else None
        if grant is None or grant.expires <= now:
            return self._refuse_key(401, "API token invalid")
        if not {"auth_keys", "all"} & set(grant.scopes):
            return self._refuse_key(403, "calling actor does not have enough permissions to perform this "
                                    "function (needs scope auth_keys)", grant.client_id)
        try:
            doc = json.loads(req.body)
            create = doc["capabilities"]["devices"]["create"]
            tags = create.get("tags") or []
            if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
                raise TypeError("tags")
            flags = {k: create.get(k, False) for k in ("reusable", "ephemeral", "preauthorized")}
            if not all(isinstance(v, bool) for v in flags.values()):
                raise TypeError("flags")
        except (ValueError, KeyError, TypeError, AttributeError):
            return self._refuse_key(400, "invalid key request: want {\"capabilities\":{\"devices\":"
                                    "{\"create\":{...}}}}", grant.client_id)
        if not tags:
            return self._refuse_key(400, "tags are required when creating a key with an OAuth client",
                                    grant.client_id)
        refused = sorted(set(tags) - set(grant.tags))
        if refused:
            return self._refuse_key(400, f"requested tags [{', '.join(refused)}] are invalid or not "
                                    "permitted", grant.client_id)
        rec = create_authkey(self.store, reusable=flags["reusable"], ephemeral=flags["ephemeral"],
                             tags=sorted(set(tags)), expiry=KEY_LIFETIME)
        self.stats["keys_minted"] += 1
        log.info("api: OAuth client %s minted auth key %s (tags %s)", grant.client_id, rec.prefix, rec.tags)
        caps = {"devices": {"create": {**flags, "tags": rec.tags}}}
        return _json(200, {"id": str(rec.id), "key": rec.key, "created": _iso(rec.created),
                           "expires": _iso(rec.expires or now), "capabilities": caps})
