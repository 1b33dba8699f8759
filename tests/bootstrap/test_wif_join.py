"""Workload identity federation (Go's feature/identityfederation): an ID token localnet trusts joins.

localnet holds a federated OAuth client (issuer, subject pattern, audience, the issuer's public key);
the node exchanges its ID token at ``/api/v2/oauth/token-exchange`` and mints a tagged key. A token
signed by another key, for another audience or subject, or expired, is refused with a typed error.
"""

from __future__ import annotations

import http.server
import json
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from idtoken_issuer import Issuer

from pytsnet.device import ActorDevice
from pytsnet.errors import ConfigError, OAuthRejected, TagsRequired
from pytsnet.localnet.idtoken import IdTokenRejected, verify_id_token
from pytsnet.localnet.oauth_clients import OAuthClient, create_federated_client
from pytsnet.localnet.server import LocalTailnet

Make = Callable[..., ActorDevice]


def _federated(net: LocalTailnet, issuer: Issuer, tags: list[str] | None = None) -> OAuthClient:
    return create_federated_client(net.store, ["auth_keys"], tags or ["tag:ci"], issuer=issuer.url,
                                   subject="repo:org/app:*", audience="api://tailscale",
                                   public_key_pem=issuer.public_pem)


def test_id_token_joins_with_the_requested_tags(net: LocalTailnet, make_device: Make, issuer: Issuer,
                                                caplog: pytest.LogCaptureFixture) -> None:
    client = _federated(net, issuer)
    token = issuer.token()
    dev = make_device("wif", net, client_id=client.id, id_token=token, tags=("tag:ci",))
    dev.start()
    dev.wait_until_running_blocking(30)
    st = dev.status()
    assert st.self_node is not None and st.self_node.tags == ["tag:ci"]
    assert net.node("wif").ephemeral  # Go: a client ID without attributes mints an ephemeral key
    assert token not in "\n".join(r.getMessage() for r in caplog.records) + repr(dev.config)


def test_bad_signature_is_refused(net: LocalTailnet, make_device: Make, issuer: Issuer) -> None:
    client = _federated(net, issuer)
    forged = issuer.token(key=ec.generate_private_key(ec.SECP256R1()))
    dev = make_device("forged", net, client_id=client.id, id_token=forged, tags=("tag:ci",))
    with pytest.raises(OAuthRejected) as e:
        dev.start()
    assert e.value.step == "ID token exchange" and e.value.status == 400
    assert "bad signature" in e.value.message
    assert net.api is not None and net.api.stats["keys_minted"] == 0 and not net.nodes()


def test_tags_and_identity_fields_checked_before_any_request(net: LocalTailnet, make_device: Make,
                                                             issuer: Issuer) -> None:
    client = _federated(net, issuer)
    with pytest.raises(TagsRequired):
        make_device("a", net, client_id=client.id, id_token=issuer.token()).start()
    with pytest.raises(ConfigError, match=r"id_token .* and Config.audience .* are empty"):
        make_device("b", net, client_id=client.id, tags=("tag:ci",)).start()
    with pytest.raises(ConfigError, match="only one of"):
        make_device("c", net, client_id=client.id, id_token="x", audience="y", tags=("tag:ci",)).start()
    with pytest.raises(ConfigError, match="client_id"):
        make_device("d", net, id_token=issuer.token(), tags=("tag:ci",)).start()
    assert net.api is not None
    assert net.api.stats["token_refusals"] == 0 and net.api.stats["tokens_issued"] == 0


def test_tag_outside_the_federated_client_is_refused(net: LocalTailnet, make_device: Make,
                                                     issuer: Issuer) -> None:
    from pytsnet.errors import TagsNotPermitted

    client = _federated(net, issuer)
    dev = make_device("wide", net, client_id=client.id, id_token=issuer.token(), tags=("tag:prod",))
    with pytest.raises(TagsNotPermitted):
        dev.start()


