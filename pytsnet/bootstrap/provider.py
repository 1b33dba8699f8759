"""An ID token for ``Config.audience`` from the CI provider the process runs in (Go's ``wif``).

Only GitHub Actions (``ACTIONS_ID_TOKEN_REQUEST_URL`` + ``ACTIONS_ID_TOKEN_REQUEST_TOKEN``: ``GET`` the
URL with ``audience=…`` and the bearer token, the answer's ``value`` is the JWT). Go also probes AWS
and GCP metadata servers (link-local addresses); this port does not, and says so.
"""

from __future__ import annotations

import json
import os
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import httpx

from pytsnet.bootstrap.api import TIMEOUT, read_bounded
from pytsnet.errors import ConfigError, NetworkUnreachable, OAuthRejected

__all__ = ["provider_id_token"]


def provider_id_token(audience: str) -> str:
    """The provider's ID token for ``audience``; ``ConfigError`` outside a supported provider."""
    url = os.environ.get("ACTIONS_ID_TOKEN_REQUEST_URL", "")
    bearer = os.environ.get("ACTIONS_ID_TOKEN_REQUEST_TOKEN", "")
    if not url or not bearer:
        raise ConfigError("Config.audience (TS_AUDIENCE) needs an ID token provider: this port supports "
                          "GitHub Actions (ACTIONS_ID_TOKEN_REQUEST_URL/TOKEN, `permissions: id-token: "
                          "write`); elsewhere pass the token as Config.id_token / TS_ID_TOKEN")
    parts = urlsplit(url)
    query = [*((k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "audience"),
             ("audience", audience.strip())]
    target = urlunsplit(parts._replace(query=urlencode(query)))
    step = "GitHub Actions ID token request"
    try:
        headers = {"Authorization": f"Bearer {bearer}", "Accept": "application/json"}
        with httpx.Client(timeout=TIMEOUT, trust_env=False, follow_redirects=False) as c, \
                c.stream("GET", target, headers=headers) as r:
            status, raw = r.status_code, read_bounded(r)
    except httpx.HTTPError as e:
        raise NetworkUnreachable(f"{step}: {type(e).__name__}") from None
    if status // 100 != 2:
        raise OAuthRejected(step, status, raw[:200].decode("utf-8", "replace").strip())
    try:
        value = json.loads(raw).get("value")
    except (ValueError, AttributeError):
        value = None
    if not isinstance(value, str) or not value.strip():
        raise OAuthRejected(step, status, "the answer has no token value")
    return value.strip()
