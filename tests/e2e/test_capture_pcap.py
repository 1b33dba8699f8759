"""``capture_pcap`` (Go tsnet ``CapturePcap``): plaintext tunnel packets in Go's pcap format.

The file is read back with nothing but ``struct``: the pcap header Go writes (LE magic, 2.4, snaplen
65535, LINKTYPE_USER0 147), then per record Tailscale's 4-byte metadata (path u16 LE, SNAT/DNAT
address lengths) and the IP packet.
"""

from __future__ import annotations

import ipaddress
import os
import stat
import struct
from pathlib import Path

import pytest
from e2e_rig import tailnet_pair

from pytsnet.errors import CaptureError

FROM_LOCAL, FROM_PEER = 0, 1


def _records(data: bytes) -> list[tuple[int, bytes]]:
    magic, major, minor, _zone, _sig, snaplen, linktype = struct.unpack_from("<IHHiIII", data)
    assert (magic, major, minor, snaplen, linktype) == (0xA1B2C3D4, 2, 4, 65535, 147)
    out, off = [], 24
    while off < len(data):
        _s, us, incl, orig = struct.unpack_from("<IIII", data, off)
        assert incl == orig and us < 1_000_000
        body = data[off + 16: off + 16 + incl]
        path, snat, dnat = struct.unpack_from("<HBB", body)
        assert (snat, dnat) == (0, 0)
        out.append((path, body[4:]))
        off += 16 + incl
    assert off == len(data)
    return out


def _tcp_payload(pkt: bytes) -> tuple[str, str, bytes]:
    assert pkt[0] >> 4 == 4 and pkt[9] == 6  # IPv4 / TCP
    ihl = (pkt[0] & 15) * 4
    total = struct.unpack_from(">H", pkt, 2)[0]
    doff = (pkt[ihl + 12] >> 4) * 4
    src, dst = (str(ipaddress.IPv4Address(pkt[12:16])), str(ipaddress.IPv4Address(pkt[16:20])))
    return src, dst, pkt[ihl + doff: total]


def test_capture_holds_both_directions_in_gos_format(tmp_path: Path) -> None:
    cap = tmp_path / "alpha.pcap"
    with tailnet_pair(tmp_path, direct=False) as p:
        a_ip, b_ip = p.ip(p.a), p.ip(p.b)
        capture = p.a.capture_pcap(cap)
        with pytest.raises(CaptureError, match="already running"):
            p.a.capture_pcap(tmp_path / "second.pcap")
        lst = p.b.listen_blocking(9200)
        lst.settimeout(20)
        c = p.a.tcp_connect_blocking("beta", 9200, timeout=20)
        s, _ = lst.accept()
        s.settimeout(20)
        c.sendall(b"marker from alpha")
        assert s.recv(100) == b"marker from alpha"
        s.sendall(b"answer from beta")
        assert c.recv(100) == b"answer from beta"
        c.close()
        s.close()
        capture.stop()
        size = cap.stat().st_size
        c2 = p.a.tcp_connect_blocking(str(b_ip), 9200, timeout=20)  # after stop: nothing more recorded
        c2.close()
        assert cap.stat().st_size == size
        with p.a.capture_pcap(tmp_path / "again.pcap"):  # the name is free again
            pass
    assert stat.S_IMODE(cap.stat().st_mode) == 0o644 & ~_umask()
    recs = _records(cap.read_bytes())
    out = [_tcp_payload(pkt) for path, pkt in recs if path == FROM_LOCAL]
    inb = [_tcp_payload(pkt) for path, pkt in recs if path == FROM_PEER]
    assert {path for path, _ in recs} == {FROM_LOCAL, FROM_PEER}
    assert all((src, dst) == (a_ip, b_ip) for src, dst, _ in out)
    assert all((src, dst) == (b_ip, a_ip) for src, dst, _ in inb)
    assert b"marker from alpha" in b"".join(data for _, _, data in out)
    assert b"answer from beta" in b"".join(data for _, _, data in inb)


def test_unwritable_path_is_a_typed_error(tmp_path: Path) -> None:
    with tailnet_pair(tmp_path, direct=False) as p:
        with pytest.raises(CaptureError, match="cannot write"):
            p.a.capture_pcap(tmp_path / "no-such-dir" / "x.pcap")
        assert p.a.status().state == "Running"


def _umask() -> int:
    old = os.umask(0)
    os.umask(old)
    return old


def test_stop_writes_every_burst_told_before_it(tmp_path: Path) -> None:
    """Seen in a clean run once the engine -> flow fast path landed: the app had the reply, but
    ``stop()`` ended the writer with the reply's burst still in its mailbox and the file lacked it.
    Here the writer is told 2,000 bursts and stopped at once: every one is in the file."""
    from pytsnet.actors.runtime import ActorSystem
    from pytsnet.capture import start_capture
    from pytsnet.messages.wgengine import CapturedPackets

    system = ActorSystem("capture-stop")
    try:
        cap = start_capture(system, tmp_path / "x.pcap")
        pkt = bytes(28)  # the writer records bytes as given
        for i in range(2000):
            cap._ref.tell(CapturedPackets(path=FROM_PEER, when=float(i), packets=(pkt,)))
        cap.stop()
        cap.stop()  # idempotent
    finally:
        system.shutdown()
    assert len(_records((tmp_path / "x.pcap").read_bytes())) == 2000
