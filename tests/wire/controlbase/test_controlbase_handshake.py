"""ts2021 Noise IK: hash vectors from control.md, client↔server round trips, byte layouts, tampering."""

from __future__ import annotations

import hashlib
import struct

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from pytsnet.wire.controlbase import (
    ClientHandshake,
    ClientStream,
    ControlCryptoError,
    ControlParseError,
    ControlProtocolError,
    ErrorMessage,
    ServerErrorMessage,
    ServerStream,
    accept_initiation,
    encode_error_message,
)
from pytsnet.wire.controlbase.constants import PROTOCOL_NAME
from pytsnet.wire.controlbase.symmetric import SymmetricState, protocol_version_prologue
from pytsnet.wire.errors import WireError

MACHINE = bytes(range(1, 33))
CONTROL = bytes(range(101, 133))
EPHEMERAL = bytes(range(201, 233))


def pub(private: bytes) -> bytes:
    key = X25519PrivateKey.from_private_bytes(private).public_key()
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


def test_protocol_name_and_prologue_hash_match_control_md() -> None:
    assert hashlib.blake2s(PROTOCOL_NAME).hexdigest() == (
        "bbea022b948cf3bc5857d70804229179e1116bc40cb8cc074835349c464bca36")
    s = SymmetricState()
    s.mix_hash(protocol_version_prologue(145))
    assert protocol_version_prologue(145) == b"Tailscale Control Protocol v145"
    assert s.h.hex() == "247ca9933aea868dfd279438dcd7ba1d589ee77e9946c89930b404f722d4f9f7"


def test_initiation_layout_is_byte_exact() -> None:
    init = ClientHandshake(MACHINE, pub(CONTROL), 145, ephemeral_private=EPHEMERAL).initiation
    assert len(init) == 101
    assert init[:2] == b"\x00\x91"  # version 145, uint16 BE
    assert init[2] == 0x01  # initiation
    assert init[3:5] == b"\x00\x60"  # payload length 96
    assert init[5:37] == pub(EPHEMERAL)  # ephemeral in the clear
    assert pub(MACHINE) not in init  # the machine key is encrypted
    # version 130 as a Go 1.90 client sends it (interop.md: "00 82 01 00 60")
    assert ClientHandshake(MACHINE, pub(CONTROL), 130).initiation[:5] == bytes.fromhex("0082010060")


def test_client_server_round_trip() -> None:
    client = ClientHandshake(MACHINE, pub(CONTROL), 145)
    acc = accept_initiation(client.initiation, CONTROL)
    assert acc.machine_public.raw == pub(MACHINE)
    assert acc.protocol_version == 145
    assert len(acc.response) == 51 and acc.response[:3] == b"\x02\x00\x30"
    cconn = client.receive_response(acc.response)
    sconn = acc.conn
    assert cconn.peer.raw == pub(CONTROL) and sconn.peer.raw == pub(MACHINE)
    assert cconn.handshake_hash == sconn.handshake_hash
    assert cconn.protocol_version == sconn.protocol_version == 145
    for msg in (b"hello", b"", b"x" * 10000):
        assert sconn.receive_data(cconn.send(msg)) == msg
        assert cconn.receive_data(sconn.send(msg[::-1])) == msg[::-1]


def test_deterministic_transcript_is_stable() -> None:
    """Same keys in, same bytes out (both sides), and the response depends on the server ephemeral."""
    a = ClientHandshake(MACHINE, pub(CONTROL), 145, ephemeral_private=EPHEMERAL).initiation
    b = ClientHandshake(MACHINE, pub(CONTROL), 145, ephemeral_private=EPHEMERAL).initiation
    assert a == b
    r1 = accept_initiation(a, CONTROL, ephemeral_private=MACHINE[::-1]).response
    r2 = accept_initiation(a, CONTROL, ephemeral_private=MACHINE[::-1]).response
    assert r1 == r2 and r1[3:35] == pub(MACHINE[::-1])


@pytest.mark.parametrize("index", range(101))
def test_any_tampered_initiation_byte_is_refused(index: int) -> None:
    init = bytearray(ClientHandshake(MACHINE, pub(CONTROL), 145).initiation)
    init[index] ^= 0x01
    with pytest.raises((ControlParseError, ControlCryptoError)) as info:
        accept_initiation(bytes(init), CONTROL)
    if index in (2, 3, 4):
        assert isinstance(info.value, ControlParseError)
    elif index in (0, 1) or index >= 5:
        assert isinstance(info.value, ControlCryptoError)  # the version is bound in by the prologue


