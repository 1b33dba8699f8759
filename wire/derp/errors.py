"""DERP's typed errors: one family per kind, all under ``pytsnet.wire.errors``."""

from __future__ import annotations

from pytsnet.wire.errors import CryptoError, ParseError, ProtocolError


class DerpParseError(ParseError):
    """Bytes that are not a valid DERP frame (short payload, bad magic, malformed JSON)."""


class FrameTooLargeError(DerpParseError):
    """A frame header announced more bytes than the reader's limit; raised before any allocation."""


class DerpCryptoError(CryptoError):
    """A ClientInfo/ServerInfo box did not open: wrong key, tampered bytes or forged sender."""


class DerpProtocolError(ProtocolError):
    """A well-formed frame that is illegal now (e.g. SendPacket before the handshake, mesh frame from a
    non-mesh client), or an action the state machine cannot take in its current state."""


class DerpTimeoutError(DerpProtocolError):
    """A deadline passed: no ClientInfo within the handshake window, or no frame within the read deadline."""
