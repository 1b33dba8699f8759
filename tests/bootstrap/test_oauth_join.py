"""OAuth client secrets (Go's feature/oauthkey): a node mints its own tagged auth key from localnet.

The done-when of issue 19's bootstrap: a node joins with ``Config(client_secret=…)`` and its netmap's
self node carries the requested tags; no tags → ``TagsRequired`` before any request; a tag the
client may not use → ``TagsNotPermitted`` from the API's refusal; a wrong secret → ``OAuthRejected``;
no secret in any log line.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest

from pytsnet.device import ActorDevice
from pytsnet.errors import AuthRejected, ConfigError, OAuthRejected, TagsNotPermitted, TagsRequired
from pytsnet.localnet.oauth_clients import create_secret_client
from pytsnet.localnet.server import LocalTailnet

Make = Callable[..., ActorDevice]


def _client(net: LocalTailnet, tags: list[str]) -> str:
    return create_secret_client(net.store, ["auth_keys"], tags)[1]


def test_client_secret_joins_with_the_requested_tags(net: LocalTailnet, make_device: Make,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    secret = _client(net, ["tag:ci", "tag:web"])
    dev = make_device("oauth", net, client_secret=secret, tags=("tag:ci",))
    dev.start()
    dev.wait_until_running_blocking(30)
    st = dev.status()
    assert st.self_node is not None and st.self_node.tags == ["tag:ci"]
    node = net.node("oauth")
    assert node.tags == ["tag:ci"] and node.ephemeral  # Go's default: ephemeral=true
    assert net.api is not None and net.api.stats["keys_minted"] == 1
    minted = [k for k in net.store.authkeys() if k.tags == ["tag:ci"]]
    assert len(minted) == 1 and not minted[0].reusable and minted[0].used
    text = "\n".join(r.getMessage() for r in caplog.records) + repr(dev.config)
    assert secret not in text and secret.rpartition("-")[2] not in text
    assert "tskey-api-" not in text  # no access token
    assert "tskey-auth-" not in text.replace(minted[0].prefix, "")  # the minted key only by its prefix


def test_secret_in_auth_key_and_attributes_as_go(net: LocalTailnet, make_device: Make) -> None:
    """Go's tsnet takes the secret as the AuthKey too; ``?ephemeral=false`` makes a durable node."""
    secret = _client(net, ["tag:a"])
    dev = make_device("durable", net, auth_key=f"{secret}?ephemeral=false&preauthorized=true",
                      tags=("tag:a",))
    dev.start()
    dev.wait_until_running_blocking(30)
    assert net.node("durable").tags == ["tag:a"] and not net.node("durable").ephemeral


def test_no_tags_is_typed_error_before_any_request(net: LocalTailnet, make_device: Make) -> None:
    secret = _client(net, ["tag:a"])
    dev = make_device("notags", net, client_secret=secret)
    with pytest.raises(TagsRequired) as e:
        dev.start()
    assert isinstance(e.value, ConfigError) and "Config.tags" in str(e.value) and secret not in str(e.value)
    assert net.api is not None and net.api.stats == {"tokens_issued": 0, "token_refusals": 0,
                                                     "keys_minted": 0, "key_refusals": 0}
    assert dev.system is None


def test_tag_the_client_may_not_use_is_typed_refusal(net: LocalTailnet, make_device: Make) -> None:
    secret = _client(net, ["tag:a"])
    dev = make_device("badtag", net, client_secret=secret, tags=("tag:a", "tag:admin"))
    with pytest.raises(TagsNotPermitted) as e:
        dev.start()
    assert e.value.tags == ("tag:a", "tag:admin") and e.value.status == 400
    assert "tag:admin" in e.value.message and "not permitted" in e.value.message
    assert isinstance(e.value, AuthRejected) and e.value.permanent and secret not in str(e.value)
    assert net.api is not None and net.api.stats["key_refusals"] == 1 and net.api.stats["keys_minted"] == 0


def test_wrong_secret_is_typed_auth_error(net: LocalTailnet, make_device: Make) -> None:
    secret = _client(net, ["tag:a"])
    wrong = secret[:-4] + ("0000" if not secret.endswith("0000") else "1111")
    dev = make_device("wrong", net, client_secret=wrong, tags=("tag:a",))
    with pytest.raises(OAuthRejected) as e:
        dev.start()
    assert e.value.status == 401 and e.value.step == "OAuth token request" and wrong not in str(e.value)
    assert not isinstance(e.value, TagsNotPermitted)


