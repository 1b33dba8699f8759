"""The hot-path forms of the DERP connections (``receive_packets``, ``send_packets``) against the frame path.

The relay and magicsock use them for every data packet; they must accept, reject and close on exactly
what the frame classes do, so these tests drive both paths with the same bytes and compare."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pytsnet.wire.derp import frames as f
from pytsnet.wire.derp.errors import DerpParseError, FrameTooLargeError
from pytsnet.wire.derp.handshake import (
    ClientConnection,
    FrameReceived,
    ServerConnection,
    State,
)
from pytsnet.wire.errors import WireError
from pytsnet.wire.keys import NodePrivate, NodePublic

SERVER = NodePrivate.from_raw(bytes([1] * 32))
CLIENT = NodePrivate.from_raw(bytes([2] * 32))
PEER = NodePrivate.from_raw(bytes([3] * 32)).public()


def _as_raw(events: list[Any]) -> list[Any]:
    """The frame path's events with each packet frame written as ``receive_packets`` writes it."""
    out: list[Any] = []
    for ev in events:
        if isinstance(ev, FrameReceived) and isinstance(ev.frame, f.SendPacket):
            out.append((ev.frame.dst.raw, ev.frame.packet))
        elif isinstance(ev, FrameReceived) and isinstance(ev.frame, f.RecvPacket):
            out.append((ev.frame.src.raw, ev.frame.packet))
        else:
            out.append(ev)
    return out


def _run(conn: Any, chunks: list[bytes], raw: bool) -> tuple[list[Any], str | None]:
    events: list[Any] = []
    try:
        for c in chunks:
            events += conn.receive_packets(c, 0.0) if raw else conn.receive_data(c, 0.0)
    except WireError as e:
        assert conn.state is State.CLOSED
        return events, type(e).__name__
    return events, None


def _connected_server() -> tuple[ServerConnection, bytes]:
    """A server past the handshake, and the client bytes that got it there."""
    srv = ServerConnection(SERVER, now=0.0, jitter=lambda: 0.0)
    cli = ClientConnection(CLIENT, now=0.0, server_key=SERVER.public())
    hello = cli.data_to_send()
    srv.receive_data(hello, 0.0)
    srv.accept(0.0)
    srv.data_to_send()
    return srv, hello


def _frame(t: int, payload: bytes) -> bytes:
    return f.encode_header(t, len(payload)) + payload


_PACKETS = st.one_of(
    st.binary(max_size=80).map(lambda p: _frame(0x04, PEER.raw + p)),  # SendPacket
    st.binary(max_size=31).map(lambda p: _frame(0x04, p)),  # short SendPacket
    st.binary(max_size=80).map(lambda p: _frame(0x05, PEER.raw + p)),  # RecvPacket
    st.binary(max_size=31).map(lambda p: _frame(0x05, p)),  # short RecvPacket
    st.sampled_from([_frame(0x12, b"12345678"), _frame(0x07, b"\x01"), f.encode(f.KeepAlive()),
                     _frame(0x0A, PEER.raw * 2 + b"x"), _frame(0x99, b"?")]),
    st.binary(max_size=20),  # garbage
)


@settings(max_examples=300, deadline=None)
@given(frames=st.lists(_PACKETS, max_size=8), cuts=st.lists(st.integers(0, 400), max_size=3))
def test_server_receive_packets_matches_the_frame_path(frames: list[bytes], cuts: list[int]) -> None:
    stream = b"".join(frames)
    chunks = [stream[a:b] for a, b in zip([0, *sorted(cuts)], [*sorted(cuts), len(stream)], strict=True)]
    slow = _run(_connected_server()[0], chunks, raw=False)
    fast = _run(_connected_server()[0], chunks, raw=True)
    assert _as_raw(slow[0]) == fast[0] and slow[1] == fast[1]


@settings(max_examples=300, deadline=None)
@given(frames=st.lists(_PACKETS, max_size=8), cuts=st.lists(st.integers(0, 400), max_size=3))
def test_client_receive_packets_matches_the_frame_path(frames: list[bytes], cuts: list[int]) -> None:
    stream = b"".join(frames)
    chunks = [stream[a:b] for a, b in zip([0, *sorted(cuts)], [*sorted(cuts), len(stream)], strict=True)]

    def client() -> ClientConnection:
        return ClientConnection(CLIENT, now=0.0, server_key=SERVER.public())

    slow = _run(client(), chunks, raw=False)
    fast = _run(client(), chunks, raw=True)
    assert _as_raw(slow[0]) == fast[0] and slow[1] == fast[1]


def test_packets_after_client_info_in_the_same_read_take_the_fast_form() -> None:
    srv = ServerConnection(SERVER, now=0.0)
    cli = ClientConnection(CLIENT, now=0.0, server_key=SERVER.public())
    cli.send_packet(PEER, b"early")
    auth, pkt = srv.receive_packets(cli.data_to_send(), 0.0)
    assert auth.__class__.__name__ == "ClientAuthenticated" and pkt == (PEER.raw, b"early")


def test_server_closes_on_a_short_or_oversize_send_packet() -> None:
    srv, _ = _connected_server()
    with pytest.raises(DerpParseError):
        srv.receive_packets(_frame(0x04, b"short"), 0.0)
    assert srv.state is State.CLOSED
    srv, _ = _connected_server()
    with pytest.raises(FrameTooLargeError):
        srv.receive_packets(_frame(0x04, PEER.raw + bytes(f.MAX_PACKET_SIZE + 1)), 0.0)
    assert srv.state is State.CLOSED


def test_client_drops_an_oversize_recv_packet_and_reads_on() -> None:
    cli = ClientConnection(CLIENT, now=0.0, server_key=SERVER.public())
    big = _frame(0x05, PEER.raw + bytes(f.MAX_PACKET_SIZE + 1))
    assert cli.receive_packets(big + _frame(0x05, PEER.raw + b"ok"), 0.0) == [(PEER.raw, b"ok")]


def test_send_packets_writes_the_same_bytes_as_send_packet() -> None:
    packets = [b"", b"a", bytes(1280), bytes(range(256)) * 4]
    one, many = (ClientConnection(CLIENT, now=0.0, server_key=SERVER.public()) for _ in range(2))
    one.data_to_send()
    many.data_to_send()
    for p in packets:
        one.send_packet(PEER, p)
    assert many.send_packets(PEER, packets) == (sum(map(len, packets)), 0)
    assert many.data_to_send() == one.data_to_send()


def test_send_packets_skips_and_counts_an_oversize_packet() -> None:
    cli = ClientConnection(CLIENT, now=0.0, server_key=SERVER.public())
    cli.data_to_send()
    assert cli.send_packets(PEER, [b"ok", bytes(f.MAX_PACKET_SIZE + 1), b"on"]) == (4, 1)
    out = cli.data_to_send()
    assert f.parse_frame(out[:39]) == f.SendPacket(PEER, b"ok")
    assert f.parse_frame(out[39:]) == f.SendPacket(PEER, b"on")
    with pytest.raises(WireError):
        ClientConnection(CLIENT, now=0.0).send_packets(NodePublic.from_raw(PEER.raw), [b"x"])
