"""localnet's /api/v2 slice fails closed, the admin command prints a working secret stored hashed, and
the credential attributes parse as Go's (``?ephemeral=…&preauthorized=…&baseURL=…``)."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from pytsnet.bootstrap.attributes import parse_client_id, parse_client_secret
from pytsnet.bootstrap.resolve import default_base_url
from pytsnet.config import Config
from pytsnet.errors import ConfigError
from pytsnet.localnet.oauth_clients import authenticate_secret, create_secret_client
from pytsnet.localnet.server import LocalTailnet


def _post(net: LocalTailnet, path: str, **kw: object) -> httpx.Response:
    with httpx.Client(trust_env=False, timeout=10) as c:
        return c.post(net.control_url + path, **kw)  # type: ignore[arg-type]


def test_keys_endpoint_needs_a_live_token_and_a_well_formed_request(net: LocalTailnet) -> None:
    _, secret = create_secret_client(net.store, ["auth_keys"], ["tag:a"])
    caps = {"capabilities": {"devices": {"create": {"tags": ["tag:a"]}}}}
    r = _post(net, "/api/v2/tailnet/-/keys", json=caps)
    assert r.status_code == 401 and r.json() == {"message": "API token invalid"}
    r = _post(net, "/api/v2/tailnet/-/keys", json=caps, headers={"Authorization": "Bearer tskey-api-forged"})
    assert r.status_code == 401
    basic = base64.b64encode(f"x:{secret}".encode()).decode()
    tok = _post(
        net,
        "/api/v2/oauth/token",
        data={"grant_type": "client_credentials"},
        headers={"Authorization": f"Basic {basic}"},
    ).json()
    assert tok["token_type"] == "Bearer" and tok["expires_in"] == 3600 and tok["scope"] == "auth_keys"
    auth = {"Authorization": f"Bearer {tok['access_token']}"}
    for body in (
        b"not json",
        b"{}",
        json.dumps({"capabilities": {"devices": {"create": {"tags": "tag:a"}}}}).encode(),
        json.dumps(
            {"capabilities": {"devices": {"create": {"tags": ["tag:a"], "ephemeral": "yes"}}}}
        ).encode(),
    ):
        r = _post(net, "/api/v2/tailnet/-/keys", content=body, headers=auth)
        assert r.status_code == 400 and "invalid key request" in r.json()["message"]
    r = _post(net, "/api/v2/tailnet/-/keys", json={"capabilities": {"devices": {"create": {}}}}, headers=auth)
    assert r.status_code == 400 and "tags are required" in r.json()["message"]
    r = _post(net, "/api/v2/tailnet/-/keys", json=caps, headers=auth)
    assert r.status_code == 200
    doc = r.json()
    assert doc["key"].startswith("tskey-auth-") and doc["capabilities"]["devices"]["create"]["tags"] == [
        "tag:a"
    ]
    assert net.store.get_authkey(doc["key"]) is not None  # a real key in the database
    with httpx.Client(trust_env=False) as c:
        assert c.get(net.control_url + "/api/v2/tailnet/-/keys").status_code == 405
        assert c.post(net.control_url + "/api/v2/devices").status_code == 404


def test_client_secret_in_the_form_and_wrong_grant(net: LocalTailnet) -> None:
    _, secret = create_secret_client(net.store, ["auth_keys"], ["tag:a"])
    r = _post(net, "/api/v2/oauth/token", data={"grant_type": "client_credentials", "client_secret": secret})
    assert r.status_code == 200
    r = _post(net, "/api/v2/oauth/token", data={"grant_type": "password", "client_secret": secret})
    assert r.status_code == 400 and r.json()["error"] == "unsupported_grant_type"
    r = _post(
        net,
        "/api/v2/oauth/token",
        data={"grant_type": "client_credentials"},
        headers={"Authorization": "Basic !!!"},
    )
    assert r.status_code == 401 and r.json()["error"] == "invalid_client"


def test_a_read_only_client_cannot_mint(net: LocalTailnet) -> None:
    _, secret = create_secret_client(net.store, ["auth_keys:read"], ["tag:a"])
    tok = _post(
        net, "/api/v2/oauth/token", data={"grant_type": "client_credentials", "client_secret": secret}
    ).json()["access_token"]
    r = _post(
        net,
        "/api/v2/tailnet/-/keys",
        json={"capabilities": {"devices": {"create": {"tags": ["tag:a"]}}}},
        headers={"Authorization": f"Bearer {tok}"},
    )
    assert r.status_code == 403 and "auth_keys" in r.json()["message"]


def test_admin_command_prints_id_and_secret_stored_hashed(tmp_path: Path) -> None:
    state = tmp_path / "ln"
    LocalTailnet(state).store.close()  # an existing database (admin commands never create one)
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytsnet",
            "localnet",
            "--state",
            str(state),
            "oauth",
            "create",
            "--scopes",
            "auth_keys",
            "--tags",
            "tag:a,tag:b",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    lines = dict(line.split(": ", 1) for line in out.strip().splitlines())
    cid, secret = lines["client id"], lines["client secret"]
    assert secret.startswith(f"tskey-client-{cid}-")
    db = b"".join(p.read_bytes() for p in state.iterdir() if p.is_file())
    assert secret.encode() not in db and secret.rpartition("-")[2].encode() not in db
    from pytsnet.localnet.store import Store

    store = Store.open_existing(state)
    client = authenticate_secret(store, secret)
    assert client is not None and client.id == cid and client.tags == ("tag:a", "tag:b")
    assert authenticate_secret(store, secret[:-1] + ("0" if secret[-1] != "0" else "1")) is None
    store.close()
    bad = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytsnet",
            "localnet",
            "--state",
            str(state),
            "oauth",
            "create",
            "--scopes",
            "devices:core",
            "--tags",
            "tag:a",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode != 0 and "scopes must be among" in bad.stderr


def test_attributes_parse_as_go() -> None:
    o = parse_client_secret("tskey-client-k1-abc")
    assert (o.credential, o.ephemeral, o.preauthorized, o.base_url) == (
        "tskey-client-k1-abc",
        True,
        False,
        "",
    )
    o = parse_client_secret("tskey-client-k1-abc?ephemeral=false&preauthorized=true&baseURL=http://h:1/")
    assert (o.credential, o.ephemeral, o.preauthorized, o.base_url) == (
        "tskey-client-k1-abc",
        False,
        True,
        "http://h:1",
    )
    assert "abc" not in repr(o)
    with pytest.raises(ConfigError, match="unknown attribute 'bar'"):
        parse_client_secret("tskey-client-k1-abc?bar=1")
    with pytest.raises(ConfigError, match="not a boolean"):
        parse_client_secret("tskey-client-k1-abc?ephemeral=maybe")
    assert (parse_client_id("cid").ephemeral, parse_client_id("cid").preauthorized) == (True, False)
    o = parse_client_id("cid?preauthorized=true")  # Go: a suffix sets only what it names
    assert (o.credential, o.ephemeral, o.preauthorized) == ("cid", False, True)
    with pytest.raises(ConfigError, match="unknown attribute 'baseURL'"):
        parse_client_id("cid?baseURL=x")


def test_base_url_default_follows_the_control_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TS_BASE_URL", raising=False)
    monkeypatch.delenv("TS_CONTROL_URL", raising=False)
    assert default_base_url(Config(ephemeral=True).resolved()) == "https://api.tailscale.com"
    assert (
        default_base_url(Config(ephemeral=True, control_url="http://127.0.0.1:9/").resolved())
        == "http://127.0.0.1:9"
    )
    monkeypatch.setenv("TS_BASE_URL", "http://api.test/")
    assert default_base_url(Config(ephemeral=True).resolved()) == "http://api.test"
    monkeypatch.setenv("TS_CLIENT_SECRET", "tskey-client-x-y")
    cfg = Config(ephemeral=True).resolved()
    assert cfg.client_secret == "tskey-client-x-y" and "tskey-client" not in repr(cfg)


def test_precedence_as_go_tsnet(monkeypatch: pytest.MonkeyPatch) -> None:
    """An auth key wins over a client secret; with state nothing is minted (unless forced); no
    request is made in any of these (the API URL is unroutable on purpose)."""
    from pytsnet.bootstrap import resolve_auth_key

    for var in ("TS_AUTHKEY", "TS_AUTH_KEY", "TS_CLIENT_SECRET", "TS_CLIENT_ID", "TSNET_FORCE_LOGIN"):
        monkeypatch.delenv(var, raising=False)
    base = {"ephemeral": True, "control_url": "http://127.0.0.1:9", "tags": ("tag:a",)}
    cfg = Config(auth_key="tskey-auth-plain", client_secret="tskey-client-k-s", **base).resolved()  # type: ignore[arg-type]
    assert resolve_auth_key(cfg, has_state=False) == "tskey-auth-plain"
    cfg = Config(client_secret="tskey-client-k-s", **base).resolved()  # type: ignore[arg-type]
    assert resolve_auth_key(cfg, has_state=True) == ""
    cfg = Config(auth_key="tskey-client-k-s", **base).resolved()  # type: ignore[arg-type]
    assert resolve_auth_key(cfg, has_state=True) == ""  # a secret is never sent as an auth key
    assert resolve_auth_key(Config(**base).resolved(), has_state=False) == ""  # type: ignore[arg-type]


def test_a_hostile_api_answer_is_read_bounded_and_typed(monkeypatch: pytest.MonkeyPatch) -> None:
    """A 64 MiB answer is cut at ``MAX_ANSWER`` while streaming (never buffered whole) and is a typed
    refusal, not a crash."""
    from pytsnet.bootstrap import api
    from pytsnet.errors import OAuthRejected

    pulled = 0

    def endless() -> object:
        nonlocal pulled
        for _ in range(1024):
            pulled += 1
            yield b"x" * (64 << 10)

    real = httpx.Client

    def client(**kw: object) -> httpx.Client:
        transport = httpx.MockTransport(lambda req: httpx.Response(200, content=endless()))  # type: ignore[arg-type]
        return real(transport=transport, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(api.httpx, "Client", client)
    with pytest.raises(OAuthRejected, match="no access_token"):
        api.client_credentials_token("http://api.test", "k", "tskey-client-k-s")
    assert pulled <= 2  # 64 KiB read, not 64 MiB
