"""The optional early payload the server sends before HTTP/2 (control/ts2021/conn.go).

The first 9 plaintext bytes server → client are either an HTTP/2 frame header or ``"\\xff\\xff\\xffTS"``
+ uint32 BE length, followed by that much JSON (``tailcfg.EarlyNoise``).
"""

from __future__ import annotations

import struct

from pytsnet.wire.controlbase.constants import (
    EARLY_PAYLOAD_HEADER_LEN,
    EARLY_PAYLOAD_MAGIC,
    MAX_EARLY_PAYLOAD_LEN,
)
from pytsnet.wire.controlbase.errors import ControlParseError


def encode_early_payload(payload: bytes) -> bytes:
    """Plaintext to send first on the server's connection (then HTTP/2)."""
    if len(payload) > MAX_EARLY_PAYLOAD_LEN:
        raise ValueError("early payload over 10 MiB")
    return EARLY_PAYLOAD_MAGIC + struct.pack(">I", len(payload)) + payload


class EarlyPayloadReader:
    """Strips an early payload off the front of the server's plaintext, if there is one.

    ``feed`` returns the bytes that belong to HTTP/2; ``payload`` is set once a payload is complete,
    and ``done`` once it is known whether there was one.
    """

    def __init__(self) -> None:
        self._buf = bytearray()
        self._want: int | None = None
        self.done = False
        self.payload: bytes | None = None

    def feed(self, data: bytes) -> bytes:
        if self.done:
            return data
        self._buf += data
        if self._want is None:
            head = bytes(self._buf[:len(EARLY_PAYLOAD_MAGIC)])
            if not EARLY_PAYLOAD_MAGIC.startswith(head):
                return self._finish(None)
            if len(self._buf) < EARLY_PAYLOAD_HEADER_LEN:
                return b""
            (length,) = struct.unpack_from(">I", self._buf, len(EARLY_PAYLOAD_MAGIC))
            if length > MAX_EARLY_PAYLOAD_LEN:
                raise ControlParseError(f"early payload of {length} bytes exceeds 10 MiB")
            self._want = length
            del self._buf[:EARLY_PAYLOAD_HEADER_LEN]
        if len(self._buf) < self._want:
            return b""
        payload = bytes(self._buf[:self._want])
        del self._buf[:self._want]
        return self._finish(payload)

    def _finish(self, payload: bytes | None) -> bytes:
        self.done = True
        self.payload = payload
        rest = bytes(self._buf)
        self._buf.clear()
        return rest
