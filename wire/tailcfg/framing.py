"""Map-response body framing: repeated ``uint32 LE length · zstd frame of MapResponse JSON``.

The Go client zstd-decodes every frame, so a server must compress. Sans-IO: bytes in, payloads out.
"""

from __future__ import annotations

import io
import struct

import zstandard

from pytsnet.wire.errors import ParseError

DEFAULT_MAX_FRAME = 4 << 20
"""Default cap on one frame and on its decompressed JSON (Go's ``control/tsp`` uses 4 MiB)."""


class FramingError(ParseError):
    """A frame that is too large or whose zstd data is corrupt."""


def encode_frame(json_payload: bytes, *, compress: bool = True) -> bytes:
    """One frame; ``compress=False`` only for clients that did not ask for ``Compress: "zstd"``."""
    body = zstandard.ZstdCompressor().compress(json_payload) if compress else json_payload
    return struct.pack("<I", len(body)) + body


class FrameDecoder:
    """Feed body bytes; get every complete frame's decompressed JSON. Buffers at most one frame."""

    def __init__(self, *, compressed: bool = True, max_frame: int = DEFAULT_MAX_FRAME) -> None:
        self._buf = bytearray()
        self._compressed = compressed
        self._max = max_frame

    def feed(self, data: bytes) -> list[bytes]:
        self._buf += data
        out: list[bytes] = []
        while len(self._buf) >= 4:
            (length,) = struct.unpack_from("<I", self._buf)
            if length > self._max:
                raise FramingError(f"map frame of {length} bytes exceeds {self._max}")
            if len(self._buf) < 4 + length:
                break
            body = bytes(self._buf[4:4 + length])
            del self._buf[:4 + length]
            out.append(self._decompress(body) if self._compressed else body)
        return out

    def _decompress(self, body: bytes) -> bytes:
        try:
            reader = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(body))
            payload = reader.read(self._max + 1)
        except zstandard.ZstdError as exc:
            raise FramingError(f"corrupt zstd frame: {exc}") from None
        if len(payload) > self._max:
            raise FramingError(f"decompressed map frame exceeds {self._max} bytes")
        if not payload and body:
            raise FramingError("zstd frame produced no data")
        return payload
