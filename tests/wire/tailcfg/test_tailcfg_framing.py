"""Map-response framing (LE length + zstd) and hypothesis fuzzing of framing and tailcfg JSON."""

from __future__ import annotations

import contextlib
import struct

import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from pytsnet.wire.errors import WireError
from pytsnet.wire.tailcfg import FrameDecoder, FramingError, MapRequest, MapResponse, Node, encode_frame


def test_frame_layout_little_endian_zstd() -> None:
    frame = encode_frame(b'{"KeepAlive":true}')
    (length,) = struct.unpack("<I", frame[:4])
    assert length == len(frame) - 4
    assert frame[4:8] == b"\x28\xb5\x2f\xfd"  # zstd magic
    assert zstandard.ZstdDecompressor().decompressobj().decompress(frame[4:]) == b'{"KeepAlive":true}'


def test_decoder_byte_by_byte_and_uncompressed() -> None:
    wire = encode_frame(b'{"Seq":1}') + encode_frame(b'{"Seq":2}')
    dec = FrameDecoder()
    got = [p for b in wire for p in dec.feed(bytes([b]))]
    assert [MapResponse.from_json(p).Seq for p in got] == [1, 2]
    assert FrameDecoder(compressed=False).feed(encode_frame(b"{}", compress=False)) == [b"{}"]


def test_oversized_frame_and_zip_bomb_are_refused() -> None:
    with pytest.raises(FramingError):
        FrameDecoder(max_frame=100).feed(struct.pack("<I", 101))
    bomb = encode_frame(b"{" + b" " * 10_000 + b"}")
    assert len(bomb) < 200
    with pytest.raises(FramingError):
        FrameDecoder(max_frame=1000).feed(bomb)


def test_corrupt_zstd_is_framing_error() -> None:
    with pytest.raises(FramingError):
        FrameDecoder().feed(struct.pack("<I", 5) + b"hello")


def _mutate(base: bytes) -> st.SearchStrategy[bytes]:
    def apply(edits: list[tuple[int, int]], cut: int) -> bytes:
        b = bytearray(base)
        for pos, val in edits:
            b[pos % len(b)] = val
        return bytes(b[:cut])
    return st.builds(apply, st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=4),
                     st.integers(0, len(base) + 1))


SAMPLE = (b'{"Node":{"ID":1,"Key":"nodekey:' + b"00" * 32 + b'","Addresses":["100.64.0.1/32"]},'
          b'"DERPMap":{"Regions":{"1":{"RegionID":1,"Nodes":[{"Name":"1a"}]}}},"PeerSeenChange":{"2":true}}')


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.binary(max_size=300), _mutate(encode_frame(SAMPLE))))
def test_framing_only_typed_errors(data: bytes) -> None:
    with contextlib.suppress(WireError):
        FrameDecoder(max_frame=1 << 16).feed(data)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.binary(max_size=300), _mutate(SAMPLE)))
def test_tailcfg_json_only_typed_errors(data: bytes) -> None:
    for cls in (MapResponse, MapRequest, Node):
        with contextlib.suppress(WireError):
            cls.from_json(data)
