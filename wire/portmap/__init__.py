"""Port mapping codecs (sans-IO): NAT-PMP (RFC 6886), PCP MAP (RFC 6887) and UPnP IGD (SSDP, the root
description, SOAP). Facts: Go ``net/portmapper`` (v1.90.9). The actor ``actors/portmap`` does the I/O."""

from pytsnet.wire.errors import ParseError

__all__ = ["PortmapParseError"]


class PortmapParseError(ParseError):
    """A gateway's reply that is not a valid message of the protocol we asked in (truncated, wrong
    version or opcode, oversize, malformed XML)."""
