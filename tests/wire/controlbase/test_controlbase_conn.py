"""Record layer: 3-byte headers, size limits, big-endian nonces, fatal errors."""

from __future__ import annotations

import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from pytsnet.wire.controlbase import (
    MAX_MESSAGE_SIZE,
    MAX_PLAINTEXT_SIZE,
    Conn,
    ControlCryptoError,
    ControlParseError,
    ControlProtocolError,
)
from pytsnet.wire.controlbase.constants import INVALID_NONCE
from pytsnet.wire.keys import MachinePublic

K1, K2 = bytes([1]) * 32, bytes([2]) * 32


def pair() -> tuple[Conn, Conn]:
    peer = MachinePublic.from_raw(bytes(32))
    a = Conn(send_key=K1, receive_key=K2, protocol_version=145, peer=peer, handshake_hash=b"h" * 32)
    b = Conn(send_key=K2, receive_key=K1, protocol_version=145, peer=peer, handshake_hash=b"h" * 32)
    return a, b


def records(wire: bytes) -> list[bytes]:
    out = []
    while wire:
        assert wire[0] == 0x04
        n = int.from_bytes(wire[1:3], "big")
        out.append(wire[3:3 + n])
        wire = wire[3 + n:]
    return out


def test_record_header_and_empty_record() -> None:
    a, b = pair()
    wire = a.send(b"")
    assert wire[:3] == b"\x04\x00\x10" and len(wire) == 19
    assert b.receive_data(wire) == b""


def test_max_plaintext_fills_exactly_one_max_record() -> None:
    a, b = pair()
    wire = a.send(b"a" * MAX_PLAINTEXT_SIZE)
    assert len(wire) == MAX_MESSAGE_SIZE == 4096 and wire[1:3] == (4093).to_bytes(2, "big")
    assert b.receive_data(wire) == b"a" * 4077


def test_large_writes_are_split() -> None:
    a, b = pair()
    data = bytes(range(256)) * 40  # 10240 bytes → 4077 + 4077 + 2086
    wire = a.send(data)
    assert [len(r) - 16 for r in records(wire)] == [4077, 4077, 2086]
    assert b.receive_data(wire) == data


def test_nonce_is_big_endian_counter() -> None:
    a, _ = pair()
    sealed = [records(a.send(b"m%d" % i))[0] for i in range(257)]
    aead = ChaCha20Poly1305(K1)
    for i in (0, 1, 256):
        nonce = bytes(4) + i.to_bytes(8, "big")
        assert aead.decrypt(nonce, sealed[i], None) == b"m%d" % i
    with pytest.raises(InvalidTag):  # the little-endian nonce must NOT work
        aead.decrypt(bytes(4) + (1).to_bytes(8, "little"), sealed[1], None)


def test_partial_feeding_buffers_at_most_one_record() -> None:
    a, b = pair()
    wire = a.send(b"hello") + a.send(b"world")
    got = b""
    for byte in wire:
        got += b.receive_data(bytes([byte]))
        assert b.buffered < MAX_MESSAGE_SIZE
    assert got == b"helloworld"


def test_oversized_record_is_fatal() -> None:
    _, b = pair()
    with pytest.raises(ControlParseError, match="exceeds"):
        b.receive_data(b"\x04" + (4094).to_bytes(2, "big"))
    with pytest.raises(ControlProtocolError):
        b.receive_data(b"")


def test_wrong_record_type_is_fatal() -> None:
    a, b = pair()
    wire = bytearray(a.send(b"x"))
    wire[0] = 0x02
    with pytest.raises(ControlParseError):
        b.receive_data(bytes(wire))


def test_tampered_record_is_crypto_error_and_kills_receive_side() -> None:
    a, b = pair()
    wire = bytearray(a.send(b"secret"))
    wire[5] ^= 1
    with pytest.raises(ControlCryptoError):
        b.receive_data(bytes(wire))
    with pytest.raises(ControlProtocolError):
        b.receive_data(a.send(b"next"))


def test_replayed_record_fails() -> None:
    a, b = pair()
    wire = a.send(b"once")
    assert b.receive_data(wire) == b"once"
    with pytest.raises(ControlCryptoError):
        b.receive_data(wire)


def test_exhausted_counter_refuses_to_send() -> None:
    a, _ = pair()
    a._tx_counter = INVALID_NONCE - 1
    a.send(b"last")
    with pytest.raises(ControlProtocolError, match="exhausted"):
        a.send(b"one too many")
    with pytest.raises(ControlProtocolError):
        a.send(b"")
