"""Two Python nodes with ONLY IPv6 between them (no IPv4 address but loopback in any namespace),
localnet (control, DERP, STUN) on an IPv6 address of the hub namespace that routes between them.

``ipv6=True``: they register over IPv6, STUN over IPv6, go direct over an IPv6 endpoint and a
TCP transfer is byte-exact; with UDP dropped between them, DERP over IPv6 carries it. The default
(``ipv6=False``) node in the same lab cannot even reach control: nothing IPv6 is used.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from pytsnet.device import ActorDevice
from pytsnet.localnet.server import LocalTailnet
from pytsnet.testing.netns import netns_available
from pytsnet.testing.polling import wait_until
from pytsnet.testing.tailnet import new_device

sys.path.insert(0, str(Path(__file__).resolve().parent))

from ipv6_rig import FAST_NODE, HUB_N1, N1, N2, Lab, payload, transfer, udp_local_addr, wait_direct

pytestmark = pytest.mark.skipif(netns_available() is not None, reason=str(netns_available()))


@pytest.fixture
def lab() -> Iterator[Lab]:
    lab = Lab()
    try:
        yield lab
    finally:
        lab.close()


def _assert_ipv4_free(lab: Lab) -> None:
    for ns in (lab.hub, lab.n1, lab.n2):
        out = ns.sh("ip -4 -o addr show")
        assert all(" lo " in line for line in out.splitlines()), out


def _start(lab: Lab, net: LocalTailnet, tmp: Path, **kw: object) -> tuple[ActorDevice, ActorDevice]:
    with lab.n1.entered():
        a = new_device(net, tmp, "alpha", bind_host="0.0.0.0", **(FAST_NODE | kw)).start()
    with lab.n2.entered():
        b = new_device(net, tmp, "beta", bind_host="0.0.0.0", **(FAST_NODE | kw)).start()
    return a, b


def _host(addr: str) -> str:
    return addr.rsplit(":", 1)[0].strip("[]")


@contextmanager
def _ipv6_pair(lab: Lab, tmp: Path) -> Iterator[tuple[LocalTailnet, ActorDevice, ActorDevice]]:
    """localnet on the hub's IPv6 address and ``ipv6=True`` nodes in ``n1``/``n2``, Running, peers."""
    with lab.hub.entered():
        net = LocalTailnet(tmp / "c", listen=f"[{HUB_N1}]:0", ipv6=True).start()
    try:
        a, b = _start(lab, net, tmp, ipv6=True)
        try:
            for d in (a, b):
                d.wait_until_running_blocking(30)
            wait_until(lambda: len(a.status().peers) == 1 and len(b.status().peers) == 1, 30, "peers")
            yield net, a, b
        finally:
            a.close()
            b.close()
    finally:
        net.close()


def test_ipv6_only_underlay_direct(lab: Lab, tmp_path: Path) -> None:
    _assert_ipv4_free(lab)
    with _ipv6_pair(lab, tmp_path) as (net, a, b):
        n = 2 << 20
        assert transfer(a, b, n) == payload(n, b"ipv6")
        assert _host(wait_direct(a)) == N2  # disco's path: b's IPv6 endpoint
        assert _host(wait_direct(b)) == N1
        assert transfer(b, a, n, port=7101) == payload(n, b"ipv6")
        assert net.relay is not None and net.relay.stun.stats.requests > 0  # STUN over IPv6
        assert net.relay.derp.stats.accepted >= 2  # both homes on the IPv6 DERP node

        def netinfos() -> list[dict[str, object]]:  # what each node told control (Go's NetInfo)
            return [n.hostinfo.get("NetInfo") or {} for n in net.store.nodes()]  # type: ignore[misc]

        wait_until(lambda: all(ni.get("WorkingIPv6") for ni in netinfos()), 30, "NetInfo.WorkingIPv6")
        for ni in netinfos():
            assert ni["WorkingUDP"] is True and ni["OSHasIPv6"] is True, ni
            assert any(k.endswith("-v6") for k in ni["DERPLatency"]), ni  # type: ignore[attr-defined]


def test_ipv6_only_underlay_udp_blocked_uses_derp_over_ipv6(lab: Lab, tmp_path: Path) -> None:
    lab.block(f"ip6 saddr {N1} ip6 daddr {N2} meta l4proto udp")
    lab.block(f"ip6 saddr {N2} ip6 daddr {N1} meta l4proto udp")
    with _ipv6_pair(lab, tmp_path) as (net, a, b):
        n = 1 << 20
        assert transfer(a, b, n) == payload(n, b"ipv6")
        for d in (a, b):
            p = d.status().peers[0]
            assert p.path == "derp" and p.derp_bytes_out > 0 and p.udp_bytes_in == 0, p
        assert net.relay is not None and net.relay.derp.stats.bytes_forwarded >= n


def test_default_node_uses_no_ipv6(lab: Lab, tmp_path: Path) -> None:
    """ipv6=False (the default) on the same IPv6-only underlay, with localnet giving IPv6 addresses:
    the control URL is the app's (an IPv6 literal: reached as any URL it gives, so it logs in), but
    the node keeps no tailnet IPv6 address, binds no IPv6 UDP socket (/proc/net/udp6 of its
    namespace), tells control no IPv6 endpoint and never dials the IPv6-only DERP node, so it never
    reaches Running (Go's Running needs a DERP home): IPv6 is not used unless asked for."""
    with lab.hub.entered():
        net = LocalTailnet(tmp_path / "c", listen=f"[{HUB_N1}]:0", ipv6=True).start()
    try:
        with lab.n1.entered():
            a = new_device(net, tmp_path, "alpha", bind_host="0.0.0.0", **FAST_NODE).start()
        try:
            wait_until(lambda: bool(a.state.addresses), 30, "logged in, addresses known")
            assert all(":" not in ip for ip in a.state.addresses), a.state.addresses
            nodes = net.store.nodes()
            assert all(n.ipv6 for n in nodes), [(n.hostname, n.ipv4, n.ipv6) for n in nodes]
            addr = udp_local_addr(a)
            assert addr.startswith("0.0.0.0:"), addr
            port = int(addr.rsplit(":", 1)[1])
            udp6 = lab.n1.sh("cat /proc/net/udp6").splitlines()[1:]
            assert port not in {int(line.split()[1].rsplit(":", 1)[1], 16) for line in udp6}, udp6
            time.sleep(5)  # past STUN intervals and DERP dial attempts
            assert a.state.state == "Starting", a.state  # no DERP home: it was never dialled
            assert net.relay is not None
            assert net.relay.derp.stats.accepted == 0, net.relay.derp.stats  # never dialled DERP
            assert net.relay.stun.stats.requests == 0, net.relay.stun.stats  # never STUNed
            for node in net.store.nodes():
                assert all(":" not in _host(e) for e in node.endpoints), node.endpoints
        finally:
            a.close()
    finally:
        net.close()
