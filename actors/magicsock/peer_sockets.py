"""Connected UDP sockets for peers' direct paths: a peer's datagrams queue apart from a stranger's.

With one UDP socket, every datagram shares one kernel queue. A stranger's flood that outruns the
reader fills that queue, and the kernel then drops an established tunnel's packets along with the
flood (a dial under a handshake flood timed out, its SYNs lost). Go reads fast enough on many cores
not to notice; a Python reader has one. So for each peer's direct endpoint the reader opens a socket
bound to the magicsock port itself and ``connect``-ed to that endpoint: Linux delivers a datagram to
the best-matching socket, and the connected one matches that source exactly, so that endpoint's
datagrams land in a queue of their own, which the reader drains before the shared one. Nothing else
changes: sends still leave on the main socket (the same port), and whatever arrives on any socket is
classified and dropped by the same rules. An endpoint whose socket cannot be opened simply stays on
the shared queue.

The reader thread alone opens, reads and closes these sockets (``sync``), from the endpoint set the
router publishes; ``close_all`` (the actor stopping) may run on another thread, hence the lock.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterable

from pytsnet.actors.magicsock import udp_lane
from pytsnet.wire.magicsock import offload

__all__ = ["MAX_PEER_SOCKETS", "PeerSockets"]

MAX_PEER_SOCKETS = 64  # endpoints with a queue of their own; the rest share the main socket's


class PeerSockets:
    """The connected sockets beside ``main`` (bound, non-blocking), one per endpoint ``(ip, port)``."""

    def __init__(self, main: socket.socket, *, buffer: int, gro: bool, limit: int = MAX_PEER_SOCKETS) -> None:
        self._main = main
        self._buffer = buffer
        self._gro = gro
        self._limit = limit
        self._lock = threading.Lock()
        self._closed = False
        self.socks: dict[tuple[str, int], socket.socket] = {}
        self.open_failures = 0  # endpoints left on the shared queue because connect/bind failed

    def sync(self, wanted: Iterable[tuple[str, int]]) -> list[socket.socket]:
        """Open a socket for each wanted endpoint that has none (up to the limit); return the sockets
        of endpoints no longer wanted, already out of ``socks``: the caller reads what they still
        hold, then closes them (a peer's datagrams queued there are not lost to a path change)."""
        want = set(wanted)
        with self._lock:
            gone = [self.socks.pop(k) for k in [k for k in self.socks if k not in want]]
            if self._closed:
                return gone
            for key in sorted(want - self.socks.keys()):
                if len(self.socks) >= self._limit:
                    break
                sock = self._open(key)
                if sock is not None:
                    self.socks[key] = sock
        return gone

    def _open(self, dst: tuple[str, int]) -> socket.socket | None:
        main = self._main
        sock = socket.socket(main.family, socket.SOCK_DGRAM)
        try:
            if main.family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY,
                                main.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY))
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # the main socket has it too
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self._buffer)
            if self._gro:
                with contextlib.suppress(OSError):
                    sock.setsockopt(offload.SOL_UDP, offload.UDP_GRO, 1)
            sock.bind(main.getsockname())
            sock.connect(udp_lane.dst_for(main, dst))
            sock.setblocking(False)
        except OSError:
            sock.close()
            self.open_failures += 1
            return None
        return sock

    def close_all(self) -> None:
        """The actor is stopping: close every socket; ``sync`` opens none after this."""
        with self._lock:
            self._closed = True
            socks, self.socks = list(self.socks.values()), {}
        for sock in socks:
            sock.close()
