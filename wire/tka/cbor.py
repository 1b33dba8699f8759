"""CBOR as Tailnet Lock signs it: Go's CTAP2 canonical encoder and its limited, strict decoder.

Every AUM and node-key signature is hashed over its CBOR encoding, so the encoder must produce
exactly the bytes of Go's ``fxamacker/cbor`` v2.7 ``CTAP2EncOptions`` (what tka/aum.go and
tka/sig.go use): definite lengths, shortest-form integer and length heads, map keys sorted
*bytewise* by their encoded bytes (fxamacker's ``SortCTAP2 = SortBytewiseLexical``). cbor2's
``canonical=True`` sorts length-first instead; the two orders agree for maps whose keys share one
major type (all TKA maps: small-int struct keys, or text keys in ``Meta``), but the encoder is
ours so the order is Go's by construction, and cbor2 serves the tests as an independent oracle.

The decoder is a small strict one of our own rather than cbor2, because Go's decode options
(tka.go ``cborDecOpts``) must hold *before* anything is allocated: duplicate map keys, indefinite
lengths and tags are refused; nesting depth is at most 16 (the outermost array or map is level
1, as fxamacker counts); arrays hold at most 4096 elements and maps at most 1024 pairs; trailing
bytes are refused. A declared length is checked against the bytes actually left before any
allocation, so memory stays bounded by the input size. cbor2 cannot refuse tags (it decodes
known ones, e.g. tag 1 into a datetime) nor cap element counts.

Where this decoder is stricter than Go (it refuses invalid UTF-8 text, simple values other than
false/true/null/undefined, and map keys that are not int/text/bytes), the difference can only
refuse input Go would take, never admit more: a refused AUM or signature is treated as invalid.
Floats are decoded (Go skips them in unknown fields) but never encoded.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence

from pytsnet.wire.tka.errors import TkaDecodeError

MAX_NESTED_LEVELS = 16
MAX_ARRAY_ELEMENTS = 4096
MAX_MAP_PAIRS = 1024

CborValue = None | bool | int | float | bytes | str | list["CborValue"] | dict["CborKey", "CborValue"]
CborKey = int | str | bytes

_UINT64_MAX = (1 << 64) - 1


def _head(major: int, n: int) -> bytes:
    """The shortest head for major type ``major`` carrying argument ``n`` (RFC 8949 §4.2.1)."""
    m = major << 5
    if n < 24:
        return bytes((m | n,))
    if n <= 0xFF:
        return bytes((m | 24, n))
    if n <= 0xFFFF:
        return bytes((m | 25,)) + n.to_bytes(2, "big")
    if n <= 0xFFFFFFFF:
        return bytes((m | 26,)) + n.to_bytes(4, "big")
    if n <= _UINT64_MAX:
        return bytes((m | 27,)) + n.to_bytes(8, "big")
    raise TkaDecodeError(f"integer {n} does not fit CBOR's 64-bit argument")


def _encode_into(obj: object, out: bytearray) -> None:
    if obj is None:
        out.append(0xF6)
    elif obj is True:
        out.append(0xF5)
    elif obj is False:
        out.append(0xF4)
    elif isinstance(obj, int):
        if obj >= 0:
            out += _head(0, obj)
        else:
            out += _head(1, -1 - obj)
    elif isinstance(obj, bytes | bytearray | memoryview):
        b = bytes(obj)
        out += _head(2, len(b))
        out += b
    elif isinstance(obj, str):
        b = obj.encode("utf-8")
        out += _head(3, len(b))
        out += b
    elif isinstance(obj, Mapping):
        pairs = sorted((encode(k), encode(v)) for k, v in obj.items())
        out += _head(5, len(pairs))
        prev: bytes | None = None
        for k, v in pairs:
            if k == prev:
                raise TkaDecodeError("map has two keys with one encoding")
            prev = k
            out += k
            out += v
    elif isinstance(obj, Sequence):
        out += _head(4, len(obj))
        for item in obj:
            _encode_into(item, out)
    else:
        raise TkaDecodeError(f"cannot CBOR-encode {type(obj).__name__}")


def encode(obj: object) -> bytes:
    """Go's CTAP2 canonical encoding of ``obj`` (None, bool, int, bytes, str, lists, maps)."""
    out = bytearray()
    _encode_into(obj, out)
    return bytes(out)


