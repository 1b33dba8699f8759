"""magicsock's DERP receive lane (``RecvSplitter`` + the owner's ``ClientConnection`` on the rest) against
one ``ClientConnection`` fed the whole stream: the same packets in the same order, the same events, pongs
and errors, whatever the stream and however it is cut into reads."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from pytsnet.wire.derp import frames as f
from pytsnet.wire.derp.client_info import ServerInfo, seal_server_info
from pytsnet.wire.derp.errors import FrameTooLargeError
from pytsnet.wire.derp.handshake import ClientConnection, ServerInfoReceived, State
from pytsnet.wire.derp.reader import CLIENT_MAX_FRAME_LEN, FrameReader
from pytsnet.wire.derp.recv_split import RecvSplitter
from pytsnet.wire.errors import WireError
from pytsnet.wire.keys import NodePrivate

SERVER = NodePrivate.from_raw(bytes([1] * 32))
CLIENT = NodePrivate.from_raw(bytes([2] * 32))
PEER = NodePrivate.from_raw(bytes([3] * 32)).public()
OTHER = NodePrivate.from_raw(bytes([4] * 32))


def _frame(t: int, payload: bytes) -> bytes:
    return f.encode_header(t, len(payload)) + payload


SERVER_KEY = f.encode(f.ServerKey(SERVER.public()))
GOOD_INFO = f.encode(seal_server_info(SERVER, CLIENT.public(), ServerInfo()))
BAD_INFO = f.encode(seal_server_info(OTHER, CLIENT.public(), ServerInfo()))  # sealed by someone else

_FRAMES = st.one_of(
    st.binary(max_size=80).map(lambda p: _frame(0x05, PEER.raw + p)),  # RecvPacket
    st.binary(max_size=80).map(lambda p: _frame(0x05, PEER.raw + p)),  # (more of them)
    st.binary(max_size=31).map(lambda p: _frame(0x05, p)),  # short RecvPacket: dropped by the owner
    st.sampled_from([
        _frame(0x12, b"12345678"), _frame(0x13, b"abcdefgh"), f.encode(f.KeepAlive()),  # Ping, Pong
        _frame(0x08, PEER.raw), _frame(0x0E, b"sick"), _frame(0x99, b"?"), _frame(0x01, b"late key"),
        GOOD_INFO, BAD_INFO,
        f.encode_header(0x05, 2 << 20),  # an announcement over the client's frame limit
    ]),
)
_STARTS = st.sampled_from([SERVER_KEY + GOOD_INFO, SERVER_KEY, SERVER_KEY + BAD_INFO, b"",
                           _frame(0x05, b"x")])


def _sent(out: bytes) -> list[tuple[int, bytes]]:
    """A connection's output frames but ClientInfo (its box has a random nonce)."""
    return [(t, p) for t, p in FrameReader().feed_raw(out) if t != f.FrameType.CLIENT_INFO]


def _cut(stream: bytes, cuts: list[int]) -> list[bytes]:
    pts = sorted(c for c in cuts if c < len(stream))
    return [stream[a:b] for a, b in zip([0, *pts], [*pts, len(stream)], strict=True)]


def _by_frame(stream: bytes) -> list[bytes]:
    """``stream`` cut at every frame boundary (the rest in one piece after a header over the limit)."""
    out, off = [], 0
    while len(stream) - off >= f.FRAME_HEADER_LEN:
        n = int.from_bytes(stream[off + 1 : off + 5], "big")
        if n > CLIENT_MAX_FRAME_LEN:
            break
        out.append(stream[off : off + f.FRAME_HEADER_LEN + n])
        off += f.FRAME_HEADER_LEN + n
    return [*out, stream[off:]] if off < len(stream) else out


def _whole(chunks: list[bytes]) -> tuple[list[Any], list[Any], bytes, str | None, int]:
    """One ``ClientConnection`` fed every read: (packets, other events, its output, error, reads done)."""
    conn = ClientConnection(CLIENT, 0.0)
    packets: list[Any] = []
    events: list[Any] = []
    for i, c in enumerate(chunks):
        try:
            evs = conn.receive_packets(c, 0.0)
        except WireError as e:
            assert conn.state is State.CLOSED
            return packets, events, conn.data_to_send(), type(e).__name__, i
        packets += [e for e in evs if isinstance(e, tuple)]
        events += [e for e in evs if not isinstance(e, tuple)]
    return packets, events, conn.data_to_send(), None, len(chunks)


