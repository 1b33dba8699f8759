"""NAT mapping timeouts and port-only rebinding in the NAT lab.

Go's magicsock (``wgengine/magicsock/endpoint.go``) pings its best UDP path every 3 s
(``heartbeatInterval``) while the session is active (data sent within ``sessionActiveTimeout``,
45 s) and trusts the path for 6.5 s after a pong: the heartbeats are what keep a NAT's UDP mapping
alive between bursts of data. Here the routers forget an idle UDP mapping after ``NAT_TIMEOUT``
seconds (``NatLab.set_udp_timeout``: conntrack's UDP timeouts in the router namespaces), and:

* within an active session, a silence longer than the NAT timeout loses nothing: the mappings stay
  (seen in the routers' conntrack tables), the next round trip is byte-exact on the direct path and
  DERP carries none of it;
* after the session idles out (heartbeats stop, the mappings expire), traffic resumes byte-exact
  through DERP first and the pair is direct again within the cell bound;
* a NAT that restarts keeping its address but giving the node a new port (``NatLab.restart_mapping``)
  mid-flow: the flow completes byte-exact and the pair goes direct again, the peer's view of the
  endpoint changed port but not address.

The cells are ``filtering``/``filtering`` (Go's ``easy``: endpoint-independent mapping, conntrack's
address-and-port-dependent filtering): there a mapping is nothing but a conntrack entry, so its
expiry closes the path (the lab's ``easy`` full cone also keeps a 120 s map of its own).
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pytsnet.testing.conntrack import CtEntry, ct_entries, flush_message, parse_entries
from pytsnet.testing.natlab import INTERNET_ADDR, REFLECTOR_PORTS, SECOND_ADDR, LanSpec, NatLab, nat_lab
from pytsnet.testing.natlab_net import ECHO_PORT, LabTailnet, lab_tailnet, peer_path, run_cell, serve_echo
from pytsnet.testing.netns import Netns, netns_available
from pytsnet.testing.polling import wait_until

pytestmark = [pytest.mark.root]

BOUND = 30.0
NAT_TIMEOUT = 10
"""Seconds an idle UDP mapping lives in the cells' routers (well below Go's 45 s session timeout)."""
S1 = (INTERNET_ADDR, REFLECTOR_PORTS[0])
S2 = (SECOND_ADDR, REFLECTOR_PORTS[0])


# -- the NatLab methods, seen with plain sockets ---------------------------------------------------
@pytest.fixture
def lab() -> Iterator[NatLab]:
    if reason := netns_available():
        pytest.skip(reason)
    with nat_lab(LanSpec("f", "filtering"), LanSpec("d", "double")) as lab:
        yield lab


def udp_socket(ns: Netns) -> socket.socket:
    def make() -> socket.socket:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("0.0.0.0", 0))
        s.settimeout(1.0)
        return s

    return ns.call(make)


def recv(s: socket.socket) -> bytes | None:
    try:
        return s.recv(4096)
    except TimeoutError:
        return None


def who(s: socket.socket, server: tuple[str, int]) -> str:
    """The mapping ``server`` sees for ``s`` (``ip:port``)."""
    s.sendto(b"who", server)
    got = recv(s)
    assert got is not None, f"no answer from {server}"
    return got.decode()


def test_udp_entries_parse() -> None:
    text = ("ipv4     2 udp      17 27 src=10.1.0.10 dst=203.0.113.1 sport=41669 dport=3478 src=203.0.113.1 "
            "dst=203.0.113.10 sport=3478 dport=20007 [ASSURED] mark=0 zone=0 use=2\n"
            "ipv4     2 tcp      6 431999 ESTABLISHED src=10.1.0.10 dst=203.0.113.1 sport=47964 dport=9000 "
            "src=203.0.113.1 dst=203.0.113.10 sport=9000 dport=47964 [ASSURED] mark=0 zone=0 use=2\n"
            "ipv4     2 udp      17 3 src=10.1.0.10 dst=203.0.113.2 sport=1 dport=2 [UNREPLIED] garbage\n")
    assert parse_entries(text) == [CtEntry("udp", "10.1.0.10", 41669, "203.0.113.1", 3478, "203.0.113.10",
                                           20007, 27)]
    assert [e.dport for e in parse_entries(text, "tcp")] == [9000]
    msg = flush_message(socket.IPPROTO_UDP)
    assert len(msg) == int.from_bytes(msg[:4], "little") and len(msg) % 4 == 0
    assert msg[4:6] == ((1 << 8) | 2).to_bytes(2, "little")  # CTNETLINK, IPCTNL_MSG_CT_DELETE


def test_set_udp_timeout_expires_an_idle_mapping(lab: NatLab) -> None:
    """The sysctls are per namespace: the router's entries get the short timeout, the host's stay.
    A reflector's packet reaches the node while the mapping lives and is dropped once it expired
    (asked through the other reflector, so the node itself sends nothing to the first one)."""
    host_before = Path("/proc/sys/net/netfilter/nf_conntrack_udp_timeout").read_text()
    lab.set_udp_timeout("f", 3)
    assert Path("/proc/sys/net/netfilter/nf_conntrack_udp_timeout").read_text() == host_before
    s = udp_socket(lab["f"].node)
    try:
        mapped = who(s, S1)
        assert mapped.startswith(lab["f"].wan_addr + ":")
        to_s1 = [e for e in lab.udp_mappings("f") if (e.dst, e.dport) == S1]
        assert [e.mapping for e in to_s1] == [mapped] and 0 < to_s1[0].timeout <= 3, to_s1
        s.sendto(f"via {S1[0]} {S1[1]}".encode(), S2)  # S1 sends to the mapping: it still lives
        assert recv(s) == mapped.encode()
        time.sleep(4.5)
        assert not [e for e in lab.udp_mappings("f") if (e.dst, e.dport) == S1]
        s.sendto(f"via {S1[0]} {S1[1]}".encode(), S2)
        assert recv(s) is None  # S1's packet to the expired mapping was dropped
        assert who(s, S1) == mapped  # the next packet out makes it again (the same port: masquerade keeps it)
    finally:
        s.close()
    lab.set_udp_timeout("d", 3)  # both routers of a double NAT
    for r in lab["d"].routers:
        assert r.sh("sysctl -n net.netfilter.nf_conntrack_udp_timeout_stream").strip() == "3"
    for bad in ("none", "easy"):
        with nat_lab(LanSpec("x", bad)) as other, pytest.raises(ValueError):
            other.set_udp_timeout("x", 3)


def test_restart_mapping_moves_the_port_and_keeps_the_address(lab: NatLab) -> None:
    """After the restart the node's next packet leaves from a port in the new range on the same
    address; the old mapping is gone (a packet to it is dropped); a TCP connection through the
    router survives (only UDP entries are flushed)."""
    def listener() -> socket.socket:
        ls = socket.socket()
        ls.bind((INTERNET_ADDR, 0))
        ls.listen()
        return ls

    ls = lab.internet.call(listener)
    tcp = lab["f"].node.call(lambda: socket.create_connection(ls.getsockname(), timeout=2))
    peer, _ = ls.accept()
    s = udp_socket(lab["f"].node)
    try:
        old = who(s, S1)
        old_port = int(old.split(":")[1])
        assert not 21000 <= old_port <= 21999
        lab.reflectors.socks[S1].sendto(b"before", (lab["f"].wan_addr, old_port))
        assert recv(s) == b"before"  # the mapping admits S1
        lab.restart_mapping("f", (21000, 21999))
        assert not lab.udp_mappings("f")  # every UDP mapping gone
        lab.reflectors.socks[S1].sendto(b"after", (lab["f"].wan_addr, old_port))
        assert recv(s) is None  # the old mapping died with the restart
        new = who(s, S1)
        addr, port = new.split(":")
        assert addr == lab["f"].wan_addr and 21000 <= int(port) <= 21999, new
        assert who(s, S2) == new  # still endpoint-independent: one port for every destination
        tcp.sendall(b"still here")
        assert peer.recv(64) == b"still here"  # TCP conntrack entries were kept
        assert [e.dport for e in ct_entries(lab["f"].routers[0], "tcp")] == [ls.getsockname()[1]]
    finally:
        s.close()
        tcp.close()
        peer.close()
        ls.close()
    with pytest.raises(ValueError):
        lab.restart_mapping("f", (80, 90))


# -- the data plane's cells ----------------------------------------------------------------------
@pytest.fixture
def cell(tmp_path: Path) -> Iterator[tuple[NatLab, LabTailnet]]:
    if reason := netns_available():
        pytest.skip(reason)
    specs = (LanSpec("a", "filtering"), LanSpec("b", "filtering"))
    with nat_lab(*specs) as lab, lab_tailnet(lab, tmp_path) as w:
        yield lab, w


def peer_row(dev: object, peer_ip: str) -> object:
    return next(p for p in dev.status().peers  # type: ignore[attr-defined]
                if any(a.split("/")[0] == peer_ip for a in p.addresses))


def derp_bytes(dev: object, peer_ip: str) -> tuple[int, int]:
    row = peer_row(dev, peer_ip)
    return row.derp_bytes_in, row.derp_bytes_out  # type: ignore[attr-defined]


def udp_bytes(dev: object, peer_ip: str) -> tuple[int, int]:
    row = peer_row(dev, peer_ip)
    return row.udp_bytes_in, row.udp_bytes_out  # type: ignore[attr-defined]


def echo_flows() -> list[Any]:
    """The flow actors of the echo connection at both ends (found once, through ``gc``: a diagnostic)."""
    import gc
    return [o for o in gc.get_objects()
            if type(o).__name__ == "TcpFlowActor" and ECHO_PORT in (o.conn.local[1], o.conn.remote[1])
            and not o._done]


def tcp_state(flow: Any) -> str:
    """One flow's TCP state in one line (read without its lock: a diagnostic)."""
    c, ch = flow.conn, flow.ch
    return (f"{c.local[1]}->{c.remote[1]} {c._state.name} una={c._snd_una} nxt={c._snd_nxt} max={c._snd_max} "
            f"swnd={c._snd_wnd} wl1={c._snd_wl1} wl2={c._snd_wl2} cwnd={c._cc.cwnd} rto_at={c._rto_at} "
            f"retries={c._retries} persist={c._persist_at} | rnxt={c._rcv_nxt} radv={c._rcv_adv} "
            f"las={c._last_ack_sent} tsr={c._ts_recent} tsnow={c._tsval(flow.clock.monotonic())} "
            f"rx={len(ch.rx)} tx={len(ch.tx)} wake={ch.rx_wake_level}/{ch._wake_pending} "
            f"backlog={flow.ref.backlog()} alive={flow.ref.is_alive}")


