"""STUN (RFC 5389) as Tailscale uses it: Binding requests out, Binding responses in.

Layouts follow Go ``net/stun/stun.go``: a 40-byte request with SOFTWARE "tailnode" and a
FINGERPRINT; responses read XOR-MAPPED-ADDRESS (0x0020, or the misnumbered 0x8020 some servers
send), falling back to MAPPED-ADDRESS. ``parse_message`` walks any STUN message's attributes
(e.g. RFC 5769's samples, whose MESSAGE-INTEGRITY we do not check) and ``check_fingerprint``
verifies a trailing FINGERPRINT. Every parser raises only ``StunParseError``.

The server side of RFC 5780 NAT behaviour discovery (what the test lab's reflectors answer, and
miniupnpd's STUN test asks): ``change_request`` builds a Binding request with a CHANGE-REQUEST,
``parse_server_request`` reads any client's Binding request and its change flags, and
``server_response`` answers with XOR-MAPPED-ADDRESS, MAPPED-ADDRESS (older clients read only that),
RESPONSE-ORIGIN and OTHER-ADDRESS; ``address_attributes`` decodes them all.
"""

from __future__ import annotations

import ipaddress
import os
import struct
import zlib
from dataclasses import dataclass

from pytsnet.wire.errors import ParseError

MAGIC_COOKIE = bytes.fromhex("2112a442")
HEADER_LEN = 20
TX_ID_LEN = 12
BINDING_REQUEST = 0x0001
BINDING_SUCCESS = 0x0101
ATTR_MAPPED_ADDRESS = 0x0001
ATTR_CHANGE_REQUEST = 0x0003
ATTR_XOR_MAPPED_ADDRESS = 0x0020
ATTR_XOR_MAPPED_ADDRESS_ALT = 0x8020
ATTR_SOFTWARE = 0x8022
ATTR_FINGERPRINT = 0x8028
ATTR_RESPONSE_ORIGIN = 0x802B
ATTR_OTHER_ADDRESS = 0x802C
CHANGE_IP = 0x04
CHANGE_PORT = 0x02
SOFTWARE = b"tailnode"
FINGERPRINT_XOR = 0x5354554E
LEN_FINGERPRINT = 8
MAX_ATTRIBUTES = 256  # bound work on hostile input; real messages carry a handful

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
AddrPort = tuple[IPAddress, int]


class StunParseError(ParseError):
    """Not STUN, not the expected message, malformed attributes, or a bad fingerprint."""


def new_tx_id() -> bytes:
    return os.urandom(TX_ID_LEN)


def fingerprint(b: bytes) -> int:
    """CRC-32 of ``b`` XOR 0x5354554e (RFC 5389 §15.5)."""
    return zlib.crc32(b) ^ FINGERPRINT_XOR


def is_stun(b: bytes | bytearray | memoryview) -> bool:
    """Go ``stun.Is``: ≥ 20 bytes, top two bits zero, magic cookie at 4..8."""
    return len(b) >= HEADER_LEN and b[0] & 0xC0 == 0 and b[4:8] == MAGIC_COOKIE


def _check_tx(tx_id: bytes) -> None:
    if len(tx_id) != TX_ID_LEN:
        raise StunParseError("transaction ID must be 12 bytes")


def request(tx_id: bytes) -> bytes:
    """The 40-byte Binding request Tailscale sends (SOFTWARE then FINGERPRINT)."""
    _check_tx(tx_id)
    b = struct.pack(">HH", BINDING_REQUEST, 4 + len(SOFTWARE) + LEN_FINGERPRINT) + MAGIC_COOKIE + tx_id
    b += struct.pack(">HH", ATTR_SOFTWARE, len(SOFTWARE)) + SOFTWARE
    return b + struct.pack(">HHI", ATTR_FINGERPRINT, 4, fingerprint(b))


@dataclass(frozen=True, slots=True)
class StunMessage:
    message_type: int
    tx_id: bytes
    attributes: tuple[tuple[int, bytes], ...]


def _attrs(b: bytes) -> list[tuple[int, bytes]]:
    out: list[tuple[int, bytes]] = []
    i = 0
    while i < len(b):
        if len(b) - i < 4:
            raise StunParseError("malformed STUN attributes")
        t, n = struct.unpack_from(">HH", b, i)
        i += 4
        padded = (n + 3) & ~3
        if padded > len(b) - i:
            raise StunParseError("malformed STUN attributes")
        out.append((t, bytes(b[i : i + n])))
        i += padded
        if len(out) > MAX_ATTRIBUTES:
            raise StunParseError("too many STUN attributes")
    return out


