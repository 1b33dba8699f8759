"""pytsnet's WireGuard core against wireguard-go, with the Linux kernel behind its TUN.

The test owns a tiny UDP driver: it feeds datagrams and ``time.monotonic()`` into ``Peer`` and
sends what comes out. IPv4/ICMP/UDP packets are built by hand.
"""

from __future__ import annotations

import base64
import shutil
import socket
import struct
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pytsnet.testing.netns import Netns, unique_tag
from pytsnet.wire.keys import NodePrivate
from pytsnet.wire.wireguard.peer import HandshakeCompleted, Peer

pytestmark = [pytest.mark.interop, pytest.mark.root]

WG_ADDR = "10.100.0.1"
OUR_ADDR = "10.100.0.3"
WG_PORT = 51820


def checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\x00"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def ipv4(proto: int, payload: bytes, src: str = OUR_ADDR, dst: str = WG_ADDR, ident: int = 1) -> bytes:
    hdr = struct.pack(
        "!BBHHHBBH4s4s",
        0x45,
        0,
        20 + len(payload),
        ident,
        0,
        64,
        proto,
        0,
        socket.inet_aton(src),
        socket.inet_aton(dst),
    )
    return hdr[:10] + struct.pack("!H", checksum(hdr)) + hdr[12:] + payload


def icmp_echo(ident: int, seq: int, data: bytes) -> bytes:
    body = struct.pack("!BBHHH", 8, 0, 0, ident, seq) + data
    return ipv4(1, body[:2] + struct.pack("!H", checksum(body)) + body[4:], ident=seq)


def udp(sport: int, dport: int, data: bytes) -> bytes:
    return ipv4(17, struct.pack("!HHHH", sport, dport, 8 + len(data), 0) + data)  # checksum 0: none


class Driver:
    def __init__(self, peer: Peer, sock: socket.socket, endpoint: tuple[str, int] | None) -> None:
        self.peer, self.sock, self.endpoint = peer, sock, endpoint
        self.packets: list[bytes] = []
        self.events: list[object] = []

    def flush(self) -> None:
        for d in self.peer.datagrams_to_send():
            assert self.endpoint is not None
            self.sock.sendto(d, self.endpoint)

    def run(self, done: Callable[[], bool], timeout: float = 10.0) -> None:
        end = time.monotonic() + timeout
        while not done():
            now = time.monotonic()
            assert now < end, "timed out waiting for wireguard-go"
            deadline = self.peer.next_deadline()
            wait = 0.05 if deadline is None else max(0.0, min(0.05, deadline - now))
            self.sock.settimeout(wait or 0.001)
            try:
                data, addr = self.sock.recvfrom(65535)
                self.endpoint = addr  # roam to wherever the peer speaks from, as WireGuard does
                self.peer.receive(data, time.monotonic())
            except TimeoutError:
                pass
            self.peer.tick(time.monotonic())
            self.packets += self.peer.received_packets()
            self.events += self.peer.events()
            self.flush()

    def send(self, packet: bytes) -> None:
        self.peer.send(packet, time.monotonic())
        self.flush()


@pytest.fixture
def wg(netns: Netns) -> Iterator[dict[str, object]]:
    if not shutil.which("wireguard-go") or not shutil.which("wg"):
        pytest.skip("wireguard-go / wg not installed")
    ifname = f"wgpy{unique_tag()}"
    proc = netns.popen(
        ["wireguard-go", "-f", ifname], env={"WG_PROCESS_FOREGROUND": "1", "PATH": "/usr/bin:/bin"}
    )
    sockpath = Path(f"/var/run/wireguard/{ifname}.sock")
    for _ in range(100):
        if sockpath.exists():
            break
        time.sleep(0.05)
    assert sockpath.exists(), "wireguard-go did not start"
    theirs, ours = NodePrivate.generate(), NodePrivate.generate()
    keyfile = Path(f"/tmp/{ifname}.key")
    keyfile.write_text(base64.b64encode(theirs.raw).decode())
    keyfile.chmod(0o600)
    sock = netns.call(lambda: _bound_udp())
    yield {"ns": netns, "if": ifname, "theirs": theirs, "ours": ours, "key": keyfile, "sock": sock}
    sock.close()
    proc.kill()
    proc.wait(timeout=5)
    keyfile.unlink(missing_ok=True)
    sockpath.unlink(missing_ok=True)


def _bound_udp() -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    return s