class Timeline:
    """Each node's route to the other and the bytes echoed back, sampled every 0.5 s on a thread: what
    a failed mid-flow rebinding shows (which direction died, for how long, and what carried it)."""

    def __init__(self, a: Any, b: Any, a_ip: str, b_ip: str, back: bytearray) -> None:
        self.rows: list[str] = []
        self._done = threading.Event()
        t0 = time.monotonic()

        def sample() -> None:
            while not self._done.wait(0.5):
                try:
                    ra, rb = peer_row(a, b_ip), peer_row(b, a_ip)
                    self.rows.append(
                        f"{time.monotonic() - t0:5.1f}s back={len(back)} "
                        f"A->B {ra.path} {ra.addr} udp_out={ra.udp_bytes_out} derp_out={ra.derp_bytes_out} | "  # type: ignore[attr-defined]
                        f"B->A {rb.path} {rb.addr} udp_out={rb.udp_bytes_out} derp_out={rb.derp_bytes_out}")  # type: ignore[attr-defined]
                    self.rows.extend(f"       {tcp_state(f)}" for f in self._flows)
                except Exception as e:  # a status that failed is a row too
                    self.rows.append(f"{time.monotonic() - t0:5.1f}s status failed: {e!r}")
        self._t0 = t0
        self._flows = echo_flows()
        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._done.set()
        self._thread.join(5)

    def report(self, restarted: list[float]) -> str:
        at = f"{restarted[0] - self._t0:.1f}s" if restarted else "never"
        return f"router restarted at {at}; timeline:\n" + "\n".join(self.rows)