def parse_message(b: bytes) -> StunMessage:
    """Header and attributes of any STUN message; bytes past the declared length are ignored."""
    if not is_stun(b):
        raise StunParseError("not a STUN message")
    t, n = struct.unpack_from(">HH", b)
    if n > len(b) - HEADER_LEN:
        raise StunParseError("STUN length exceeds the packet")
    return StunMessage(t, bytes(b[8:20]), tuple(_attrs(b[HEADER_LEN : HEADER_LEN + n])))


def check_fingerprint(b: bytes) -> None:
    """Raise unless the message ends (at its declared length) in a correct FINGERPRINT."""
    msg = parse_message(b)
    end = HEADER_LEN + struct.unpack_from(">H", b, 2)[0]
    if not msg.attributes or msg.attributes[-1][0] != ATTR_FINGERPRINT or len(msg.attributes[-1][1]) != 4:
        raise StunParseError("STUN message does not end in a FINGERPRINT")
    if struct.unpack(">I", msg.attributes[-1][1])[0] != fingerprint(b[: end - LEN_FINGERPRINT]):
        raise StunParseError("STUN FINGERPRINT mismatch")


def parse_binding_request(b: bytes) -> bytes:
    """The transaction ID of a Tailscale Binding request (SOFTWARE "tailnode", valid FINGERPRINT)."""
    msg = parse_message(b)
    if msg.message_type != BINDING_REQUEST:
        raise StunParseError("STUN message is not a binding request")
    if not any(t == ATTR_SOFTWARE and v == SOFTWARE for t, v in msg.attributes):
        raise StunParseError("STUN request came from non-Tailscale software")
    if b[HEADER_LEN + struct.unpack_from(">H", b, 2)[0] :]:
        raise StunParseError("trailing bytes after the STUN request")  # Go checks the whole datagram
    check_fingerprint(b)
    return msg.tx_id


def _address_value(addr: IPAddress, port: int, xor_with: bytes | None) -> bytes:
    """An address attribute's value (family, port, address), XORed with ``xor_with`` when given."""
    raw = addr.packed
    if xor_with is not None:
        port ^= 0x2112
        raw = bytes(x ^ y for x, y in zip(raw, xor_with[: len(raw)], strict=True))
    return struct.pack(">BBH", 0, 1 if len(raw) == 4 else 2, port) + raw


def response(tx_id: bytes, addr: IPAddress, port: int) -> bytes:
    """A Binding success response carrying one XOR-MAPPED-ADDRESS (Go ``stun.Response``)."""
    _check_tx(tx_id)
    attr = _address_value(addr, port, MAGIC_COOKIE + tx_id)
    return (
        struct.pack(">HH", BINDING_SUCCESS, 4 + len(attr))
        + MAGIC_COOKIE
        + tx_id
        + struct.pack(">HH", ATTR_XOR_MAPPED_ADDRESS, len(attr))
        + attr
    )


def _address(v: bytes, xor_with: bytes | None) -> AddrPort:
    if len(v) < 4:
        raise StunParseError("malformed address attribute")
    n = {1: 4, 2: 16}.get(v[1])
    if n is None or len(v) < 4 + n:
        raise StunParseError("malformed address attribute")
    port = struct.unpack_from(">H", v, 2)[0]
    raw = v[4 : 4 + n]
    if xor_with is not None:
        port ^= 0x2112
        raw = bytes(x ^ y for x, y in zip(raw, xor_with[:n], strict=True))
    a = ipaddress.ip_address(raw)
    if isinstance(a, ipaddress.IPv6Address) and a.ipv4_mapped is not None:
        a = a.ipv4_mapped
    return a, port