class _Reader:
    __slots__ = ("data", "off")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.off = 0

    def take(self, n: int) -> bytes:
        if n > len(self.data) - self.off:
            raise TkaDecodeError("CBOR truncated")
        b = self.data[self.off : self.off + n]
        self.off += n
        return b

    def head(self) -> tuple[int, int, int]:
        """(major type, additional info, argument); indefinite lengths and reserved AIs refused."""
        ib = self.take(1)[0]
        major, ai = ib >> 5, ib & 0x1F
        if ai < 24:
            return major, ai, ai
        if ai in (24, 25, 26, 27):
            n = 1 << (ai - 24)
            return major, ai, int.from_bytes(self.take(n), "big")
        if ai == 31:
            raise TkaDecodeError("CBOR indefinite length refused")
        raise TkaDecodeError(f"CBOR reserved additional info {ai}")

    def item(self, depth: int) -> CborValue:
        major, ai, arg = self.head()
        if major == 0:
            return arg
        if major == 1:
            return -1 - arg
        if major in (2, 3):
            raw = self.take(arg)
            if major == 2:
                return raw
            try:
                return raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise TkaDecodeError("CBOR text is not UTF-8") from e
        if major in (4, 5):
            depth += 1
            if depth > MAX_NESTED_LEVELS:
                raise TkaDecodeError(f"CBOR nested deeper than {MAX_NESTED_LEVELS} levels")
            if major == 4:
                if arg > MAX_ARRAY_ELEMENTS:
                    raise TkaDecodeError(f"CBOR array over {MAX_ARRAY_ELEMENTS} elements")
                if arg > len(self.data) - self.off:  # each element takes at least one byte
                    raise TkaDecodeError("CBOR truncated")
                return [self.item(depth) for _ in range(arg)]
            if arg > MAX_MAP_PAIRS:
                raise TkaDecodeError(f"CBOR map over {MAX_MAP_PAIRS} pairs")
            if 2 * arg > len(self.data) - self.off:
                raise TkaDecodeError("CBOR truncated")
            out: dict[CborKey, CborValue] = {}
            for _ in range(arg):
                k = self.item(depth)
                if isinstance(k, bool) or not isinstance(k, int | str | bytes):
                    raise TkaDecodeError("CBOR map key is not an int, text or bytes")
                if k in out:
                    raise TkaDecodeError("CBOR map has a duplicate key")
                out[k] = self.item(depth)
            return out
        if major == 6:
            raise TkaDecodeError("CBOR tags refused")
        # major 7: simple values and floats
        if ai == 20:
            return False
        if ai == 21:
            return True
        if ai in (22, 23):  # null, undefined: Go decodes both as nil
            return None
        if ai == 25:
            return _half_to_float(arg)
        if ai == 26:
            return float(struct.unpack(">f", arg.to_bytes(4, "big"))[0])
        if ai == 27:
            return float(struct.unpack(">d", arg.to_bytes(8, "big"))[0])
        raise TkaDecodeError(f"CBOR simple value {arg} refused")


def _half_to_float(bits: int) -> float:
    return float(struct.unpack(">e", bits.to_bytes(2, "big"))[0])


def decode(data: bytes) -> CborValue:
    """One CBOR item spanning all of ``data``, under Go's limits; anything else is TkaDecodeError."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise TkaDecodeError(f"CBOR input must be bytes, got {type(data).__name__}")
    r = _Reader(bytes(data))
    try:
        value = r.item(0)
    except RecursionError as e:  # unreachable under the depth limit; kept so it can never escape
        raise TkaDecodeError("CBOR nested too deeply") from e
    if r.off != len(r.data):
        raise TkaDecodeError(f"{len(r.data) - r.off} trailing bytes after the CBOR item")
    return value


# Go struct decoding (fxamacker into tagged structs), strictly: shared by the TKA types.


def struct_map(obj: object, what: str) -> dict[int, object]:
    """A CBOR map decoded as a Go struct with ``keyasint`` fields; unknown int keys are ignored.

    Text keys are refused: Go would match them against field names, which no encoder we know
    sends, so refusing them can only turn away input, never misread it. Integer keys are read
    as fxamacker does, as an int64: a key below -2**63 fails Go's decode, so it is refused; a
    key of 2**63 or more wraps to a negative int64, so two keys that wrap to one value are the
    duplicate Go refuses.
    """
    if not isinstance(obj, dict):
        raise TkaDecodeError(f"{what}: expected a CBOR map, got {type(obj).__name__}")
    out: dict[int, object] = {}
    for k, v in obj.items():
        if not isinstance(k, int) or isinstance(k, bool):
            raise TkaDecodeError(f"{what}: non-integer struct key")
        if k < -(1 << 63):
            raise TkaDecodeError(f"{what}: struct key overflows int64")
        as_int64 = k - (1 << 64) if k >= (1 << 63) else k
        if as_int64 in out:
            raise TkaDecodeError(f"{what}: duplicate struct key")
        out[as_int64] = v
    return out


def uint_field(v: object, limit: int, what: str) -> int:
    """A Go unsigned integer field: absent is 0; negative, oversized or non-int is refused."""
    if v is None:
        return 0
    if not isinstance(v, int) or isinstance(v, bool) or v < 0 or v > limit:
        raise TkaDecodeError(f"{what}: not an unsigned integer <= {limit}")
    return v


def opt_bytes(v: object, what: str) -> bytes | None:
    """A Go ``[]byte``: null is nil (None), else a byte string."""
    if v is None:
        return None
    if not isinstance(v, bytes):
        raise TkaDecodeError(f"{what}: expected a byte string")
    return v


def str_map(v: object, what: str) -> dict[str, str] | None:
    """A Go ``map[string]string``: null is nil (None)."""
    if v is None:
        return None
    if not isinstance(v, dict):
        raise TkaDecodeError(f"{what}: expected a map")
    out: dict[str, str] = {}
    for k, val in v.items():
        if not isinstance(k, str) or not isinstance(val, str):
            raise TkaDecodeError(f"{what}: keys and values must be text")
        out[k] = val
    return out


def decode_struct(data: bytes, what: str) -> dict[int, object]:
    """CBOR bytes holding one struct map."""
    return struct_map(decode(data), what)