def echo(sock: socket.socket, block: bytes) -> None:
    """One round trip of ``block`` through the echo service, byte-exact."""
    sock.sendall(block)
    got = bytearray()
    while len(got) < len(block):
        chunk = sock.recv(len(block) - len(got))
        assert chunk, "echo closed"
        got += chunk
    assert bytes(got) == block


def mapping_to(lab: NatLab, lan: str, peer_addr: str) -> CtEntry | None:
    """LAN ``lan``'s router's mapping of the flow to ``peer_addr`` (``ip:port``), if alive."""
    ip, port = peer_addr.split(":")
    return next((e for e in lab.udp_mappings(lan) if (e.dst, e.dport) == (ip, int(port))), None)


def test_wg_persistent_keepalive_is_bounded() -> None:
    from pytsnet import Config, ConfigError
    assert Config().wg_persistent_keepalive == 25.0  # ours; Go v1.90.9 sends none
    assert Config(wg_persistent_keepalive=0).resolved().wg_persistent_keepalive == 0
    for bad in (-1.0, 3601.0):
        with pytest.raises(ConfigError):
            Config(wg_persistent_keepalive=bad).resolved()


GO_LIKE = {"wg_persistent_keepalive": 0.0}
"""Go v1.90.9 sends no WireGuard persistent keepalives (ours defaults to 25 s: ``Config``)."""