def configure(w: dict[str, object], endpoint: bool) -> None:
    ns, ifname = w["ns"], w["if"]
    assert isinstance(ns, Netns)
    ours = w["ours"]
    assert isinstance(ours, NodePrivate)
    pub = base64.b64encode(ours.public().raw).decode()
    args = [
        "wg",
        "set",
        str(ifname),
        "private-key",
        str(w["key"]),
        "listen-port",
        str(WG_PORT),
        "peer",
        pub,
        "allowed-ips",
        f"{OUR_ADDR}/32",
    ]
    if endpoint:
        sock = w["sock"]
        assert isinstance(sock, socket.socket)
        args += ["endpoint", f"127.0.0.1:{sock.getsockname()[1]}"]
    ns.run(args)
    ns.run(["ip", "addr", "add", f"{WG_ADDR}/24", "dev", str(ifname)])
    ns.run(["ip", "link", "set", str(ifname), "up"])


def make_driver(w: dict[str, object], endpoint: bool) -> Driver:
    ours, theirs, sock = w["ours"], w["theirs"], w["sock"]
    assert (
        isinstance(ours, NodePrivate) and isinstance(theirs, NodePrivate) and isinstance(sock, socket.socket)
    )
    peer = Peer(ours, theirs.public(), mtu=1420, unix_time_offset=time.time() - time.monotonic())
    return Driver(peer, sock, ("127.0.0.1", WG_PORT) if endpoint else None)


def ping_and_udp(d: Driver, ns: Netns, seq0: int) -> None:
    """ICMP echo to the kernel and a UDP round trip with a kernel socket, through the tunnel."""
    for seq in range(seq0, seq0 + 3):
        d.send(icmp_echo(0x4242, seq, b"pytsnet-%d" % seq))
        d.run(
            lambda seq=seq: any(
                p[9] == 1 and p[20] == 0 and struct.unpack("!H", p[26:28])[0] == seq for p in d.packets
            )
        )
    ksock = ns.call(lambda: _kernel_udp())
    try:
        d.send(udp(40000, 9999, b"hello kernel %d" % seq0))
        ns.call(lambda: _kernel_echo(ksock))
        d.run(lambda: any(p[9] == 17 and p[28:] == b"echo:hello kernel %d" % seq0 for p in d.packets))
    finally:
        ksock.close()


def _kernel_udp() -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((WG_ADDR, 9999))
    return s


def _kernel_echo(s: socket.socket) -> None:
    s.settimeout(10)
    data, addr = s.recvfrom(2048)
    assert addr == (OUR_ADDR, 40000)
    s.sendto(b"echo:" + data, addr)


def _rekey_mid_stream(d: Driver, ns: Netns) -> None:
    old = d.peer.keypairs.current
    assert old is not None
    d.events.clear()
    d.peer.initiate(time.monotonic(), force=True)
    d.flush()
    # keep pinging while the new handshake is in flight
    ping_and_udp(d, ns, 100)
    d.run(lambda: any(isinstance(e, HandshakeCompleted) for e in d.events))
    assert d.peer.keypairs.current is not old
    ping_and_udp(d, ns, 200)
    assert d.peer.keypairs.current.local_index != old.local_index


def test_pytsnet_initiates(wg: dict[str, object]) -> None:
    configure(wg, endpoint=False)
    ns = wg["ns"]
    assert isinstance(ns, Netns)
    d = make_driver(wg, endpoint=True)
    ping_and_udp(d, ns, 1)  # the first packet is staged and triggers the handshake
    assert any(isinstance(e, HandshakeCompleted) and e.is_initiator for e in d.events)
    _rekey_mid_stream(d, ns)
    assert d.peer.dropped == 0
    out = ns.run(["wg", "show", str(wg["if"]), "latest-handshakes"]).stdout
    assert out.split()[1] != "0"


def test_wireguard_go_initiates(wg: dict[str, object]) -> None:
    configure(wg, endpoint=True)
    ns = wg["ns"]
    assert isinstance(ns, Netns)
    d = make_driver(wg, endpoint=False)
    ksock = ns.call(lambda: _kernel_udp())
    try:  # the kernel sends first, so wireguard-go has to start the handshake
        ksock.sendto(b"kernel first", (OUR_ADDR, 40000))
        d.run(lambda: any(p[9] == 17 and p[28:] == b"kernel first" for p in d.packets))
    finally:
        ksock.close()
    assert any(isinstance(e, HandshakeCompleted) and not e.is_initiator for e in d.events)
    ping_and_udp(d, ns, 1)
    _rekey_mid_stream(d, ns)
    assert d.peer.dropped == 0
