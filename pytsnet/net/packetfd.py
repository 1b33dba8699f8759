"""Read and write a non-blocking packet fd (a TUN) without giving up the GIL per packet.

``os.read``/``os.write`` release the GIL around the syscall, and a thread that released it waits up
to ``sys.getswitchinterval()`` (5 ms) to get it back while other threads are busy. A TUN reader that
does that after every packet drains ~200 packets/s under load, and the kernel drops what overflows
the TUN's 500-packet queue (issue 14: the kernel's ACKs to 1,000 flows). So the reader waits for
readability with the GIL released (``select``), then drains the queue with libc's ``read`` called
through ``ctypes.PyDLL``, which keeps the GIL: each call is a non-blocking syscall of a few µs, and a
whole burst costs one GIL hand-off instead of one per packet. The same for writing a burst.

Only for non-blocking fds (a blocking read holding the GIL would stop every thread): the
constructor refuses a blocking fd. Where libc cannot be loaded, falls back to ``os.read``/``os.write``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os

__all__ = ["PacketFd"]

_AGAIN = frozenset({errno.EAGAIN, errno.EWOULDBLOCK, errno.EINTR})


def _load_libc() -> ctypes.PyDLL | None:
    try:
        lib = ctypes.PyDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    except OSError:
        return None
    lib.read.argtypes = (ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t)
    lib.read.restype = ctypes.c_ssize_t
    lib.write.argtypes = (ctypes.c_int, ctypes.c_char_p, ctypes.c_size_t)
    lib.write.restype = ctypes.c_ssize_t
    return lib


_LIBC = _load_libc()


class PacketFd:
    """One packet per read/write on a non-blocking fd; bursts move under one GIL hold."""

    __slots__ = ("_buf", "_size", "fd", "gil_held")

    def __init__(self, fd: int, max_packet: int = 65535, *, hold_gil: bool = True) -> None:
        if os.get_blocking(fd):
            raise ValueError("PacketFd needs a non-blocking fd (a blocking read would hold the GIL)")
        self.fd = fd
        self._size = max_packet
        self._buf = ctypes.create_string_buffer(max_packet)
        self.gil_held = hold_gil and _LIBC is not None

    def read_burst(self, limit: int) -> list[bytes]:
        """Up to ``limit`` packets, as many as are queued now (empty when none is).

        Raises ``OSError`` for anything but "nothing more to read".
        """
        out: list[bytes] = []
        if not self.gil_held:
            while len(out) < limit:
                try:
                    out.append(os.read(self.fd, self._size))
                except (BlockingIOError, InterruptedError):
                    break
            return out
        assert _LIBC is not None
        read, buf, size, fd, string_at = _LIBC.read, self._buf, self._size, self.fd, ctypes.string_at
        while len(out) < limit:
            n = read(fd, buf, size)
            if n < 0:
                err = ctypes.get_errno()
                if err in _AGAIN:
                    break
                raise OSError(err, os.strerror(err))
            out.append(string_at(buf, n))
        return out

    def write_burst(self, packets: list[bytes] | tuple[bytes, ...]) -> int:
        """Write each packet; a refused write is a drop, as on a full link. Returns how many went."""
        written = 0
        if not self.gil_held:
            for pkt in packets:
                try:
                    os.write(self.fd, pkt)
                except OSError:
                    continue
                written += 1
            return written
        assert _LIBC is not None
        write, fd = _LIBC.write, self.fd
        for pkt in packets:
            if write(fd, pkt, len(pkt)) >= 0:
                written += 1
        return written
