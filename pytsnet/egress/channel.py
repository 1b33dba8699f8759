"""The front↔worker channel: one ``AF_UNIX``/``SOCK_SEQPACKET`` socket pair per worker process.

Why SEQPACKET: message boundaries come from the kernel (one tagged JSON frame per datagram, no
framing code), fds ride along as ``SCM_RIGHTS`` on the frame they belong to, and a peer's death is an
EOF on the other end at once (a ``kill -9`` is seen without waiting for a heartbeat). Frames are bounded
(``MAX_FRAME``) and must carry an egress tag; anything else is a ``ChannelError`` with every fd that
came with it closed, so a confused or hostile peer cannot leak descriptors into us.
"""

from __future__ import annotations

import array
import contextlib
import os
import select
import socket
import struct
import threading
from collections.abc import Sequence

from pydantic import ValidationError

from pytsnet.messages.base import Message, MessageTagError, from_json, to_json
from pytsnet.messages.egress import EGRESS_TAGS

__all__ = ["MAX_FDS", "MAX_FRAME", "SEND_TIMEOUT", "ChannelClosed", "ChannelError", "ChannelFull",
           "WorkerChannel"]

MAX_FRAME = 64 * 1024
"""One frame's JSON, bytes (a ``FlowAssign``'s early data is bounded by the handshake's head bound)."""
MAX_FDS = 1
"""Fds one frame may carry (a ``FlowAssign`` carries exactly one)."""
SEND_TIMEOUT = 0.5
"""How long a send on the front's end may wait for room (``SO_SNDTIMEO``): a stopped or wedged worker
stops reading, its channel fills (a dozen frames of a 15 KB head), and a blocking send would wedge the
slot actor — and with it the very heartbeat check that would replace the worker."""


class ChannelClosed(ConnectionError):
    """The other process closed its end (exited, was killed, or closed the channel)."""


class ChannelFull(ChannelClosed):
    """No room for the frame (nothing was sent, no fd passed): the other end has not been reading."""


class ChannelError(ValueError):
    """A frame that is not an egress message: truncated, oversized, undecodable or of a foreign tag."""


class WorkerChannel:
    """One end. ``send`` is safe from any thread; ``recv`` is for one reader thread."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._send_lock = threading.Lock()

    @classmethod
    def pair(cls) -> tuple[WorkerChannel, socket.socket]:
        """(the front's end, the child's socket): the child's is inheritable, for ``pass_fds``."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        ours.set_inheritable(False)
        sec = int(SEND_TIMEOUT)
        ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO,
                        struct.pack("ll", sec, int((SEND_TIMEOUT - sec) * 1_000_000)))
        theirs.set_inheritable(True)
        return cls(ours), theirs

    @classmethod
    def from_fd(cls, fd: int) -> WorkerChannel:
        """The child's end, from the fd number it was started with."""
        return cls(socket.socket(fileno=fd))

    def fileno(self) -> int:
        return self.sock.fileno()

    def send(self, msg: Message, fds: Sequence[int] = (), wait: bool = True) -> None:
        """One frame (with ``fds`` as ``SCM_RIGHTS``). ``ChannelClosed`` if the other end is gone;
        ``ChannelFull`` if the channel had no room for ``SEND_TIMEOUT`` (the front's end) or at once
        (``wait=False``);
        ``ChannelError`` if ``msg`` is not an egress message or too large."""
        if type(msg).TAG not in EGRESS_TAGS:
            raise ChannelError(f"not an egress message: {type(msg).TAG}")
        if len(fds) > MAX_FDS:
            raise ChannelError(f"{len(fds)} fds in one frame (at most {MAX_FDS})")
        data = to_json(msg).encode()
        if len(data) > MAX_FRAME:
            raise ChannelError(f"frame of {len(data)} bytes (at most {MAX_FRAME})")
        try:
            flags = 0 if wait else socket.MSG_DONTWAIT
            with self._send_lock:
                if fds:  # not ``socket.send_fds``: it ignores its ``flags`` (CPython 3.11)
                    self.sock.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))],
                                      flags)
                else:
                    self.sock.sendall(data, flags)
        except BlockingIOError:  # nothing was sent (nor any fd)
            raise ChannelFull("channel full: the other end is not reading") from None
        except (BrokenPipeError, ConnectionResetError, OSError) as e:
            raise ChannelClosed(str(e)) from None

    def recv(self, timeout: float | None = None) -> tuple[Message, list[int]] | None:
        """The next frame and its fds (the caller owns them); ``None`` when ``timeout`` passed first.
        ``ChannelClosed`` at EOF; ``ChannelError`` for a bad frame (its fds already closed)."""
        if timeout is not None:
            try:
                ready, _, _ = select.select([self.sock], [], [], timeout)
            except (OSError, ValueError) as e:
                raise ChannelClosed(str(e)) from None
            if not ready:
                return None
        try:
            data, fds, flags, _ = socket.recv_fds(self.sock, MAX_FRAME + 1, MAX_FDS)
        except OSError as e:
            raise ChannelClosed(str(e)) from None
        if not data and not fds:
            raise ChannelClosed("the other end closed the channel")
        try:
            if flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC) or len(data) > MAX_FRAME:
                raise ChannelError("truncated or oversized frame")
            try:
                msg = from_json(data.decode())
            except (UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError, MessageTagError,
                    ValidationError) as e:
                raise ChannelError(f"undecodable frame: {type(e).__name__}") from None
            if type(msg).TAG not in EGRESS_TAGS:
                raise ChannelError(f"foreign tag {type(msg).TAG!r}")
        except ChannelError:
            for fd in fds:
                with contextlib.suppress(OSError):
                    os.close(fd)
            raise
        return msg, fds

    def close(self) -> None:
        # shutdown first: a close alone leaves the socket open (no EOF to the other end)
        # while another thread of ours is still blocked in ``recv`` on it
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            self.sock.close()