def _split(chunks: list[bytes]) -> tuple[list[Any], list[Any], bytes, str | None, list[int]]:
    """The lane: the splitter frames each read, the owner's connection gets the rest and tells the
    splitter of each ServerInfo it opened; (packets, events, output, error, packets split per read)."""
    conn = ClientConnection(CLIENT, 0.0)
    sp = RecvSplitter()
    packets: list[Any] = []
    events: list[Any] = []
    per_read: list[int] = []
    for c in chunks:
        try:
            split, rest = sp.feed(c)
        except WireError as e:
            return packets, events, conn.data_to_send(), type(e).__name__, per_read
        packets += split
        per_read.append(len(split))
        try:
            evs = conn.receive_packets(rest, 0.0) if rest else []
        except WireError as e:
            return packets, events, conn.data_to_send(), type(e).__name__, per_read
        for e in evs:
            if isinstance(e, ServerInfoReceived):
                sp.server_info_opened()
        packets += [e for e in evs if isinstance(e, tuple)]
        events += [e for e in evs if not isinstance(e, tuple)]
    return packets, events, conn.data_to_send(), None, per_read


_PKT = _frame(0x05, PEER.raw + b"data")


@settings(max_examples=400, deadline=None)
@example(start=SERVER_KEY + GOOD_INFO, frames=[_PKT, BAD_INFO, _PKT],  # a bad second ServerInfo
         cuts=[len(SERVER_KEY + GOOD_INFO)])
@example(start=SERVER_KEY, frames=[_PKT, GOOD_INFO, _PKT, _PKT], cuts=[200])  # packets around the first
@given(start=_STARTS, frames=st.lists(_FRAMES, max_size=10), cuts=st.lists(st.integers(0, 600), max_size=4))
def test_the_lane_accepts_and_fails_exactly_as_one_connection(start: bytes, frames: list[bytes],
                                                             cuts: list[int]) -> None:
    chunks = _cut(start + b"".join(frames), cuts)
    w_packets, w_events, w_out, w_err, _ = _whole(chunks)
    s_packets, s_events, s_out, s_err, _ = _split(chunks)
    assert s_err == w_err and s_events == w_events and _sent(s_out) == _sent(w_out)
    if w_err is None:
        assert s_packets == w_packets
    else:  # one connection drops the whole failing read; the lane may have handed on packets in front
        # of the failing frame (as one connection fed a frame per read would), never one behind it
        by_frame = _whole(_by_frame(start + b"".join(frames)))[0]
        assert s_packets[: len(w_packets)] == w_packets
        assert by_frame[: len(s_packets)] == s_packets


def test_nothing_is_split_before_the_owner_opened_server_info() -> None:
    sp = RecvSplitter()
    pkt = _frame(0x05, PEER.raw + b"early")
    assert sp.feed(SERVER_KEY + pkt) == ([], SERVER_KEY + pkt)
    assert sp.feed(GOOD_INFO + pkt) == ([], GOOD_INFO + pkt)  # not opened yet: the owner's
    assert not sp.armed
    sp.server_info_opened()
    ping = _frame(0x12, b"12345678")
    assert sp.feed(pkt + ping + pkt) == ([(PEER.raw, b"early")] * 2, ping)
    # a second ServerInfo: the packets behind it go to the owner with it until it is opened
    assert sp.feed(pkt + BAD_INFO + pkt) == ([(PEER.raw, b"early")], BAD_INFO + pkt)
    assert sp.feed(pkt) == ([], pkt)
    assert sp.reads == 5


def test_a_packet_frame_split_across_reads_comes_out_whole() -> None:
    sp = RecvSplitter()
    sp.feed(SERVER_KEY + GOOD_INFO)
    sp.server_info_opened()
    pkt = _frame(0x05, PEER.raw + bytes(range(200)))
    assert sp.feed(pkt[:3]) == ([], b"") and sp.feed(pkt[3:40]) == ([], b"")
    assert sp.feed(pkt[40:] + pkt[:1]) == ([(PEER.raw, bytes(range(200)))], b"")
    assert sp.reads == 2  # reads that completed a frame (the owner's read deadline)


def test_an_oversize_announcement_fails_the_stream() -> None:
    sp = RecvSplitter()
    with pytest.raises(FrameTooLargeError):
        sp.feed(f.encode_header(0x05, 2 << 20))
    with pytest.raises(FrameTooLargeError):  # poisoned: a DERP stream cannot be resynced
        sp.feed(SERVER_KEY)


def test_note_activity_moves_the_read_deadline() -> None:
    conn = ClientConnection(CLIENT, 0.0)
    assert conn.next_deadline() == 120.0
    conn.note_activity(100.0)
    assert conn.next_deadline() == 220.0
    conn.note_activity(50.0)  # never backwards
    assert conn.next_deadline() == 220.0