@pytest.fixture
def github_oidc(issuer: Issuer, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[dict[str, str]]]:
    """A stand-in for GitHub Actions' ID token endpoint on loopback (Go's wif.acquireGitHubActionsIDToken)."""
    seen: list[dict[str, str]] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            from urllib.parse import parse_qs, urlsplit
            q = {k: v[-1] for k, v in parse_qs(urlsplit(self.path).query).items()}
            seen.append({**q, "auth": self.headers.get("Authorization", "")})
            body = json.dumps({"value": issuer.token(aud=q.get("audience", ""))}).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    srv = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    monkeypatch.setenv("ACTIONS_ID_TOKEN_REQUEST_URL", f"http://127.0.0.1:{srv.server_port}/token?api-version=2.0")
    monkeypatch.setenv("ACTIONS_ID_TOKEN_REQUEST_TOKEN", "gh-request-token")
    yield seen
    srv.shutdown()
    srv.server_close()


def test_audience_fetches_the_token_from_github_actions(net: LocalTailnet, make_device: Make, issuer: Issuer,
                                                        github_oidc: list[dict[str, str]]) -> None:
    client = _federated(net, issuer)
    dev = make_device("gha", net, client_id=f"{client.id}?ephemeral=false", audience="api://tailscale",
                      tags=("tag:ci",))
    dev.start()
    dev.wait_until_running_blocking(30)
    assert github_oidc == [{"api-version": "2.0", "audience": "api://tailscale",
                            "auth": "Bearer gh-request-token"}]
    assert net.node("gha").tags == ["tag:ci"] and not net.node("gha").ephemeral


def test_audience_outside_a_provider_is_config_error(net: LocalTailnet, make_device: Make, issuer: Issuer,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ACTIONS_ID_TOKEN_REQUEST_URL", raising=False)
    client = _federated(net, issuer)
    with pytest.raises(ConfigError, match="GitHub Actions"):
        make_device("noprov", net, client_id=client.id, audience="api://tailscale", tags=("tag:ci",)).start()


# -- the verifier on its own: every claim check fails closed -------------------------------------------
@pytest.mark.parametrize(("mutate", "why"), [
    ({"aud": "api://other"}, "audience"),
    ({"aud": ["x", "api://other"]}, "audience"),
    ({"sub": "repo:evil/app:ref"}, "subject"),
    ({"iss": "https://evil.example"}, "issuer"),
    ({"lifetime": -3600}, "expired"),
    ({"exp": None}, "expired"),
    ({"nbf": time.time() + 3600}, "not valid yet"),
])
def test_claims_fail_closed(issuer: Issuer, tmp_path: Any, mutate: dict[str, Any], why: str) -> None:
    from pytsnet.localnet.oauth_clients import Federation
    fed = Federation(issuer.url, "repo:org/app:*", "api://tailscale", issuer.public_pem)
    verify_id_token(issuer.token(), fed, time.time())  # the unmutated token passes
    with pytest.raises(IdTokenRejected, match=why):
        verify_id_token(issuer.token(**mutate), fed, time.time())


@pytest.mark.parametrize("token", ["", "a.b", "a.b.c.d", "!!!.@@@.###", "e30.e30.", "x" * 20000])
def test_malformed_tokens_are_typed(issuer: Issuer, token: str) -> None:
    from pytsnet.localnet.oauth_clients import Federation
    fed = Federation(issuer.url, "*", "api://tailscale", issuer.public_pem)
    with pytest.raises(IdTokenRejected):
        verify_id_token(token, fed, time.time())


def test_alg_none_and_hmac_are_refused(issuer: Issuer) -> None:
    import base64
    import hashlib
    import hmac

    from pytsnet.localnet.oauth_clients import Federation
    fed = Federation(issuer.url, "*", "api://tailscale", issuer.public_pem)
    _, body, _ = issuer.token().split(".")
    for alg in ("none", "HS256", "RS256"):
        head = base64.urlsafe_b64encode(json.dumps({"alg": alg}).encode()).rstrip(b"=").decode()
        mac = hmac.new(issuer.public_pem.encode(), f"{head}.{body}".encode(), hashlib.sha256).digest()
        sig = base64.urlsafe_b64encode(mac).rstrip(b"=").decode() if alg != "none" else ""
        with pytest.raises(IdTokenRejected, match="algorithm"):
            verify_id_token(f"{head}.{body}.{sig}", fed, time.time())
