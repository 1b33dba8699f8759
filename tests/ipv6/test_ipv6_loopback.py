"""``Config.ipv6`` end to end on this host's loopback (no namespaces): off by default (nothing IPv6
bound or advertised, the tailnet's IPv6 address ignored), on over ``::1`` (control, DERP, STUN and
the direct path all IPv6) and on with a wildcard bind (one dual-stack socket reaching an IPv4 peer).
"""

from __future__ import annotations

import ipaddress
import sys
from pathlib import Path

import anyio
import pytest

from pytsnet.localnet.server import LocalTailnet
from pytsnet.testing.dnsclient import udp_query
from pytsnet.testing.polling import wait_until
from pytsnet.testing.tailnet import new_device

sys.path.insert(0, str(Path(__file__).resolve().parent))

from ipv6_rig import FAST_NODE, payload, transfer, udp_local_addr, wait_direct


def _has_ipv6_loopback() -> bool:
    import socket
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


needs_v6 = pytest.mark.skipif(not _has_ipv6_loopback(), reason="no IPv6 loopback on this host")


def test_default_is_ipv4_only_even_on_an_ipv6_tailnet(tmp_path: Path) -> None:
    """Default Config: control hands out IPv6 addresses (localnet ``--ipv6``) but the node keeps
    none, binds no IPv6 socket, advertises no IPv6 endpoint and answers no AAAA for itself."""
    with LocalTailnet(tmp_path / "c", listen="127.0.0.1:0", ipv6=True) as net:
        a = new_device(net, tmp_path, "alpha", bind_host="0.0.0.0", **FAST_NODE).start()
        b = new_device(net, tmp_path, "beta", bind_host="0.0.0.0", **FAST_NODE).start()
        try:
            for d in (a, b):
                d.wait_until_running_blocking(20)
            wait_until(lambda: len(a.status().peers) == 1 and len(b.status().peers) == 1, 20, "peers")
            assert all(":" not in ip for ip in a.tailscale_ips()), a.tailscale_ips()
            assert all(n.ipv6 for n in net.store.nodes()), "control assigned IPv6 (the knob drops it)"
            addr = udp_local_addr(a)  # an AF_INET socket (an IPv6 or dual-stack one shows [::]:port)
            assert addr.startswith("0.0.0.0:"), addr
            # beta's endpoints as alpha's control told them: IPv4 only
            wait_until(lambda: bool(_peer_endpoints(net, "beta")), 20, "beta's endpoints reached control")
            eps = _peer_endpoints(net, "beta")
            assert eps and all(_family(e) == 4 for e in eps), eps

            async def main() -> None:
                m = await udp_query(a, "alpha", "AAAA")
                assert not [rd for rr in m.answer for rd in rr], m
                m = await udp_query(a, "beta", "AAAA")  # an IPv4-only node gives no peer AAAA either
                assert not [rd for rr in m.answer for rd in rr], m
            anyio.run(main)
            assert transfer(a, b, 256 << 10) == payload(256 << 10, b"ipv6")
            assert ipaddress.ip_address(wait_direct(a).rsplit(":", 1)[0].strip("[]")).version == 4
        finally:
            a.close()
            b.close()


def _family(endpoint: str) -> int:
    return ipaddress.ip_address(endpoint.rsplit(":", 1)[0].strip("[]")).version


def _peer_endpoints(net: LocalTailnet, hostname: str) -> list[str]:
    """The endpoints control stores for ``hostname`` (what its peers are told)."""
    for n in net.store.nodes():
        if n.hostname == hostname:
            return list(n.endpoints)
    return []


@needs_v6
def test_ipv6_only_loopback_direct_and_byte_exact(tmp_path: Path) -> None:
    """ipv6=True, everything on ``::1``: control over IPv6, DERP and STUN over IPv6 (the DERP map has
    ``IPv4: none``), the direct path an IPv6 endpoint, a 1 MiB transfer byte-exact."""
    with LocalTailnet(tmp_path / "c", listen="[::1]:0", ipv6=True) as net:
        assert net.control_url.startswith("http://[::1]:")
        a = new_device(net, tmp_path, "alpha", bind_host="::1", ipv6=True, **FAST_NODE).start()
        b = new_device(net, tmp_path, "beta", bind_host="::1", ipv6=True, **FAST_NODE).start()
        try:
            for d in (a, b):
                d.wait_until_running_blocking(20)
            wait_until(lambda: len(a.status().peers) == 1 and len(b.status().peers) == 1, 20, "peers")
            assert any(":" in ip for ip in a.tailscale_ips())
            assert udp_local_addr(a).startswith("[::1]:")
            n = 1 << 20
            assert transfer(a, b, n) == payload(n, b"ipv6")
            assert wait_direct(a).startswith("[::1]:")
            assert wait_direct(b).startswith("[::1]:")
        finally:
            a.close()
            b.close()


@needs_v6
def test_dual_stack_socket_reaches_an_ipv4_peer(tmp_path: Path) -> None:
    """ipv6=True with the wildcard bind: one socket on ``::`` (V6ONLY off) that talks to an IPv4-only
    peer over IPv4 (v4-mapped on the wire of the socket API, plain IPv4 in paths and status)."""
    with LocalTailnet(tmp_path / "c", listen="127.0.0.1:0") as net:
        a = new_device(net, tmp_path, "alpha", bind_host="0.0.0.0", ipv6=True, **FAST_NODE).start()
        b = new_device(net, tmp_path, "beta", bind_host="127.0.0.1", **FAST_NODE).start()
        try:
            for d in (a, b):
                d.wait_until_running_blocking(20)
            wait_until(lambda: len(a.status().peers) == 1 and len(b.status().peers) == 1, 20, "peers")
            assert udp_local_addr(a).startswith("[::]:")
            assert transfer(a, b, 256 << 10) == payload(256 << 10, b"ipv6")
            assert transfer(b, a, 256 << 10, port=7101) == payload(256 << 10, b"ipv6")
            for d in (a, b):
                addr = wait_direct(d)
                assert ipaddress.ip_address(addr.rsplit(":", 1)[0].strip("[]")).version == 4, addr
        finally:
            a.close()
            b.close()
