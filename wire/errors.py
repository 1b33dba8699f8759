"""The typed errors every wire/ parser and state machine may raise — and nothing else.

Each protocol module subclasses these (``DerpParseError(ParseError)``, …) so callers can catch one
family or all of wire/ with one ``except``.
"""


class WireError(Exception):
    """Base of all wire/ errors."""


class ParseError(WireError, ValueError):
    """Bytes that are not a valid message of the expected protocol (truncated, oversize, bad tag)."""


class CryptoError(WireError):
    """Authentication failed: a bad MAC, a wrong key, a replayed or stale counter."""


class ProtocolError(WireError):
    """A well-formed message that is illegal in the current state."""