def direct_pair(lab: NatLab, w: LabTailnet, x: str, y: str, **cfg: Any) -> tuple[Any, Any, str, str]:
    """Devices in LANs ``x`` and ``y`` (``y`` serving the echo), direct both ways after a cell; with
    each one's view of the other's endpoint (``x``'s of ``y``, ``y``'s of ``x``)."""
    a, b = w.device(lab[x].node, x, **cfg), w.device(lab[y].node, y, **cfg)
    serve_echo(b)
    r = run_cell(a, b, bound=BOUND)
    assert r.transfer_ok and r.path == "direct", r
    a_ip = a.tailscale_ips()[0]
    wait_until(lambda: peer_path(b, a_ip)[0] == "direct", 10, f"{y}'s route to {x} direct too")
    b_addr, a_addr = peer_path(a, b.tailscale_ips()[0])[1], peer_path(b, a_ip)[1]
    assert b_addr is not None and a_addr is not None
    return a, b, b_addr, a_addr


def test_heartbeats_keep_the_mappings_through_a_silence(cell: tuple[NatLab, LabTailnet]) -> None:
    """Go's timings and no WireGuard persistent keepalive (Go's); NAT timeout 10 s. A silence of 25 s
    inside an active session: both routers' mappings of the direct flow are there at every look
    (each with at most NAT_TIMEOUT left: refreshed by the heartbeats, not long-lived), and the next
    round trip is byte-exact on the direct path with no byte over DERP (A's and B's DERP counters
    for each other unchanged, disco included) and the block on UDP."""
    lab, w = cell
    lab.set_udp_timeout("a", NAT_TIMEOUT)
    lab.set_udp_timeout("b", NAT_TIMEOUT)
    a, b, b_addr, a_addr = direct_pair(lab, w, "a", "b", **GO_LIKE)
    a_ip, b_ip = a.tailscale_ips()[0], b.tailscale_ips()[0]
    sock = a.tcp_connect_blocking(b_ip, ECHO_PORT, timeout=BOUND)
    sock.settimeout(BOUND)
    try:
        echo(sock, b"warm" * 256)
        derp_a, derp_b = derp_bytes(a, b_ip), derp_bytes(b, a_ip)
        udp_a = udp_bytes(a, b_ip)
        t0 = time.monotonic()
        looks = 0
        while time.monotonic() - t0 < 2.5 * NAT_TIMEOUT:  # the silence
            for lan, to in (("a", b_addr), ("b", a_addr)):
                m = mapping_to(lab, lan, to)
                assert m is not None, f"{lan} lost the mapping to {to} at {time.monotonic() - t0:.1f} s"
                assert m.timeout <= NAT_TIMEOUT, m
            looks += 1
            time.sleep(1.0)
        assert looks >= 2 * NAT_TIMEOUT
        block = bytes(range(256)) * 256  # 64 KiB
        echo(sock, block)
        assert peer_path(a, b_ip) == ("direct", b_addr) and peer_path(b, a_ip) == ("direct", a_addr)
        assert derp_bytes(a, b_ip) == derp_a and derp_bytes(b, a_ip) == derp_b  # DERP carried nothing
        u_in, u_out = udp_bytes(a, b_ip)
        assert u_out - udp_a[1] > len(block) and u_in - udp_a[0] > len(block)  # the block went over UDP
    finally:
        sock.close()


