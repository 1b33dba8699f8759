"""The UDP demultiplexer on real messages of each protocol, Geneve encapsulation, and junk."""

from __future__ import annotations

import ipaddress
import struct

from hypothesis import given, settings
from hypothesis import strategies as st

from pytsnet.wire import disco, stun
from pytsnet.wire.keys import DiscoPrivate
from pytsnet.wire.udp_demux import (
    EARLY_DROP_REASONS,
    MAX_DATAGRAM,
    Classified,
    PacketKind,
    classify,
    early_drop,
)

A, B = DiscoPrivate.generate(), DiscoPrivate.generate()
DISCO_PKT = disco.seal_packet(A, B.public(), disco.Ping(bytes(12)))
STUN_REQ = stun.request(bytes(12))
STUN_RESP = stun.response(bytes(12), ipaddress.ip_address("192.0.2.1"), 4242)
WG_INIT = b"\x01\x00\x00\x00" + bytes(144)  # handshake initiation is 148 bytes
WG_DATA = b"\x04\x00\x00\x00" + bytes(12 + 16)


def geneve(proto: int, inner: bytes, vni: int = 7) -> bytes:
    return bytes([0, 0]) + struct.pack(">H", proto) + struct.pack(">I", vni << 8) + inner


def test_each_protocol() -> None:
    assert classify(STUN_REQ) == Classified(PacketKind.STUN_BINDING)
    assert classify(STUN_RESP) == Classified(PacketKind.STUN_BINDING)
    assert classify(DISCO_PKT) == Classified(PacketKind.DISCO)
    assert classify(DISCO_PKT[:38]) == Classified(PacketKind.DISCO)  # magic + key suffices, as in Go
    assert classify(WG_INIT) == Classified(PacketKind.WIREGUARD)
    assert classify(WG_DATA) == Classified(PacketKind.WIREGUARD)


def test_geneve() -> None:
    assert classify(geneve(0x7A11, DISCO_PKT)) == Classified(PacketKind.DISCO, geneve=True)
    assert classify(geneve(0x7A12, WG_DATA)) == Classified(PacketKind.WIREGUARD, geneve=True)
    # Geneve-disco protocol without a disco payload: Go falls back to naked WireGuard, which this isn't
    assert classify(geneve(0x7A11, b"junk" * 10)).kind is PacketKind.UNKNOWN
    # unknown Geneve protocol falls through to the disco/WireGuard checks
    assert classify(geneve(0x1234, b"")).kind is PacketKind.UNKNOWN


def test_non_binding_stun_and_junk() -> None:
    other_method = bytearray(STUN_REQ)
    other_method[1] = 0x03  # Allocate (TURN): not ours
    assert classify(bytes(other_method)).kind is PacketKind.UNKNOWN
    assert classify(b"").kind is PacketKind.UNKNOWN
    assert classify(b"\x05\x00\x00\x00").kind is PacketKind.UNKNOWN
    assert classify(b"TS\xf0\x9f\x92\xac" + bytes(31)).kind is PacketKind.UNKNOWN  # one byte short of a key


@settings(max_examples=500, deadline=None)
@given(
    data=st.one_of(
        st.binary(max_size=120),
        st.tuples(
            st.sampled_from([DISCO_PKT, STUN_REQ, STUN_RESP, WG_INIT, geneve(0x7A11, DISCO_PKT)]),
            st.integers(0, 200),
            st.integers(0, 255),
        ).map(lambda t: t[0][: t[1] % len(t[0])] + bytes([t[2]]) + t[0][t[1] % len(t[0]) + 1 :]),
    )
)
def test_classify_never_raises(data: bytes) -> None:
    assert isinstance(classify(data).kind, PacketKind)


def test_early_drop_reasons() -> None:
    live = {7}
    transport = lambda idx, n=32: struct.pack("<II", 4, idx) + bytes(n - 8)  # noqa: E731
    assert early_drop(transport(7), live) is None
    assert early_drop(transport(8), live) == "unknown_index"
    assert early_drop(transport(8), None) is None  # indexes not known yet: nothing dropped for its index
    assert early_drop(transport(7, 31), live) == "bad_length"  # shorter than header + tag
    assert early_drop(struct.pack("<III", 2, 1, 7) + bytes(80), live) is None  # response to index 7
    assert early_drop(struct.pack("<III", 2, 1, 9) + bytes(80), live) == "unknown_index"
    assert early_drop(struct.pack("<II", 3, 7) + bytes(56), live) is None  # cookie reply to index 7
    assert early_drop(WG_INIT, live) is None  # initiations carry no index of ours
    assert early_drop(WG_INIT, live, initiations_full=True) == "handshake_queue_full"
    assert early_drop(transport(7), live, initiations_full=True) is None  # only initiations wait there
    assert early_drop(WG_INIT + b"\0", live) == "bad_length"
    assert early_drop(transport(7, MAX_DATAGRAM + 1), live) == "oversize"
    assert early_drop(bytes(MAX_DATAGRAM + 1), live) == "oversize"
    assert early_drop(b"\x05\x00\x00\x00", live) == "unknown_kind"
    assert early_drop(b"", live) == "unknown_kind"
    for keep in (DISCO_PKT, STUN_REQ, STUN_RESP, geneve(0x7A12, WG_DATA)):
        assert early_drop(memoryview(keep), live) is None


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=200))
def test_early_drop_keeps_exactly_what_classify_routes(data: bytes) -> None:
    reason = early_drop(data, None)
    assert reason in (None, *EARLY_DROP_REASONS)
    if reason is None:
        assert classify(data).kind is not PacketKind.UNKNOWN
