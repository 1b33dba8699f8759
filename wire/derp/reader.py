"""Reassemble DERP frames from a byte stream (TCP/TLS) with a bounded buffer.

Go reads frames from a ``bufio.Reader`` and refuses headers over a limit before reading the body
(client: 1 MiB, ``derp_client.go``; server: per-type checks, ClientInfo ≤ 256 KiB). Here the limit
is checked on the 5-byte header, so an oversize announcement fails with ``FrameTooLargeError``
before any byte of the body is buffered. Between calls the reader holds at most
``FRAME_HEADER_LEN + max_frame_len`` bytes.
"""

from __future__ import annotations

from pytsnet.wire.derp.errors import DerpParseError, FrameTooLargeError
from pytsnet.wire.derp.frames import FRAME_HEADER_LEN, MAX_INFO_LEN, Frame, decode, parse_header

CLIENT_MAX_FRAME_LEN = MAX_INFO_LEN  # Go client: "unexpectedly large frame" above 1 MiB
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
        if self._error is not None:
            raise self._error
        frames: list[tuple[int, bytes]] = []
        view = memoryview(data)
        buf = self._buf
        try:
            while True:
                if not buf and len(view) >= FRAME_HEADER_LEN:  # a whole frame in ``data``: no reassembly copy
                    t, n = parse_header(view)
                    if n > self.max_frame_len:
                        raise FrameTooLargeError(
                            f"frame header announces {n} bytes, limit is {self.max_frame_len}"
                        )
                    if len(view) >= FRAME_HEADER_LEN + n:
                        frames.append((t, bytes(view[FRAME_HEADER_LEN:FRAME_HEADER_LEN + n])))
                        view = view[FRAME_HEADER_LEN + n :]
                        continue
                if len(buf) >= FRAME_HEADER_LEN:
                    t, n = parse_header(buf)
                    if n > self.max_frame_len:
                        raise FrameTooLargeError(
                            f"frame header announces {n} bytes, limit is {self.max_frame_len}"
                        )
                    if len(buf) == FRAME_HEADER_LEN + n:
                        payload = bytes(buf[FRAME_HEADER_LEN:])
                        buf.clear()
                        frames.append((t, payload))
                        continue
                    need = FRAME_HEADER_LEN + n - len(buf)
                else:
                    need = FRAME_HEADER_LEN - len(buf)
                if not view:
                    break
                take = view[:need]
                buf += take
                view = view[len(take) :]
        except DerpParseError as e:
            self._error = e
            self._buf = bytearray()
            raise
        return frames
