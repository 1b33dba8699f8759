"""The netstack's typed errors: parsers raise exactly one of these, never anything else.

``Stack.receive`` catches ``ParseError`` and counts the packet as dropped under the error's
``reason``; nothing a peer sends can raise out of the stack.
"""

from __future__ import annotations


class NetstackError(Exception):
    """Base of every error the netstack raises on purpose."""


class ParseError(NetstackError):
    """A packet that is malformed, truncated, or fails its checksum.

    ``reason`` is a short stable label used as the drop-counter key.
    """

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


class Ipv4ParseError(ParseError):
    """An IPv4 header that cannot be accepted (RFC 791)."""


class Ipv6ParseError(ParseError):
    """An IPv6 header that cannot be accepted (RFC 8200)."""


class UdpParseError(ParseError):
    """A UDP datagram that cannot be accepted (RFC 768)."""


class IcmpParseError(ParseError):
    """An ICMPv4/ICMPv6 message that cannot be accepted (RFC 792, RFC 4443)."""


class SocketError(NetstackError):
    """An app-facing endpoint operation failed (bad address, port in use, queue full)."""


class AddressInUse(SocketError):
    """The local (address, port) is already bound."""


class WouldBlock(SocketError):
    """A bounded queue is full (send) or empty (receive); retry after the next poll."""
