"""TCP's typed errors: one parse error for the codec, one family for connection outcomes.

Connection errors also subclass the matching built-in ``OSError`` subclasses so that the
socket-like app API can surface them unchanged to code that catches ``ConnectionResetError``.
"""

from __future__ import annotations


class TcpError(Exception):
    """Base of every error raised by ``pytsnet.netstack.tcp``."""


class TcpParseError(TcpError):
    """A segment could not be parsed (short, bad offset, bad option, bad checksum)."""


class TcpStateError(TcpError):
    """An operation the connection's state does not allow (e.g. send after shutdown_write)."""


class TcpConnectionError(TcpError):
    """Why a connection ended abnormally; exposed as ``TcpConnection.error``."""


class ConnectionRefused(TcpConnectionError, ConnectionRefusedError):
    """Our SYN was answered with an acceptable RST (RFC 9293 §3.10.7.3)."""


class ConnectionReset(TcpConnectionError, ConnectionResetError):
    """The peer reset a synchronized connection (an RST with SEG.SEQ == RCV.NXT, RFC 5961 §3.2)."""


class ConnectionTimedOut(TcpConnectionError, TimeoutError):
    """SYN retries, data retransmissions or keepalive probes were exhausted."""


class ConnectionAborted(TcpConnectionError, ConnectionAbortedError):
    """The local application aborted the connection (an RST was sent)."""