def parse_response(b: bytes) -> tuple[bytes, AddrPort]:
    """``(tx_id, (addr, port))`` from a Binding success response."""
    msg = parse_message(b)
    if msg.message_type != BINDING_SUCCESS:
        raise StunParseError("STUN packet is not a success response")
    found: AddrPort | None = None
    fallback: AddrPort | None = None
    for t, v in msg.attributes:
        if t in (ATTR_XOR_MAPPED_ADDRESS, ATTR_XOR_MAPPED_ADDRESS_ALT):
            found = _address(v, MAGIC_COOKIE + msg.tx_id)
        elif t == ATTR_MAPPED_ADDRESS:
            fallback = _address(v, None)
    addr = found or fallback
    if addr is None:
        raise StunParseError("STUN response has no mapped address")
    return msg.tx_id, addr


# -- RFC 5780: the server side of NAT behaviour discovery ------------------------------------------
def change_request(tx_id: bytes, *, change_ip: bool, change_port: bool) -> bytes:
    """A Binding request carrying only a CHANGE-REQUEST (RFC 5780 §7.2), as miniupnpd's STUN test."""
    _check_tx(tx_id)
    flags = (CHANGE_IP if change_ip else 0) | (CHANGE_PORT if change_port else 0)
    return (struct.pack(">HH", BINDING_REQUEST, 8) + MAGIC_COOKIE + tx_id
            + struct.pack(">HHI", ATTR_CHANGE_REQUEST, 4, flags))


@dataclass(frozen=True, slots=True)
class ServerRequest:
    """A client's Binding request as a server reads it: whom to answer, and from where."""

    tx_id: bytes
    change_ip: bool
    change_port: bool


def parse_server_request(b: bytes) -> ServerRequest:
    """Any client's Binding request (not only Tailscale's): its transaction ID and CHANGE-REQUEST
    flags (none: answer from where it arrived). A FINGERPRINT, if the message ends in one, must match."""
    msg = parse_message(b)
    if msg.message_type != BINDING_REQUEST:
        raise StunParseError("STUN message is not a binding request")
    if msg.attributes and msg.attributes[-1][0] == ATTR_FINGERPRINT:
        check_fingerprint(b)
    flags = 0
    for t, v in msg.attributes:
        if t == ATTR_CHANGE_REQUEST:
            if len(v) != 4:
                raise StunParseError("malformed CHANGE-REQUEST")
            flags = struct.unpack(">I", v)[0]
    return ServerRequest(msg.tx_id, bool(flags & CHANGE_IP), bool(flags & CHANGE_PORT))


def server_response(tx_id: bytes, mapped: AddrPort, *, response_origin: AddrPort | None = None,
                    other_address: AddrPort | None = None) -> bytes:
    """A Binding success response for ``mapped`` (the request's source as the server saw it):
    XOR-MAPPED-ADDRESS, then MAPPED-ADDRESS (clients that read only RFC 3489's attribute), then the
    RFC 5780 RESPONSE-ORIGIN (the address answering) and OTHER-ADDRESS (the alternate IP and port)."""
    _check_tx(tx_id)
    attrs = [(ATTR_XOR_MAPPED_ADDRESS, _address_value(*mapped, MAGIC_COOKIE + tx_id)),
             (ATTR_MAPPED_ADDRESS, _address_value(*mapped, None))]
    if response_origin is not None:
        attrs.append((ATTR_RESPONSE_ORIGIN, _address_value(*response_origin, None)))
    if other_address is not None:
        attrs.append((ATTR_OTHER_ADDRESS, _address_value(*other_address, None)))
    body = b"".join(struct.pack(">HH", t, len(v)) + v for t, v in attrs)  # address values need no padding
    return struct.pack(">HH", BINDING_SUCCESS, len(body)) + MAGIC_COOKIE + tx_id + body


def address_attributes(b: bytes) -> dict[int, AddrPort]:
    """Every address attribute of a STUN message (XOR-decoded where the type says so), by type:
    MAPPED-ADDRESS, XOR-MAPPED-ADDRESS (either number), RESPONSE-ORIGIN, OTHER-ADDRESS."""
    msg = parse_message(b)
    out: dict[int, AddrPort] = {}
    for t, v in msg.attributes:
        if t in (ATTR_XOR_MAPPED_ADDRESS, ATTR_XOR_MAPPED_ADDRESS_ALT):
            out[t] = _address(v, MAGIC_COOKIE + msg.tx_id)
        elif t in (ATTR_MAPPED_ADDRESS, ATTR_RESPONSE_ORIGIN, ATTR_OTHER_ADDRESS):
            out[t] = _address(v, None)
    return out