def test_idle_session_loses_the_mappings_and_goes_direct_again(tmp_path: Path) -> None:
    """Go's timings; NAT timeout 10 s; two pairs side by side. A-B as Go (no WireGuard persistent
    keepalive): once the session is idle (45 s after the last data) heartbeats stop and both routers'
    mappings of the direct flow expire; then A dials again: the first packets go through DERP too
    (the path is no longer trusted), every byte arrives, and the pair is direct again within the
    bound on the same endpoints (masquerade kept the ports). C-D with our default 25 s keepalive:
    the keepalives keep the session active, so its heartbeats hold both mappings through the same
    silence and the next transfer is direct from its first packet, none of it over DERP (under 1 KiB
    of disco may go there: the heartbeat's 60 s upgrade check sends a CallMeMaybe when the path's
    latency is above 5 ms, as Go's)."""
    if reason := netns_available():
        pytest.skip(reason)
    specs = [LanSpec(n, "filtering") for n in "abcd"]
    with nat_lab(*specs) as lab, lab_tailnet(lab, tmp_path) as w:
        for n in "abcd":
            lab.set_udp_timeout(n, NAT_TIMEOUT)
        a, b, b_addr, a_addr = direct_pair(lab, w, "a", "b", **GO_LIKE)
        c, d, d_addr, c_addr = direct_pair(lab, w, "c", "d")
        t_last = time.monotonic()
        wait_until(lambda: mapping_to(lab, "a", b_addr) is None and mapping_to(lab, "b", a_addr) is None,
                   45 + 10 + 3 + NAT_TIMEOUT + 20, "A-B's mappings of the direct flow expired", interval=1.0)
        idle = time.monotonic() - t_last
        assert idle > 45, idle  # the heartbeats held them while the session was active (67 s here)

        assert mapping_to(lab, "c", d_addr) is not None and mapping_to(lab, "d", c_addr) is not None
        d_ip = d.tailscale_ips()[0]
        derp_c = derp_bytes(c, d_ip)
        r_cd = run_cell(c, d, bound=BOUND)
        assert r_cd.transfer_ok and r_cd.path == "direct" and r_cd.time_to_direct is not None, r_cd
        grew = derp_bytes(c, d_ip)[1] - derp_c[1]  # disco only: a CallMeMaybe on the 60 s upgrade check
        assert r_cd.time_to_direct < 1.0 and grew < 1024 < r_cd.nbytes, (r_cd, grew)

        b_ip, a_ip = b.tailscale_ips()[0], a.tailscale_ips()[0]
        derp_before = derp_bytes(a, b_ip)
        r = run_cell(a, b, bound=BOUND)
        assert r.transfer_ok, r
        assert r.path == "direct" and r.time_to_direct is not None and r.time_to_direct < BOUND, r
        assert derp_bytes(a, b_ip)[1] > derp_before[1]  # the first packets after the idle went via DERP
        assert r.addr == b_addr
        wait_until(lambda: peer_path(b, a_ip) == ("direct", a_addr), 10, "B's route to A direct again")


