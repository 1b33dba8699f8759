"""``id-token``: a node's OIDC ID token from localnet, checked the way a relying party would.

The token is fetched through the LocalAPI (in-process and on the loopback listener with its
credentials), then verified against localnet's published keys (OIDC discovery → JWKS) with
``cryptography`` alone: ES256 over ``header.payload``, then the claims Go's ``tailcfg.TokenResponse``
lists name the asking node.
"""

from __future__ import annotations

import base64
import json
import logging
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from pytsnet.errors import LocalApiError
from pytsnet.localapi.server import LocalRequest
from pytsnet.localapi.types import TokenResponse
from pytsnet.localnet.control_server import BadRequestBody
from pytsnet.testing.tailnet import Tailnet, local_tailnet

pytestmark = pytest.mark.timeout(120)

AUD = "https://sts.example.test/aud"


@pytest.fixture(scope="module")
def tn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tailnet]:
    with local_tailnet(tmp_path_factory.mktemp("idtoken"), ["alpha", "beta"]) as net:
        yield net


def _b64d(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def verify(token: str, control_url: str) -> dict[str, Any]:
    """What a relying party does: discovery → JWKS → the key named by ``kid`` → ES256 → claims."""
    conf = httpx.get(control_url + "/.well-known/openid-configuration", timeout=10).json()
    assert conf["issuer"] == control_url
    jwks = httpx.get(conf["jwks_uri"], timeout=10).json()
    head_b64, body_b64, sig_b64 = token.split(".")
    header = json.loads(_b64d(head_b64))
    assert header["alg"] == "ES256"
    jwk = next(k for k in jwks["keys"] if k["kid"] == header["kid"])
    pub = ec.EllipticCurvePublicNumbers(int.from_bytes(_b64d(jwk["x"]), "big"),
                                        int.from_bytes(_b64d(jwk["y"]), "big"), ec.SECP256R1()).public_key()
    sig = _b64d(sig_b64)
    der = encode_dss_signature(int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big"))
    pub.verify(der, f"{head_b64}.{body_b64}".encode(), ec.ECDSA(hashes.SHA256()))
    claims: dict[str, Any] = json.loads(_b64d(body_b64))
    assert claims["iss"] == conf["issuer"]
    return claims


def test_token_verifies_and_names_the_node(tn: Tailnet, caplog: pytest.LogCaptureFixture) -> None:
    alpha = tn["alpha"]
    caplog.set_level(logging.DEBUG)
    resp = alpha.id_token(AUD)
    assert isinstance(resp, TokenResponse)
    assert resp.id_token not in repr(resp)
    now = time.time()
    claims = verify(resp.id_token, tn.net.control_url)
    assert claims["aud"] == [AUD]
    assert claims["sub"] == tn.name(alpha).rstrip(".") == claims["node"]
    assert claims["key"] == alpha.dataplane_info().state.node_key
    assert sorted(claims["addresses"]) == sorted(alpha.tailscale_ips())
    node = next(n for n in tn.net.nodes() if n.node_key == claims["key"])
    assert claims["nid"] == node.stable_id
    assert claims["nbf"] <= now + 1 and claims["iat"] <= now + 1 < claims["exp"]
    assert "user" in claims and "tags" not in claims  # an untagged node carries its user
    assert claims["domain"] and claims["user"].startswith(claims["domain"] + ":")
    assert resp.id_token not in caplog.text  # never logged, by anyone on the path
    # each token is fresh (jti) and another node's names the other node
    beta_claims = verify(tn["beta"].id_token(AUD).id_token, tn.net.control_url)
    assert beta_claims["key"] == tn["beta"].dataplane_info().state.node_key != claims["key"]
    assert alpha.id_token(AUD).id_token != resp.id_token


def test_tampered_token_fails_verification(tn: Tailnet) -> None:
    token = tn["alpha"].id_token(AUD).id_token
    head, body, sig = token.split(".")
    claims = json.loads(_b64d(body))
    claims["sub"] = "mallory"
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    with pytest.raises(InvalidSignature):
        verify(f"{head}.{forged}.{sig}", tn.net.control_url)


def on_loop(tn: Tailnet, req: dict[str, Any], machine: str) -> tuple[int, bytes]:
    """``ControlServer.id_token`` on the server's own event loop thread (it is not thread-safe)."""
    control = tn.net.control
    assert control is not None
    return tn.net._call(lambda: control.id_token(req, machine))


def _raw_http(addr: tuple[str, int], request: bytes) -> tuple[int, bytes]:
    with socket.create_connection(addr, timeout=10) as s:
        s.sendall(request)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
    head, _, body = out.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


def test_id_token_on_the_loopback_listener(tn: Tailnet) -> None:
    addr, _, cred = tn["alpha"].loopback()
    host, port = addr.rsplit(":", 1)
    get = (f"GET /localapi/v0/id-token?aud={AUD} HTTP/1.1\r\nHost: {addr}\r\nSec-Tailscale: localapi\r\n"
           "Connection: close\r\n").encode()
    basic = b"Authorization: Basic " + base64.b64encode(f":{cred}".encode()) + b"\r\n"
    assert _raw_http((host, int(port)), get + b"\r\n")[0] == 401
    assert _raw_http((host, int(port)), get + b"Authorization: Basic " + base64.b64encode(b":" + b"0" * 32)
                     + b"\r\n\r\n")[0] == 403
    status, body = _raw_http((host, int(port)), get + basic + b"\r\n")
    assert status == 200
    token = TokenResponse.model_validate_json(body).id_token
    assert verify(token, tn.net.control_url)["aud"] == [AUD]


def test_id_token_needs_write_access(tn: Tailnet) -> None:
    """Go ``serveIDToken``: ``PermitWrite`` or 403 "id-token access denied"."""
    api = tn["alpha"].local_api()
    req = LocalRequest("GET", "/localapi/v0/id-token", {"aud": AUD})
    resp = api.handle(req, permit_read=True, permit_write=False)
    assert (resp.status, resp.body) == (403, b"id-token access denied\n")
    assert api.handle(req, permit_read=True, permit_write=True).status == 200


@pytest.mark.parametrize("aud", ["", "   ", "x" * 100_000, "a\x00b", "aud\r\nX-Injected: 1", "caf\u00e9",
                                 "two words"])
def test_hostile_audience_is_400(tn: Tailnet, aud: str) -> None:
    with pytest.raises(LocalApiError) as e:
        tn["alpha"].id_token(aud)
    assert e.value.status == 400
    if not aud.strip():
        assert "no audience requested" in str(e.value)


def test_control_refuses_what_the_node_does_not_own(tn: Tailnet) -> None:
    """Control checks on its own (a hostile client skips the LocalAPI): a bad audience is a 400, a
    node key of another machine, an unknown or absent one a 403, and no token is minted."""
    control = tn.net.control
    assert control is not None
    alpha = next(n for n in tn.net.nodes() if n.node_key == tn["alpha"].dataplane_info().state.node_key)
    before = control.stats["id_tokens"]
    for bad in ("x" * 1000, "a\x01b", "", 7):
        with pytest.raises(BadRequestBody):
            on_loop(tn, {"NodeKey": alpha.node_key, "Audience": bad}, alpha.machine_key)
    other = "mkey:" + "ab" * 32
    assert on_loop(tn, {"NodeKey": alpha.node_key, "Audience": AUD}, other)[0] == 403
    assert on_loop(tn, {"NodeKey": "nodekey:" + "cd" * 32, "Audience": AUD}, alpha.machine_key)[0] == 403
    assert on_loop(tn, {"Audience": AUD}, alpha.machine_key)[0] == 403
    assert control.stats["id_tokens"] == before
    status, body = on_loop(tn, {"NodeKey": alpha.node_key, "Audience": AUD}, alpha.machine_key)
    assert status == 200 and verify(json.loads(body)["id_token"], tn.net.control_url)["key"] == alpha.node_key


def test_logged_out_node_gets_no_netmap(tn: Tailnet, tmp_path: Path) -> None:
    """Go: ``nm == nil`` → 503 "no netmap" — before login and after logout."""
    beta = tn["beta"]
    beta.logout_blocking()
    with pytest.raises(LocalApiError) as e:
        beta.id_token(AUD)
    assert e.value.status == 503 and "no netmap" in str(e.value)
    answer = beta.id_token_answer(AUD)  # the control runner's own check, under the LocalAPI's
    assert (answer.status, answer.error, answer.body) == (503, "no netmap", b"")


def test_tagged_node_carries_tags_not_user(tn: Tailnet) -> None:
    """tailcfg.go: ``tags`` (``<domain>:tag:…``) on a tagged node; ``user``/``uid`` only if not tagged;
    ``exp`` bounded by the token lifetime; an expired node key gets no token."""
    from pytsnet.localnet.oidc import TOKEN_LIFETIME

    control = tn.net.control
    assert control is not None
    machine, nk = "mkey:" + "12" * 32, "nodekey:" + "34" * 32
    node = tn.net.store.add_node(machine_key=machine, node_key=nk, user_id=control.default_user.id,
                                 hostname="Tagged Box", authorized=True, ephemeral=False,
                                 tags=["tag:ci", "tag:prod"], key_expiry=time.time() + 3600)
    try:
        status, body = on_loop(tn, {"NodeKey": nk, "Audience": AUD}, machine)
        assert status == 200
        claims = verify(json.loads(body)["id_token"], tn.net.control_url)
        dom = claims["domain"]
        assert claims["tags"] == [f"{dom}:tag:ci", f"{dom}:tag:prod"]
        assert "user" not in claims and "uid" not in claims
        assert claims["sub"] == claims["node"] and claims["sub"].endswith("." + dom)
        assert claims["addresses"] == [a for a in (node.ipv4, node.ipv6) if a]
        assert claims["exp"] - claims["iat"] == TOKEN_LIFETIME
        tn.net.store.update_node(node.id, key_expiry=time.time() - 1)
        assert on_loop(tn, {"NodeKey": nk, "Audience": AUD}, machine) == (403, b"node key expired\n")
    finally:
        tn.net.store.delete_node(node.id)


def test_signing_key_is_a_0600_file_kept_across_restarts(tmp_path: Path) -> None:
    from pytsnet.localnet.oidc import OidcIssuer
    from pytsnet.localnet.store import Store

    store = Store(tmp_path / "state")
    try:
        first = OidcIssuer(store).jwks()
        path = tmp_path / "state" / "id-token.key"
        assert path.stat().st_mode & 0o777 == 0o600
        assert b"PRIVATE KEY" in path.read_bytes()
        assert OidcIssuer(store).jwks() == first  # a restarted localnet: tokens already out still verify
        assert "d" not in first["keys"][0]  # the public half only
    finally:
        store.close()