def test_wrong_control_key_fails_authentication() -> None:
    init = ClientHandshake(MACHINE, pub(CONTROL), 145).initiation
    with pytest.raises(ControlCryptoError):
        accept_initiation(init, EPHEMERAL)


@pytest.mark.parametrize("index", range(51))
def test_any_tampered_response_byte_is_refused(index: int) -> None:
    client = ClientHandshake(MACHINE, pub(CONTROL), 145)
    resp = bytearray(accept_initiation(client.initiation, CONTROL).response)
    resp[index] ^= 0x80
    with pytest.raises((ControlParseError, ControlCryptoError)):
        client.receive_response(bytes(resp))


def test_initiation_size_errors_and_error_message_roundtrip() -> None:
    with pytest.raises(ControlParseError, match="wrong handshake initiation size"):
        accept_initiation(b"\x00" * 100, CONTROL)
    msg = encode_error_message("wrong handshake initiation size")
    assert msg[:3] == b"\x03\x00\x1f"
    assert ErrorMessage.parse(msg).text == "wrong handshake initiation size"
    assert len(encode_error_message("x" * 70000)) == 3 + 0xFFFF


def test_low_order_ephemeral_is_a_crypto_error() -> None:
    init = bytearray(ClientHandshake(MACHINE, pub(CONTROL), 145).initiation)
    init[5:37] = bytes(32)  # all-zero point: X25519 result is zero
    with pytest.raises(ControlCryptoError):
        accept_initiation(bytes(init), CONTROL)


def test_handshake_cannot_be_finished_twice() -> None:
    client = ClientHandshake(MACHINE, pub(CONTROL), 145)
    resp = accept_initiation(client.initiation, CONTROL).response
    client.receive_response(resp)
    with pytest.raises(ControlProtocolError):
        client.receive_response(resp)


def test_stream_adapters_byte_by_byte_with_early_payload() -> None:
    client = ClientHandshake(MACHINE, pub(CONTROL), 145)
    server = ServerStream(accept_initiation(client.initiation, CONTROL),
                          early_payload=b'{"nodeKeyChallenge":"chalpub:00"}')
    cstream = ClientStream(client)
    with pytest.raises(ControlProtocolError):
        cstream.send(b"too early")
    wire = server.initial + server.send(b"\x00\x00\x00\x04\x00\x00\x00\x00\x00SETTINGS")
    got = b"".join(cstream.receive_data(wire[i:i + 1]) for i in range(len(wire)))
    assert got == b"\x00\x00\x00\x04\x00\x00\x00\x00\x00SETTINGS"
    assert cstream.early_payload == b'{"nodeKeyChallenge":"chalpub:00"}'
    preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
    assert server.receive_data(cstream.send(preface)) == preface


def test_stream_without_early_payload_passes_h2_bytes_through() -> None:
    client = ClientHandshake(MACHINE, pub(CONTROL), 145)
    server = ServerStream(accept_initiation(client.initiation, CONTROL))
    cstream = ClientStream(client)
    assert cstream.receive_data(server.initial + server.send(b"\x00\x00")) == b"\x00\x00"
    assert cstream.receive_data(server.send(b"\x12" * 20)) == b"\x12" * 20
    assert cstream.early_payload is None


def test_oversized_early_payload_is_refused() -> None:
    client = ClientHandshake(MACHINE, pub(CONTROL), 145)
    server = ServerStream(accept_initiation(client.initiation, CONTROL))
    cstream = ClientStream(client)
    with pytest.raises(ControlParseError):
        header = b"\xff\xff\xffTS" + struct.pack(">I", (10 << 20) + 1)
        cstream.receive_data(server.initial + server.send(header))


def test_client_stream_reports_server_error() -> None:
    cstream = ClientStream(ClientHandshake(MACHINE, pub(CONTROL), 145))
    msg = encode_error_message("go away")
    assert cstream.receive_data(msg[:4]) == b""
    with pytest.raises(ServerErrorMessage) as info:
        cstream.receive_data(msg[4:])
    assert info.value.text == "go away"
    assert isinstance(info.value, WireError)
