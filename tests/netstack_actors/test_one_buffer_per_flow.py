"""One buffer per direction per flow (issue 14 build 1): the app's channel is the connection's buffer.

Two userspace netstacks back to back, with a tap on the wire that parses every TCP segment. A server
that does not read must close its window after exactly its receive buffer (before, the connection's
own buffer filled behind the channel's: twice that), with every acknowledged byte in the channel;
a client that writes into the stall is stopped after exactly its send buffer. One read that opens
the window by enough sends exactly one window update and the transfer resumes.
"""

from __future__ import annotations

import ipaddress
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from pytsnet.actors.netstack.channel import FlowChannel
from pytsnet.actors.runtime import Actor, ActorRef, ActorSystem, handles
from pytsnet.messages.netstack import LinkPacketIn, LinkPacketOut
from pytsnet.net.netstack import Netstack
from pytsnet.netstack.config import StackConfig
from pytsnet.netstack.tcp.segment import SYN, parse_segment

SERVER, CLIENT, PORT = "10.9.2.1", "10.9.2.2", 7600
SEQ = 1 << 32


@dataclass(frozen=True)
class Seen:
    src: str
    seq: int
    ack: int
    flags: int
    window: int  # in bytes (scaled)
    payload: int


class Tap:
    """Every TCP segment on the wire, in wire order, with its window unscaled."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.seen: list[Seen] = []
        self.wscale: dict[str, int] = {}

    def record(self, packet: bytes) -> None:
        ihl = (packet[0] & 0xF) * 4
        src, dst = ipaddress.IPv4Address(packet[12:16]), ipaddress.IPv4Address(packet[16:20])
        seg = parse_segment(packet[ihl:], src, dst)
        with self.lock:
            if seg.flags & SYN:
                self.wscale[str(src)] = seg.wscale or 0
                window = seg.window  # never scaled in a SYN (RFC 7323 §2.2)
            else:
                window = seg.window << self.wscale.get(str(src), 0)
            self.seen.append(Seen(str(src), seg.seq, seg.ack, seg.flags, window, len(seg.payload)))

    def snapshot(self) -> list[Seen]:
        with self.lock:
            return list(self.seen)


class TappedWire(Actor):
    def __init__(self, to: str, tap: Tap) -> None:
        self.to = to
        self.tap = tap
        self._peer: ActorRef | None = None

    @handles(LinkPacketOut)
    def on_out(self, msg: LinkPacketOut) -> None:
        self.tap.record(msg.data)
        if self._peer is None:
            self._peer = self.ctx.lookup(self.to)
        if self._peer is not None:
            self._peer.tell(LinkPacketIn(data=msg.data))


def _until(cond: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, what
        time.sleep(0.01)


def _settled(tap: Tap, quiet: float = 0.5) -> None:
    """Wait until no data segment crossed the wire for ``quiet`` s (the stall is complete)."""
    def data_count() -> int:
        return sum(1 for s in tap.snapshot() if s.payload)
    last, since = data_count(), time.monotonic()
    end = since + 20
    while time.monotonic() - since < quiet:
        assert time.monotonic() < end, "the transfer never stalled"
        time.sleep(0.05)
        now = data_count()
        if now != last:
            last, since = now, time.monotonic()


@pytest.fixture(params=["thread", "pool"])
def pair(request: pytest.FixtureRequest) -> Iterator[tuple[Netstack, Netstack, Tap]]:
    tap = Tap()
    with ActorSystem("one-buffer", dispatcher=request.param) as system:
        nets = []
        for (name, addr), peer in ((("ns-s", SERVER), "ns-c"), (("ns-c", CLIENT), "ns-s")):
            wire = system.spawn(TappedWire, peer, tap, name=f"wire-to-{peer}")
            nets.append(Netstack.start(system, StackConfig(addresses=(ipaddress.ip_address(addr),)), wire,
                                       name=name))
        yield nets[0], nets[1], tap


def _fill(ch: FlowChannel, chunk: bytes, offset: int) -> int:
    """Write the stream ``chunk`` repeated, from ``offset``, until the channel refuses; return the
    bytes it took."""
    view = memoryview(chunk * 2)
    total = 0
    while True:
        start = (offset + total) % len(chunk)
        n = ch.try_send(view[start:start + len(chunk)])
        if n is None:
            return total
        total += n


def test_unread_data_closes_the_window_after_exactly_one_buffer_each_way(
        pair: tuple[Netstack, Netstack, Tap]) -> None:
    server, client, tap = pair
    listener = server.listen(PORT)
    listener.settimeout(10)
    csock = client.create_connection((SERVER, PORT), timeout=10)
    ssock, _ = listener.accept()
    sch, cch = ssock._ch, csock._ch
    chunk = bytes(range(256)) * 256  # 64 KiB

    # The client writes into a server that never reads; each time its channel refuses, wait for the
    # wire to go quiet and try again, until it takes nothing more at all.
    written = _fill(cch, chunk, 0)
    for _ in range(20):
        _settled(tap)
        more = _fill(cch, chunk, written)
        written += more
        if not more:
            break
    _settled(tap)

    segs = tap.snapshot()
    s_isn = next(s.seq for s in segs if s.src == CLIENT and s.flags & SYN)
    last_ack = [s for s in segs if s.src == SERVER][-1]
    acked = (last_ack.ack - s_isn - 1) % SEQ
    # Receive side: the window closed after exactly the receive buffer, and every acknowledged byte
    # is in the server's channel (the buffer the app reads): the connection holds none of its own.
    assert last_ack.window == 0
    scale = 1 << tap.wscale[SERVER]  # the window's unit: the last few bytes may not be offerable
    recv_buffer = StackConfig().recv_buffer
    assert acked == len(sch.rx) and recv_buffer - scale < acked <= recv_buffer
    # Send side: the client's app was stopped after exactly one more buffer, the one segments are
    # cut from (it holds what the server has not acknowledged).
    send_buffer = StackConfig().send_buffer
    assert written == acked + send_buffer
    assert len(cch.tx) == send_buffer and cch.tx.free == 0

    # One read that opens the window by at least an MSS: one window update, and data flows again.
    before = len(tap.snapshot())
    got = ssock.recv(64 * 1024)
    assert len(got) == 64 * 1024 and got == chunk[:len(got)]

    def resumed() -> bool:
        return any(s.src == CLIENT and s.payload and (s.seq - s_isn - 1) % SEQ >= acked
                   for s in tap.snapshot()[before:])
    _until(resumed, "the client sent new data after the read")
    after = tap.snapshot()[before:]
    first_data = next(i for i, s in enumerate(after)
                      if s.src == CLIENT and s.payload and (s.seq - s_isn - 1) % SEQ >= acked)
    updates = [s for s in after[:first_data] if s.src == SERVER and s.window > 0]
    assert len(updates) == 1, updates
    assert updates[0].ack == last_ack.ack and updates[0].payload == 0
    assert updates[0].window >= 64 * 1024 - 2048  # what the read freed (the edge moves in MSS steps)

    # Everything arrives, in order, once the server reads.
    total = written
    rest = bytearray(got)
    ssock.settimeout(10)
    while len(rest) < total:
        rest += ssock.recv(1 << 20)
    assert bytes(rest) == (chunk * (total // len(chunk) + 1))[:total]
    csock.close()
    ssock.close()
