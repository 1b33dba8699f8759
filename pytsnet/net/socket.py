"""The blocking twin of ``TcpStream``: a socket-like object for synchronous code.

``recv``/``sendall`` block on the flow's bounded channel (honouring ``settimeout``; a timeout raises
``TimeoutError`` like ``socket.timeout``), ``shutdown(SHUT_WR)`` sends a FIN, ``close`` closes, and
``makefile`` gives buffered binary or text files over it.
"""

from __future__ import annotations

import io
import socket as _socket
import time
from typing import TYPE_CHECKING, Any

from pytsnet.actors.netstack.channel import FlowChannel

if TYPE_CHECKING:
    from pytsnet.net.stream import TcpListener

__all__ = ["SocketLike", "SocketListener"]


class SocketLike:
    def __init__(self, channel: FlowChannel, timeout: float | None = None) -> None:
        self._ch = channel
        self._timeout = timeout
        self._closed = False

    def settimeout(self, timeout: float | None) -> None:
        self._timeout = timeout

    def gettimeout(self) -> float | None:
        return self._timeout

    def getsockname(self) -> tuple[str, int]:
        return self._ch.local

    def getpeername(self) -> tuple[str, int]:
        return self._ch.remote

    def fileno(self) -> int:
        return -1

    def _check(self) -> None:
        if self._closed:
            raise OSError(9, "Bad file descriptor")

    def recv(self, bufsize: int) -> bytes:
        ch = self._ch
        end = None if self._timeout is None else time.monotonic() + self._timeout
        while True:
            self._check()
            data = ch.try_recv(bufsize)
            if data is not None:
                return data
            left = None if end is None else end - time.monotonic()
            if (left is not None and left <= 0) or not ch.wait(ch.recv_ready, left):
                raise TimeoutError("timed out")

    def recv_into(self, buffer: Any, nbytes: int = 0) -> int:
        view = memoryview(buffer).cast("B")
        data = self.recv(nbytes or len(view))
        view[:len(data)] = data
        return len(data)

    def send(self, data: bytes) -> int:
        ch = self._ch
        end = None if self._timeout is None else time.monotonic() + self._timeout
        while True:
            self._check()
            n = ch.try_send(memoryview(data))
            if n is not None:
                return n
            left = None if end is None else end - time.monotonic()
            if (left is not None and left <= 0) or not ch.wait(ch.send_ready, left):
                raise TimeoutError("timed out")

    def sendall(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[self.send(view):]  # type: ignore[arg-type]

    def shutdown(self, how: int) -> None:
        self._check()
        if how in (_socket.SHUT_WR, _socket.SHUT_RDWR):
            self._ch.send_eof()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._ch.close()

    def makefile(self, mode: str = "r", buffering: int | None = None, *, encoding: str | None = None,
                 errors: str | None = None, newline: str | None = None) -> Any:
        reading, writing = "r" in mode, "w" in mode
        raw = _SocketIO(self, reading, writing)
        size = io.DEFAULT_BUFFER_SIZE if buffering in (None, -1) else buffering
        if buffering == 0:
            if "b" not in mode:
                raise ValueError("unbuffered streams must be binary")
            return raw
        buf: Any
        if reading and writing:
            buf = io.BufferedRWPair(raw, raw, size)
        elif reading:
            buf = io.BufferedReader(raw, size)
        else:
            buf = io.BufferedWriter(raw, size)
        if "b" in mode:
            return buf
        return io.TextIOWrapper(buf, encoding, errors, newline)

    def __enter__(self) -> SocketLike:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _SocketIO(io.RawIOBase):
    def __init__(self, sock: SocketLike, reading: bool, writing: bool) -> None:
        super().__init__()
        self._sock, self._r, self._w = sock, reading, writing

    def readable(self) -> bool:
        return self._r

    def writable(self) -> bool:
        return self._w

    def readinto(self, b: Any) -> int:
        return self._sock.recv_into(b)

    def write(self, b: Any) -> int:
        self._sock.sendall(bytes(b))
        return len(b)


class SocketListener:
    """The blocking twin of ``TcpListener`` (it wraps one, so a device-owned listener keeps working
    across data-plane rebuilds here too)."""

    def __init__(self, listener: TcpListener) -> None:
        self._lst = listener
        self._timeout: float | None = None

    @property
    def port(self) -> int:
        return self._lst.port

    def settimeout(self, timeout: float | None) -> None:
        self._timeout = timeout

    def accept(self) -> tuple[SocketLike, tuple[str, int]]:
        got = self._lst.accept_blocking(self._timeout)
        return SocketLike(got), got.remote

    def close(self) -> None:
        self._lst.close()

    def __enter__(self) -> SocketListener:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