def test_port_only_rebinding_mid_flow_goes_direct_on_the_new_port(cell: tuple[NatLab, LabTailnet]) -> None:
    """A's router restarts mid-transfer (after 1 MiB of 4 came back) keeping its address, its UDP
    mappings lost and new ones taken from 23000-23999: the old direct path dies both ways, DERP
    carries the rest, the transfer completes byte-exact, and both go direct again, B's view of A's
    endpoint on the same address with a port in the new range. Within 2 x the cell bound, as the
    address rebinding cell: A learns its new port from its next periodic STUN probe (every 20-26 s,
    as Go's, whose CallMeMaybe also sends the endpoints it has while they are < 27 s old), then the
    next ping round (5 s) punches it; ~20 s here."""
    lab, w = cell
    a, b = w.device(lab["a"].node, "a"), w.device(lab["b"].node, "b")
    serve_echo(b)
    assert run_cell(a, b, bound=BOUND).path == "direct"
    a_ip, b_ip = a.tailscale_ips()[0], b.tailscale_ips()[0]
    wait_until(lambda: peer_path(b, a_ip)[0] == "direct", 10, "B's route to A direct too")
    old = peer_path(b, a_ip)[1]
    assert old is not None and old.split(":")[0] == lab["a"].wan_addr
    assert not 23000 <= int(old.split(":")[1]) <= 23999
    sock = a.tcp_connect_blocking(b_ip, ECHO_PORT, timeout=BOUND)
    sock.settimeout(2 * BOUND)
    payload = bytes((i * 7) % 251 for i in range(4 << 20))
    back = bytearray()
    restarted: list[float] = []

    def reader() -> None:
        while len(back) < len(payload) and (chunk := sock.recv(65536)):
            back.extend(chunk)
            if not restarted and len(back) >= 1 << 20:
                lab.restart_mapping("a", (23000, 23999))
                restarted.append(time.monotonic())

    derp_before = derp_bytes(a, b_ip)
    timeline = Timeline(a, b, a_ip, b_ip, back)
    rd = threading.Thread(target=reader, daemon=True)
    rd.start()
    try:
        try:
            sock.sendall(payload)
            rd.join(2 * BOUND)
        except OSError as e:
            raise AssertionError(f"the flow failed ({e!r}); {timeline.report(restarted)}") from e
        finally:
            timeline.stop()
        assert restarted, "the router never restarted"
        assert bytes(back) == payload, (len(back), len(payload), timeline.report(restarted))
        derp_out = derp_bytes(a, b_ip)[1] - derp_before[1]
        assert derp_out > 64 * 1024, derp_out  # DERP carried part of the transfer after the restart

        def both_direct_on_new_port() -> bool:
            echo(sock, b"tick" * 64)  # disco wants traffic
            b_path = peer_path(b, a_ip)
            addr, _, port = (b_path[1] or ":").partition(":")
            return (peer_path(a, b_ip)[0] == "direct" and b_path[0] == "direct" and addr == lab["a"].wan_addr
                    and 23000 <= int(port or 0) <= 23999)

        wait_until(both_direct_on_new_port, 2 * BOUND, "both direct again, B on A's new port", interval=0.2)
        assert time.monotonic() - restarted[0] < 2 * BOUND
        assert any(23000 <= e.reply_dport <= 23999 for e in lab.udp_mappings("a"))
    finally:
        sock.close()
