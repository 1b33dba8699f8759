"""DERP frame codec: every frame type round-trips byte-exactly, limits are enforced, junk only raises
the typed error."""

from __future__ import annotations

import ipaddress
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pytsnet.wire.derp import frames as f
from pytsnet.wire.derp.errors import DerpParseError, FrameTooLargeError
from pytsnet.wire.derp.reader import FrameReader
from pytsnet.wire.errors import ParseError
from pytsnet.wire.keys import NodePublic

K1 = NodePublic.from_raw(bytes(range(32)))
K2 = NodePublic.from_raw(bytes(range(32, 64)))

# (frame, expected type byte, expected payload) — payloads written out from derp.md §4.
CASES = [
    (f.ServerKey(K1), 0x01, b"DERP\xf0\x9f\x94\x91" + K1.raw),
    (f.ClientInfoFrame(K1, bytes(24) + b"box"), 0x02, K1.raw + bytes(24) + b"box"),
    (f.ServerInfoFrame(bytes(24) + b"box"), 0x03, bytes(24) + b"box"),
    (f.SendPacket(K2, b"hello"), 0x04, K2.raw + b"hello"),
    (f.RecvPacket(K1, b"hi"), 0x05, K1.raw + b"hi"),
    (f.KeepAlive(), 0x06, b""),
    (f.NotePreferred(True), 0x07, b"\x01"),
    (f.NotePreferred(False), 0x07, b"\x00"),
    (f.PeerGone(K1, f.PeerGoneReason.NOT_HERE), 0x08, K1.raw + b"\x01"),
    (
        f.PeerPresent(K1, (ipaddress.ip_address("1.2.3.4"), 567), f.PEER_PRESENT_IS_REGULAR),
        0x09,
        K1.raw + bytes(10) + b"\xff\xff\x01\x02\x03\x04\x02\x37\x01",
    ),
    (f.ForwardPacket(K1, K2, b"x"), 0x0A, K1.raw + K2.raw + b"x"),
    (f.WatchConns(), 0x10, b""),
    (f.ClosePeer(K2), 0x11, K2.raw),
    (f.Ping(b"12345678"), 0x12, b"12345678"),
    (f.Pong(b"12345678"), 0x13, b"12345678"),
    (f.Health("disk on fire"), 0x14, b"disk on fire"),
    (f.Restarting(1500, 30000), 0x15, struct.pack(">II", 1500, 30000)),
]


@pytest.mark.parametrize("frame,ftype,payload", CASES, ids=[type(c[0]).__name__ for c in CASES])
def test_every_frame_type_encodes_and_decodes(frame: f.Frame, ftype: int, payload: bytes) -> None:
    wire = f.encode(frame)
    assert wire == bytes([ftype]) + struct.pack(">I", len(payload)) + payload
    assert f.parse_frame(wire) == frame


def test_every_frame_type_is_covered() -> None:
    assert {c[1] for c in CASES} == {int(t) for t in f.FrameType}


def test_magic_bytes() -> None:
    assert bytes.fromhex("44455250f09f9491") == f.MAGIC


def test_lenient_forms_match_go() -> None:
    assert f.decode(0x08, K1.raw) == f.PeerGone(K1, 0)  # old servers: no reason byte
    assert f.decode(0x09, K1.raw) == f.PeerPresent(K1)  # old servers: key only
    v6 = ipaddress.ip_address("2001:db8::1")
    assert f.decode(0x09, K1.raw + v6.packed + b"\x00\x50") == f.PeerPresent(K1, (v6, 80))
    assert f.decode(0x12, b"12345678extra") == f.Ping(b"12345678")
    assert f.decode(0x01, f.MAGIC + K1.raw + b"future") == f.ServerKey(K1, b"future")
    assert f.decode(0x06, b"ignored") == f.KeepAlive()
    assert f.decode(0x7F, b"abc") == f.UnknownFrame(0x7F, b"abc")


@pytest.mark.parametrize(
    "ftype,payload",
    [
        (0x01, b"DERP\xf0\x9f\x94\x92" + bytes(32)),  # bad magic
        (0x01, f.MAGIC + bytes(31)),
        (0x02, bytes(55)),
        (0x03, bytes(23)),
        (0x04, bytes(31)),
        (0x07, b""),
        (0x07, b"\x01\x01"),
        (0x10, b"\x00"),
        (0x11, bytes(33)),
        (0x12, bytes(7)),
        (0x15, bytes(7)),
    ],
)
def test_malformed_payloads_raise_parse_error(ftype: int, payload: bytes) -> None:
    with pytest.raises(DerpParseError):
        f.decode(ftype, payload)


def test_packet_size_limit() -> None:
    f.encode(f.SendPacket(K1, bytes(f.MAX_PACKET_SIZE)))
    with pytest.raises(FrameTooLargeError):
        f.encode(f.SendPacket(K1, bytes(f.MAX_PACKET_SIZE + 1)))
    with pytest.raises(FrameTooLargeError):
        f.decode(0x04, K1.raw + bytes(f.MAX_PACKET_SIZE + 1))
    with pytest.raises(FrameTooLargeError):
        f.decode(0x0A, K1.raw + K2.raw + bytes(f.MAX_PACKET_SIZE + 1))


def test_reader_reassembles_byte_by_byte() -> None:
    stream = b"".join(f.encode(c[0]) for c in CASES)
    r = FrameReader()
    got = []
    for i in range(len(stream)):
        got += r.feed(stream[i : i + 1])
    assert got == [c[0] for c in CASES]
    assert r.buffered == 0
    r2 = FrameReader()
    assert r2.feed(stream) == [c[0] for c in CASES]


def test_reader_rejects_oversize_header_before_body() -> None:
    r = FrameReader(max_frame_len=1000)
    with pytest.raises(FrameTooLargeError):
        r.feed(b"\x04" + struct.pack(">I", 1001))
    assert r.buffered == 0
    with pytest.raises(FrameTooLargeError):  # poisoned: a DERP stream cannot resync
        r.feed(f.encode(f.KeepAlive()))
    r = FrameReader()  # default (client) limit is Go's 1 MiB
    with pytest.raises(FrameTooLargeError):
        r.feed(b"\x05\xff\xff\xff\xff")


@settings(max_examples=300, deadline=None)
@given(ftype=st.integers(0, 255), payload=st.binary(max_size=300))
def test_decode_random_payload_only_raises_parse_error(ftype: int, payload: bytes) -> None:
    try:
        frame = f.decode(ftype, payload)
    except ParseError:
        return
    assert f.frame_type_of(frame) == ftype


_VALID_STREAM = b"".join(f.encode(c[0]) for c in CASES)


@settings(max_examples=300, deadline=None)
@given(
    data=st.one_of(
        st.binary(max_size=400),
        st.tuples(st.integers(0, len(_VALID_STREAM) - 1), st.integers(0, 255)).map(
            lambda m: _VALID_STREAM[: m[0]] + bytes([m[1]]) + _VALID_STREAM[m[0] + 1 :]
        ),
    ),
    chunk=st.integers(1, 64),
)
def test_reader_random_and_mutated_streams(data: bytes, chunk: int) -> None:
    r = FrameReader(max_frame_len=4096)
    try:
        for i in range(0, len(data), chunk):
            r.feed(data[i : i + chunk])
            assert r.buffered <= f.FRAME_HEADER_LEN + 4096
    except ParseError:
        pass