def test_client_secret_that_is_not_one_is_config_error(net: LocalTailnet, make_device: Make) -> None:
    dev = make_device("notsecret", net, client_secret="tskey-auth-abc", tags=("tag:a",))
    with pytest.raises(ConfigError, match="not an OAuth client secret"):
        dev.start()


def test_state_present_mints_nothing_unless_forced(net: LocalTailnet, make_device: Make,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Go: with state the node logs in with its node key (the secret is unused);
    ``TSNET_FORCE_LOGIN=1`` mints a key and logs in with it."""
    secret = _client(net, ["tag:a"])
    dev = make_device("again", net, client_secret=f"{secret}?ephemeral=false", tags=("tag:a",))
    dev.start()
    dev.wait_until_running_blocking(30)
    dev.close()
    first = net.node("again").id
    assert net.api is not None and net.api.stats["keys_minted"] == 1
    dev2 = make_device("again", net, client_secret=f"{secret}?ephemeral=false", tags=("tag:a",))
    dev2.start()
    dev2.wait_until_running_blocking(30)
    assert net.api.stats["keys_minted"] == 1
    dev2.close()
    monkeypatch.setenv("TSNET_FORCE_LOGIN", "1")
    dev3 = make_device("again", net, client_secret=f"{secret}?ephemeral=false", tags=("tag:a",))
    dev3.start()
    dev3.wait_until_running_blocking(30)
    assert net.api.stats["keys_minted"] == 2
    assert all(k.used for k in net.store.authkeys())  # the forced login registered with the new key
    assert [n.id for n in net.nodes()] == [first]  # the same node, its key rotated


def test_force_login_re_registers_with_the_auth_key(net: LocalTailnet, make_device: Make,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Go tsnet: with state the auth key is ignored ("Re-run with TSNET_FORCE_LOGIN=1 to force use of
    authkey"); forced, the node logs in again with a new node key and takes the new key's tags."""
    dev = make_device("forced", net, auth_key=net.create_authkey(tags=["tag:old"]))
    dev.start()
    dev.wait_until_running_blocking(30)
    old_key = net.node("forced").node_key
    dev.close()
    key2 = net.create_authkey(tags=["tag:new"])
    dev2 = make_device("forced", net, auth_key=key2)
    dev2.start()
    dev2.wait_until_running_blocking(30)
    assert net.node("forced").tags == ["tag:old"] and not net.store.get_authkey(key2).used  # type: ignore[union-attr]
    dev2.close()
    monkeypatch.setenv("TSNET_FORCE_LOGIN", "1")
    dev3 = make_device("forced", net, auth_key=key2)
    dev3.start()
    dev3.wait_until_running_blocking(30)
    node = net.node("forced")
    assert node.tags == ["tag:new"] and node.node_key != old_key and len(net.nodes()) == 1
    assert net.store.get_authkey(key2).used  # type: ignore[union-attr]
    st = dev3.status()
    assert st.self_node is not None and st.self_node.tags == ["tag:new"]


def test_async_up_keeps_the_event_loop_running_while_minting(make_device: Make, net: LocalTailnet) -> None:
    """The API round trips of ``start()`` run off the caller's loop in ``await dev.up()``: a slow API
    (1 s per answer) does not stall another task, and its refusal still arrives typed."""
    import http.server
    import threading
    import time

    import anyio

    class Slow(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", "0")))
            time.sleep(1.0)
            body = b'{"error": "invalid_client"}'
            self.send_response(401)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    srv = http.server.HTTPServer(("127.0.0.1", 0), Slow)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    dev = make_device("slowapi", net, client_secret="tskey-client-k-s", tags=("tag:a",),
                      base_url=f"http://127.0.0.1:{srv.server_port}")
    ticks = 0

    async def main() -> None:
        async def tick() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await anyio.sleep(0.01)

        async with anyio.create_task_group() as tg:
            tg.start_soon(tick)
            with pytest.raises(OAuthRejected):
                await dev.up(10)
            tg.cancel_scope.cancel()

    try:
        anyio.run(main)
    finally:
        srv.shutdown()
        srv.server_close()
    assert ticks >= 30, ticks  # ~100 in the 1 s the API took; 1 if the loop had been blocked
