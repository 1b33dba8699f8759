"""The receive buffer: in-order bytes the app has not read yet, one per connection.

It is the only place received payload waits (issue 14: one buffer per flow): the connection pushes
in-order data into it and computes its advertised window from its length; the app reads from the
same object. Out-of-order data waits in the reassembly queue until the hole before it is filled.

This class is single-threaded, for a driver that reads on the connection's own thread (the sans-IO
tests, ``TcpConnection.recv``). A driver whose reader runs on another thread gives the connection
a subclass whose writer-side methods (``push``, ``discard``) take that driver's lock, and calls
``take`` with the lock held (``actors/netstack/channel.py``): no lock lives here.
"""

from __future__ import annotations

__all__ = ["RecvBuffer"]


class RecvBuffer:
    """Unread in-order stream bytes. Its bound is the connection's window, not a capacity of its own:
    the connection never pushes more than ``recv_buffer - len(self)`` (``TcpConnection._on_data``)."""

    __slots__ = ("_buf",)

    def __init__(self) -> None:
        self._buf = bytearray()

    def __len__(self) -> int:
        return len(self._buf)

    def __bool__(self) -> bool:
        return bool(self._buf)

    def push(self, data: bytes | bytearray | memoryview) -> None:
        """Append in-order payload (the connection's side)."""
        self._buf += data

    def take(self, max_bytes: int) -> bytes:
        """Remove and return up to ``max_bytes`` from the front (the reader's side)."""
        buf = self._buf
        if max_bytes >= len(buf):
            data = bytes(buf)
            buf.clear()
        else:
            with memoryview(buf) as view:  # one copy; released before the resize below
                data = bytes(view[:max_bytes])
            del buf[:max_bytes]
        return data

    def peek(self) -> bytes:
        """A copy of every unread byte, nothing consumed (tests, diagnostics)."""
        return bytes(self._buf)

    def discard(self) -> None:
        """Drop every unread byte (the connection was aborted: nobody will read them)."""
        self._buf.clear()
