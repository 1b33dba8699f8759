"""The three API calls of a bootstrap, as Go makes them, over ``httpx`` (no proxy from the environment).

* ``POST {base}/api/v2/oauth/token`` — OAuth2 client credentials (Go's ``clientcredentials``: HTTP
  Basic with the query-escaped client ID and secret, ``grant_type=client_credentials`` in the form).
* ``POST {base}/api/v2/oauth/token-exchange`` — workload identity: ``client_id`` and ``jwt`` in the
  form (Go's ``oauth2.Config.Exchange`` with those two parameters).
* ``POST {base}/api/v2/tailnet/-/keys`` — ``{"capabilities":{"devices":{"create":{…}}}}`` with the
  bearer token; the answer's ``key`` is the auth key.

A refusal becomes a typed error carrying the API's ``message`` (Go's ``ErrResponse``); the secret is
sent only in the request, never logged or put in an error.
"""

from __future__ import annotations

import base64
import json
from typing import Any
from urllib.parse import quote_plus

import httpx

from pytsnet.errors import NetworkUnreachable, OAuthRejected, TagsNotPermitted

__all__ = ["MAX_ANSWER", "TIMEOUT", "client_credentials_token", "create_auth_key", "exchange_id_token",
           "read_bounded"]

TIMEOUT = 10.0
"""Seconds per request (Go's identity federation client uses 10 s)."""
MAX_ANSWER = 64 << 10
"""Largest answer read from the API (a key or a token is a few hundred bytes)."""


def _post(url: str, *, data: dict[str, str] | None = None, body: bytes | None = None,
          headers: dict[str, str], step: str) -> tuple[int, Any]:
    try:
        with httpx.Client(timeout=TIMEOUT, trust_env=False, follow_redirects=False) as c, \
                c.stream("POST", url, data=data, content=body, headers=headers) as r:
            status, raw = r.status_code, read_bounded(r)
    except httpx.HTTPError as e:
        raise NetworkUnreachable(f"{step} at {url}: {type(e).__name__}") from None
    try:
        doc = json.loads(raw) if raw else {}
    except ValueError:
        doc = {"message": raw[:200].decode("utf-8", "replace")}
    return status, doc


def read_bounded(r: httpx.Response) -> bytes:
    """At most ``MAX_ANSWER`` bytes of the body: a hostile API cannot make us buffer without bound."""
    out = bytearray()
    for chunk in r.iter_bytes():
        out += chunk[:MAX_ANSWER - len(out)]
        if len(out) >= MAX_ANSWER:
            break
    return bytes(out)


def _message(doc: Any) -> str:
    """The API's reason: ``message`` (Tailscale API errors) or OAuth2's ``error``/``error_description``."""
    if not isinstance(doc, dict):
        return ""
    parts = [str(doc[k]) for k in ("message", "error", "error_description") if isinstance(doc.get(k), str)]
    return ": ".join(parts)[:300]


def _token(status: int, doc: Any, step: str) -> str:
    if status != 200:
        raise OAuthRejected(step, status, _message(doc))
    token = doc.get("access_token") if isinstance(doc, dict) else None
    if not isinstance(token, str) or not token:
        raise OAuthRejected(step, status, "the answer has no access_token")
    return token


def client_credentials_token(base_url: str, client_id: str, secret: str) -> str:
    """An access token for the OAuth client whose secret this is."""
    basic = base64.b64encode(f"{quote_plus(client_id)}:{quote_plus(secret)}".encode()).decode()
    step = "OAuth token request"
    status, doc = _post(f"{base_url}/api/v2/oauth/token", data={"grant_type": "client_credentials"},
                        headers={"Authorization": f"Basic {basic}"}, step=step)
    return _token(status, doc, step)


def exchange_id_token(base_url: str, client_id: str, id_token: str) -> str:
    """An access token for the federated identity this ID token proves."""
    step = "ID token exchange"
    status, doc = _post(f"{base_url}/api/v2/oauth/token-exchange",
                        data={"grant_type": "authorization_code", "code": "", "client_id": client_id,
                              "jwt": id_token},
                        headers={}, step=step)
    return _token(status, doc, step)


def create_auth_key(base_url: str, access_token: str, tags: tuple[str, ...], *, ephemeral: bool,
                    preauthorized: bool) -> str:
    """A single-use auth key with ``tags`` (Go's ``CreateKey`` with ``Reusable: false``)."""
    caps = {"devices": {"create": {"reusable": False, "ephemeral": ephemeral, "preauthorized": preauthorized,
                                   "tags": list(tags)}}}
    step = "create auth key"
    headers = {"Authorization": f"Bearer {access_token}", "Content-Type": "application/json"}
    status, doc = _post(f"{base_url}/api/v2/tailnet/-/keys", body=json.dumps({"capabilities": caps}).encode(),
                        headers=headers, step=step)
    if status != 200:
        msg = _message(doc)
        if "tag" in msg.lower() and status in (400, 403):
            raise TagsNotPermitted(tags, status, msg)
        raise OAuthRejected(step, status, msg)
    key = doc.get("key") if isinstance(doc, dict) else None
    if not isinstance(key, str) or not key:
        raise OAuthRejected(step, status, "the answer has no key")
    return key
