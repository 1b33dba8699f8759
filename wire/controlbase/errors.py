"""Typed errors of the control transport; every failure here is one of these."""

from pytsnet.wire.errors import CryptoError, ParseError, ProtocolError


class ControlParseError(ParseError):
    """Bytes that are not a valid controlbase message (wrong type, length or size)."""


class ControlCryptoError(CryptoError):
    """A handshake or record failed to authenticate, or a DH result was all-zero."""


class ControlProtocolError(ProtocolError):
    """A well-formed input that is illegal now: a used-up handshake, a dead or exhausted connection."""


class ServerErrorMessage(ControlProtocolError):
    """The server answered the initiation with an (unauthenticated) error message."""

    def __init__(self, text: str) -> None:
        super().__init__(f"server error: {text!r}")
        self.text = text
