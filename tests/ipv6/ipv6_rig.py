"""Shared by the IPv6 tests: fast disco timings, a byte-exact TCP transfer over the tailnet, and
reading a node's magicsock socket and path."""

from __future__ import annotations

import hashlib
import socket
import threading
from typing import Any

from pytsnet.device import ActorDevice
from pytsnet.messages.magicsock import LocalAddr, LocalAddrRequest, PeerPath
from pytsnet.testing.polling import wait_until
from pytsnet.wire.magicsock.endpoint import Timings

FAST = Timings(heartbeat=0.5, trust=2.0, upgrade=1.0, ping_timeout=1.0, ping_interval=0.5,
               session_active=10.0)
FAST_NODE: dict[str, Any] = {"timings": FAST, "stun_interval": (2.0, 3.0), "backoff_max": 1.0}


def payload(n: int, seed: bytes) -> bytes:
    out = bytearray()
    i = 0
    while len(out) < n:
        out += hashlib.sha256(seed + i.to_bytes(8, "big")).digest() * 64
        i += 1
    return bytes(out[:n])


def transfer(src: ActorDevice, dst: ActorDevice, n: int, port: int = 7100, timeout: float = 60.0) -> bytes:
    """``n`` bytes ``src`` → ``dst`` over one tailnet TCP connection; what ``dst`` read to EOF."""
    data = payload(n, b"ipv6")
    lst = dst.listen_blocking(port)
    got = bytearray()
    err: list[BaseException] = []

    def serve() -> None:
        try:
            lst.settimeout(timeout)
            conn, _ = lst.accept()
            conn.settimeout(timeout)
            while chunk := conn.recv(65536):
                got.extend(chunk)
            conn.close()
        except BaseException as e:  # reported by the caller
            err.append(e)

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    s = src.tcp_connect_blocking(dst.tailscale_ips()[0], port, timeout=timeout)
    s.settimeout(timeout)
    s.sendall(data)
    s.shutdown(socket.SHUT_WR)
    t.join(timeout)
    s.close()
    lst.close()
    assert not err, err
    assert not t.is_alive(), "receiver still reading"
    return bytes(got)


def peer_path(dev: ActorDevice) -> PeerPath:
    """``dev``'s path to its one peer, as the magicsock router reports it."""
    peers = dev.status().peers
    assert len(peers) == 1, peers
    return peers[0]  # type: ignore[return-value]


def wait_direct(dev: ActorDevice, timeout: float = 30.0) -> str:
    """Wait until ``dev`` goes direct to its peer; the UDP address it uses."""
    wait_until(lambda: dev.status().peers and dev.status().peers[0].path == "direct", timeout, "direct path")
    addr = dev.status().peers[0].addr
    assert addr is not None
    return addr


def udp_local_addr(dev: ActorDevice) -> str:
    """The magicsock socket's bound address (``[::]:41641`` for a dual-stack one). The data plane is
    spawned once the first netmap arrives, a little after login: wait for its socket actor."""
    system = dev.system
    assert system is not None
    wait_until(lambda: system.lookup("magicsock.udp") is not None, 30, "the data plane's UDP actor")
    ref = system.lookup("magicsock.udp")
    assert ref is not None
    ans = ref.ask(LocalAddrRequest(), timeout=5)
    assert isinstance(ans, LocalAddr)
    return ans.addr


# -- a namespace lab: hub (localnet, the one router) between two node namespaces ------------------
HUB_N1, N1 = "2001:db8:1::1", "2001:db8:1::11"  # RFC 3849 documentation addresses
HUB_N2, N2 = "2001:db8:2::1", "2001:db8:2::12"
HUB4_N1, N1_4 = "198.18.31.1", "198.18.31.11"  # RFC 2544 space, for the dual-stack cells only
HUB4_N2, N2_4 = "198.18.32.1", "198.18.32.12"


class Lab:
    """``hub`` routes between ``n1`` and ``n2`` (IPv6, and IPv4 when ``dual``) and holds localnet on
    ``HUB_N1``; ``block(...)`` drops traffic the hub forwards between the two (nftables)."""

    def __init__(self, dual: bool = False) -> None:
        from pytsnet.testing.netns import Netns, unique_tag, veth_pair
        tag = unique_tag()
        self.hub, self.n1, self.n2 = Netns(f"v6h{tag}"), Netns(f"v6a{tag}"), Netns(f"v6b{tag}")
        self.dual = dual
        try:
            for ns in (self.hub, self.n1, self.n2):
                ns.sh("sysctl -qw net.ipv6.conf.all.disable_ipv6=0 net.ipv6.conf.default.disable_ipv6=0 "
                      "net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.accept_dad=0 "
                      "net.ipv6.conf.lo.disable_ipv6=0")
            self.hub.sh("sysctl -qw net.ipv6.conf.all.forwarding=1")
            for ns, hub_side, node_side, hub4, node4 in ((self.n1, HUB_N1, N1, HUB4_N1, N1_4),
                                                         (self.n2, HUB_N2, N2, HUB4_N2, N2_4)):
                ih, inode = veth_pair(self.hub, hub_side, ns, node_side, prefix=64)
                ns.sh(f"ip -6 route add 2001:db8::/32 via {hub_side} dev {inode}")
                if dual:
                    ns.sh(f"ip addr add {node4}/24 dev {inode} && ip route add 198.18.0.0/15 via {hub4}")
                    self.hub.sh(f"ip addr add {hub4}/24 dev {ih}")
            if dual:
                self.hub.sh("sysctl -qw net.ipv4.ip_forward=1")
            self.hub.sh("nft add table inet lab && nft add chain inet lab lanfwd "
                        "'{ type filter hook forward priority 0; policy accept; }'")
        except BaseException:
            self.close()
            raise

    def block(self, rule: str) -> None:
        """Drop forwarded packets matching ``rule`` (nft syntax: ``meta nfproto ipv4 meta l4proto udp``)."""
        self.hub.sh(f"nft add rule inet lab lanfwd {rule} drop")

    def close(self) -> None:
        for ns in (self.n1, self.n2, self.hub):
            ns.close()
