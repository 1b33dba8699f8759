"""The socket bridge: tailnet connections as real sockets, so any library or framework takes them.

A tailnet flow lives in the userspace netstack, not the kernel, so it has no file descriptor; yet
selectors, asyncio, ``socketserver`` and urllib3's ``is_connection_dropped`` all need one. Here each
flow is spliced (``actors.netstack.splice.Splice``) to one end of a ``socket.socketpair()``, and the app
holds the other end as a ``TailnetConnection``: a real ``socket.socket`` whose ``getpeername()`` is the
tailnet peer's ``(ip, port)`` and ``getsockname()`` ours. Nothing is opened on the host network: a
socketpair is an anonymous AF_UNIX pair private to this process.

``TailnetListenSocket`` is a listening socket for servers: its fd is a doorbell (one end of another
socketpair) that holds one byte while accepted connections wait, so it turns readable exactly when
``accept()`` has something — level-triggered, whatever the app's selector. ``accept()`` honours the
socket's own blocking mode and timeout (non-blocking: ``BlockingIOError``, as asyncio expects).

Ownership: a listen socket owns one accept thread (the bridge) and each bridged connection one splice
(two threads). Threads, not an actor: the bridge's lifetime is the app's socket object (its ``close``,
the device's ``close``), it holds no state a restart could rebuild (a restarted accept loop could not
give back the connections it held), and every fault is already one flow's: a splice that fails
resets its own flow (``abort_flow``) and closes its own socketpair, nothing else. The device's
``close`` resets every flow and closes every listener, which ends all of these threads.

Bounded: at most ``backlog`` bridged connections wait for ``accept()``; with that many waiting the
bridge stops taking connections from the tailnet listener, whose own backlog then fills and refuses
more (the netstack drops their SYNs) — never an unbounded queue.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import ipaddress
import logging
import socket
import threading
import weakref
from collections.abc import Callable
from typing import Any

from pytsnet.actors.netstack.channel import FlowChannel
from pytsnet.actors.netstack.splice import Splice, SpliceLimits, abort_flow
from pytsnet.errors import DeviceClosed
from pytsnet.net.stream import TcpListener

__all__ = ["DEFAULT_BACKLOG", "BridgedFlow", "TailnetConnection", "TailnetListenSocket", "bridge_flow",
           "bridged_connection"]

DEFAULT_BACKLOG = 128
"""Connections bridged and waiting for ``accept()`` (as ``socket.listen``'s usual default)."""

_RING = b"\x01"
_RETRY = 0.1  # seconds the accept thread pauses after failing to bridge (no fds or threads left)

log = logging.getLogger("pytsnet.net")


_live: weakref.WeakValueDictionary[int, TailnetConnection] = weakref.WeakValueDictionary()
"""Open bridged connections by fd: a wrapper around one (asyncio's ``TransportSocket``) is found by it."""
_live_lock = threading.Lock()


def bridged_connection(sock: object) -> TailnetConnection | None:
    """The open ``TailnetConnection`` ``sock`` is or wraps (same fd), else None."""
    if isinstance(sock, TailnetConnection):
        return sock if sock.fileno() >= 0 else None
    fileno = getattr(sock, "fileno", None)
    if not callable(fileno):
        return None
    try:
        fd = fileno()
    except (OSError, ValueError):
        return None
    with _live_lock:
        conn = _live.get(fd) if isinstance(fd, int) else None
    return conn if conn is not None and conn.fileno() == fd else None


def _family(ip: str) -> socket.AddressFamily:
    """AF_INET or AF_INET6 for a tailnet address: what the app would see on a real TCP socket."""
    try:
        return socket.AF_INET6 if ipaddress.ip_address(ip).version == 6 else socket.AF_INET
    except ValueError:
        return socket.AF_INET


class TailnetConnection(socket.socket):
    """The app's end of one bridged tailnet connection: a real socket (a real fd) whose addresses are
    the tailnet ones. ``family`` says AF_INET/AF_INET6 as a TCP socket's would (frameworks branch on
    it); the fd underneath is AF_UNIX, so TCP-level options (``TCP_NODELAY``…) are kept here and have no
    effect (the flow's TCP is the netstack's), instead of failing with EOPNOTSUPP: asyncio sets
    ``TCP_NODELAY`` on every AF_INET stream socket it is handed (asyncssh and others crash otherwise)."""

    def __init__(self, family: int = -1, type: int = -1, proto: int = -1, fileno: int | None = None, *,
                 local: tuple[str, int] = ("0.0.0.0", 0), remote: tuple[str, int] = ("0.0.0.0", 0),
                 flow: BridgedFlow | None = None) -> None:
        super().__init__(-1 if fileno is not None else socket.AF_UNIX, type, proto, fileno)
        self._tailnet_local = (str(local[0]), int(local[1]))
        self._tailnet_remote = (str(remote[0]), int(remote[1]))
        self._flow = flow
        self._tcp_options: dict[int, int | bytes] = {}
        with _live_lock:
            _live[self.fileno()] = self

    def setsockopt(self, level: int, optname: int, value: Any, optlen: int | None = None) -> None:
        """TCP-level options are accepted and remembered (see the class docstring); others go to the fd."""
        if level == socket.IPPROTO_TCP:
            self._tcp_options[optname] = value if isinstance(value, bytes) else int(value)
            return
        if optlen is None:
            super().setsockopt(level, optname, value)
        else:
            super().setsockopt(level, optname, None, optlen)

    def getsockopt(self, level: int, optname: int, buflen: int | None = None) -> Any:
        """A TCP-level option reads back what was set (0 if never set); others come from the fd."""
        if level == socket.IPPROTO_TCP:
            value = self._tcp_options.get(optname, 0)
            if buflen is None:
                return value if isinstance(value, int) else int.from_bytes(value[:4], "little")
            return value if isinstance(value, bytes) else value.to_bytes(4, "little")[:buflen]
        if buflen is None:
            return super().getsockopt(level, optname)
        return super().getsockopt(level, optname, buflen)

    @property
    def family(self) -> socket.AddressFamily:
        return _family(self._tailnet_remote[0])

    def getpeername(self) -> tuple[str, int]:
        """The tailnet peer's ``(ip, port)`` (what ``dev.whois`` takes)."""
        if self.fileno() < 0:
            raise OSError(errno.EBADF, "Bad file descriptor")
        return self._tailnet_remote

    def getsockname(self) -> tuple[str, int]:
        """Our tailnet ``(ip, port)`` on this connection."""
        if self.fileno() < 0:
            raise OSError(errno.EBADF, "Bad file descriptor")
        return self._tailnet_local

    def dup(self) -> TailnetConnection:
        """A second fd for the same connection (``socket.dup`` would lose the tailnet addresses)."""
        return TailnetConnection(fileno=socket.dup(self.fileno()), local=self._tailnet_local,
                                 remote=self._tailnet_remote, flow=self._flow)


class BridgedFlow:
    """One tailnet flow spliced to its socketpair end: its own fault domain. ``abort`` (or the splice
    failing) resets this flow and closes its pair end, and nothing else."""

    def __init__(self, ch: FlowChannel, limits: SpliceLimits, name: str,
                 on_done: Callable[[BridgedFlow], None] | None = None) -> None:
        self.ch = ch
        self._stop = threading.Event()
        self._on_done = on_done
        self.error: str | None = None
        self.done = threading.Event()
        inner, outer = socket.socketpair()
        self._inner = inner
        self.connection = TailnetConnection(fileno=outer.detach(), local=ch.local, remote=ch.remote,
                                            flow=self)
        self._splice = Splice(inner, ch, limits, name=name, stop=self._stop)
        try:
            threading.Thread(target=self._run, name=name, daemon=True).start()
        except BaseException:
            inner.close()
            self.connection.close()
            raise

    def _run(self) -> None:
        try:
            self.error = self._splice.run()
        except Exception as e:  # a bug in the copy loop is still this flow's alone
            self.error = f"splice crashed: {type(e).__name__}: {e}"
        if self.error is not None:
            abort_flow(self.ch)  # the tailnet side first: its peer sees a RST, not our teardown's EOF
            self._inner.close()
        self.done.set()
        if self._on_done is not None:
            self._on_done(self)

    def abort(self) -> None:
        """Reset this flow (the peer sees a RST; the app's end reads EOF or ECONNRESET)."""
        self._stop.set()
        abort_flow(self.ch)
        with contextlib.suppress(OSError):
            self._inner.shutdown(socket.SHUT_RDWR)  # wake the copy threads now, not at their next tick


def bridge_flow(ch: FlowChannel, *, limits: SpliceLimits | None = None, name: str = "bridge",
                on_done: Callable[[BridgedFlow], None] | None = None) -> TailnetConnection:
    """Bridge one connected flow; returns the app's real socket for it."""
    return BridgedFlow(ch, limits or SpliceLimits(), name, on_done).connection


class TailnetListenSocket(socket.socket):
    """A listening socket on the tailnet (see the module docstring). ``listen()`` is a no-op (the
    tailnet listener is already listening), ``getsockname()`` our tailnet address and port, and
    ``close()`` closes the tailnet listener and resets the connections not yet accepted. Close it
    (or use ``with``): its accept thread holds it, so dropping it does not free the port."""

    def __init__(self, listener: TcpListener, backlog: int, address: Callable[[], str],
                 limits: SpliceLimits | None = None) -> None:
        ring, bell = socket.socketpair()
        super().__init__(fileno=ring.detach())
        self._bell = bell
        self._listener = listener
        self._address = address
        self._limits = limits or SpliceLimits()
        self._backlog = max(1, backlog)
        self._lock = threading.Lock()
        self._queue: collections.deque[TailnetConnection] = collections.deque()
        self._rung = False  # a byte is in the doorbell (or taken by an accept that will pop)
        self._ended: BaseException | None = None
        self._slots = threading.Semaphore(self._backlog)
        self._stopping = threading.Event()
        self.flows: set[BridgedFlow] = set()
        """Every live bridged connection of this listener (accepted or waiting): for status and tests."""
        self._thread = threading.Thread(target=self._accept_loop, name=f"bridge-listen-{listener.port}",
                                        daemon=True)
        self._thread.start()

    # -- the socket API ------------------------------------------------------------------------------
    @property
    def family(self) -> socket.AddressFamily:
        return _family(self._address())

    @property
    def port(self) -> int:
        return self._listener.port

    @property
    def backlog(self) -> int:
        return self._backlog

    def getsockname(self) -> tuple[str, int]:
        if self.fileno() < 0:
            raise OSError(errno.EBADF, "Bad file descriptor")
        return (self._address(), self._listener.port)

    def getpeername(self) -> tuple[str, int]:
        raise OSError(errno.ENOTCONN, "Transport endpoint is not connected")

    def listen(self, backlog: int = 0) -> None:
        """Already listening on the tailnet (the bound is ``dev.listen_socket``'s ``backlog``)."""

    def accept(self) -> tuple[TailnetConnection, tuple[str, int]]:
        """The next tailnet connection and its peer's ``(ip, port)``; blocks, times out or raises
        ``BlockingIOError`` per this socket's mode. After the device closed: its error, once."""
        if not self.recv(1):
            raise OSError(errno.EBADF, "tailnet listener closed")
        with self._lock:
            if self._queue:
                conn = self._queue.popleft()
                if self._queue or self._ended is not None:
                    self._bell.send(_RING)
                else:
                    self._rung = False
                self._slots.release()
                return conn, conn.getpeername()
            self._rung = False
            ended = self._ended
        raise ended if ended is not None else OSError(errno.EBADF, "tailnet listener closed")

    def close(self) -> None:
        """Close the tailnet listener; connections waiting for ``accept`` are reset (as a closed
        kernel listener resets its queue); accepted ones are the app's and carry on."""
        if not self._stopping.is_set():
            self._stopping.set()
            self._listener.close()
            self._slots.release()  # wake the accept loop if it waits for room
            with self._lock:
                waiting = list(self._queue)
                self._queue.clear()
            for conn in waiting:
                if conn._flow is not None:
                    conn._flow.abort()
                conn.close()
            self._bell.close()
        super().close()

    def detach(self) -> int:
        raise OSError(errno.EOPNOTSUPP, "a tailnet listening socket cannot be detached from its bridge "
                      "(for TLS, wrap each accepted connection, or use the server's own TLS option)")

    def dup(self) -> TailnetListenSocket:
        raise OSError(errno.EOPNOTSUPP, "a tailnet listening socket cannot be duplicated (one bridge, "
                      "one accept queue)")

    # -- the bridge (its own thread) -----------------------------------------------------------------
    def _accept_loop(self) -> None:
        error: BaseException | None = None
        while not self._stopping.is_set():
            self._slots.acquire()
            if self._stopping.is_set():
                break
            try:
                ch = self._listener.accept_blocking(None)
            except OSError as e:  # closed: by us, or by the device closing
                error = e if self._stopping.is_set() else DeviceClosed(f"tailnet listener on port "
                                                                       f"{self.port} closed: {e}")
                break
            try:
                flow = BridgedFlow(ch, self._limits, f"bridge-{self.port}-{ch.remote[0]}:{ch.remote[1]}",
                                   on_done=self._flow_done)
            except (OSError, RuntimeError) as e:  # out of fds or threads: this connection is refused
                log.warning("tailnet port %d: cannot bridge a connection from %s: %s", self.port,
                            ch.remote[0], e)
                abort_flow(ch)
                self._slots.release()
                self._stopping.wait(_RETRY)  # let the shortage pass rather than spin on it
                continue
            with self._lock:
                if self._stopping.is_set():
                    stale = True
                else:
                    stale = False
                    self.flows.add(flow)
                    self._queue.append(flow.connection)
                    ring = not self._rung
                    self._rung = True
            if stale:
                flow.abort()
                flow.connection.close()
                break
            if ring:
                self._ring()
        with self._lock:
            self._ended = error or OSError(errno.EBADF, "tailnet listener closed")
            ring = not self._rung
            self._rung = True
        if ring:
            self._ring()

    def _ring(self) -> None:
        with contextlib.suppress(OSError):  # the app closed the socket meanwhile
            self._bell.send(_RING)

    def _flow_done(self, flow: BridgedFlow) -> None:
        with self._lock:
            self.flows.discard(flow)

    def __getstate__(self) -> Any:
        raise TypeError("a tailnet listening socket cannot be pickled (its bridge lives in this process)")
