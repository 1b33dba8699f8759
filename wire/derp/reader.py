"""Reassemble DERP frames from a byte stream (TCP/TLS) with a bounded buffer.

Go reads frames from a ``bufio.Reader`` and refuses headers over a limit before reading the body
(client: 1 MiB, ``derp_client.go``; server: per-type checks, ClientInfo ≤ 256 KiB). Here the limit
is checked on the 5-byte header, so an oversize announcement fails with ``FrameTooLargeError``
before any byte of the body is buffered. Between calls the reader holds at most
``FRAME_HEADER_LEN + max_frame_len`` bytes.
"""

from __future__ import annotations

import struct

from pytsnet.wire.derp.errors import DerpParseError, FrameTooLargeError
from pytsnet.wire.derp.frames import FRAME_HEADER_LEN, KEY_LEN, MAX_INFO_LEN, Frame, decode

CLIENT_MAX_FRAME_LEN = MAX_INFO_LEN  # Go client: "unexpectedly large frame" above 1 MiB
_HEADER = struct.Struct(">BI")
_KEY_END = FRAME_HEADER_LEN + KEY_LEN
SERVER_MAX_FRAME_LEN = 256 << 10  # largest legal client frame: ClientInfo ≤ 256 KiB (packets ≤ 64 KiB + 64)


class FrameReader:
    """Feed stream bytes in, get whole decoded frames out.

    After the first error the reader is poisoned and re-raises it: a DERP stream cannot be resynced.
    """

    def __init__(self, max_frame_len: int = CLIENT_MAX_FRAME_LEN) -> None:
        self.max_frame_len = max_frame_len
        self._buf = bytearray()
        self._error: DerpParseError | None = None

    @property
    def buffered(self) -> int:
        """Bytes held waiting for the rest of a frame."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[Frame]:
        """Append ``data`` and return every frame it completes, decoded, in order.

        A malformed payload poisons the reader like a framing error; use ``feed_raw`` to decide per
        frame (the Go client drops short frames and reads on).
        """
        frames: list[Frame] = []
        try:
            for t, payload in self.feed_raw(data):
                frames.append(decode(t, payload))
        except DerpParseError as e:
            self._error = e
            self._buf = bytearray()
            raise
        return frames

    def feed_raw(self, data: bytes) -> list[tuple[int, bytes]]:
        """Append ``data`` and return ``(frame_type, payload)`` for every frame it completes."""
        return [(t, a) for t, a, _ in self.feed_split(data, -1)]

    def feed_split(self, data: bytes, split_type: int) -> list[tuple[int, bytes, bytes | None]]:
        """``feed_raw`` for a packet path: a frame of ``split_type`` with at least a key's worth of
        payload comes out as ``(type, key, rest)`` sliced straight from ``data``; every other frame
        as ``(type, payload, None)``. One pass, one copy per packet."""
        if self._error is not None:
            raise self._error
        if not isinstance(data, bytes):
            data = bytes(data)
        frames: list[tuple[int, bytes, bytes | None]] = []
        append = frames.append
        buf = self._buf
        limit = self.max_frame_len
        unpack = _HEADER.unpack_from
        off, end = 0, len(data)
        try:
            if buf:  # finish the frame that straddles the previous read
                if len(buf) < FRAME_HEADER_LEN:
                    off = min(FRAME_HEADER_LEN - len(buf), end)
                    buf += data[:off]
                    if len(buf) < FRAME_HEADER_LEN:
                        return frames
                t, n = unpack(buf)
                if n > limit:
                    raise FrameTooLargeError(f"frame header announces {n} bytes, limit is {limit}")
                take = min(FRAME_HEADER_LEN + n - len(buf), end - off)
                buf += data[off : off + take]
                off += take
                if len(buf) < FRAME_HEADER_LEN + n:
                    return frames
                if t == split_type and n >= KEY_LEN:
                    append((t, bytes(buf[FRAME_HEADER_LEN:_KEY_END]), bytes(buf[_KEY_END:])))
                else:
                    append((t, bytes(buf[FRAME_HEADER_LEN:]), None))
                buf.clear()
            while end - off >= FRAME_HEADER_LEN:  # whole frames straight from ``data``
                t, n = unpack(data, off)
                if n > limit:  # checked on the header, before any byte of the body is kept
                    raise FrameTooLargeError(f"frame header announces {n} bytes, limit is {limit}")
                stop = off + FRAME_HEADER_LEN + n
                if stop > end:
                    break
                if t == split_type and n >= KEY_LEN:
                    append((t, data[off + FRAME_HEADER_LEN : off + _KEY_END], data[off + _KEY_END : stop]))
                else:
                    append((t, data[off + FRAME_HEADER_LEN : stop], None))
                off = stop
            if off < end:
                buf += data[off:]
        except DerpParseError as e:
            self._error = e
            self._buf = bytearray()
            raise
        return frames
