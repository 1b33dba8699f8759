"""``ConnectionServer``: an accept loop on its own thread and one actor per accepted connection.

The shape the peerAPI server and the loopback proxies share:

    X.sup        Supervisor          one-for-one, 5 restarts / 10 s
    ├── X.conns  Supervisor          budget 0: its children are never restarted
    │   └── X-cI-N  (connection)     Restart.NEVER, one per accepted connection
    └── X        ConnectionServer    permanent: the accept loop and the counters

The loop blocks in ``accept_blocking`` (with a timeout, so a stopped incarnation's loop ends within
it), queues what it took and tells the server ``accepted_message()``; the server's own thread spawns
the connection's actor, or, at ``max_connections``, closes it at once (counted ``busy``). A connection
tells the server its events (``closed`` frees its slot). Connections are the server's siblings, so a
killed server leaves them running and its restart accepts again on the same listener.
"""

from __future__ import annotations

import contextlib
import itertools
import queue
import socket
import threading
from typing import Generic, TypeVar

from pytsnet.actors.runtime import (
    Actor,
    ActorRef,
    ChildSpec,
    Restart,
    StopKind,
    StopReason,
    Strategy,
    Supervisor,
    SupervisorConfig,
)
from pytsnet.actors.runtime.logs import SubsystemLogger
from pytsnet.messages.base import Message

__all__ = ["ConnectionServer", "SocketServer", "server_tree"]

C = TypeVar("C")


class ConnectionServer(Actor, Generic[C]):
    """Subclasses say how to take the next connection (``accept_blocking``: ``TimeoutError`` when none
    came, ``OSError`` once the listener is closed), how to close one that will not be served, which
    message wakes the server, and how to spawn a connection's actor; their handlers call
    ``serve_queued`` and ``connection_event``."""

    def __init__(self, *, conns: str, server: str, max_connections: int, log: SubsystemLogger,
                 poll: float) -> None:
        self._conns_name = conns
        self._server_name = server
        self._max_connections = max_connections
        self._log = log
        self._poll = poll

    # -- what a subclass provides ----------------------------------------------------------------------
    def accept_blocking(self, timeout: float) -> C:
        raise NotImplementedError

    def close_conn(self, conn: C) -> None:
        raise NotImplementedError

    def accepted_message(self) -> Message:
        raise NotImplementedError

    def spawn_conn(self, conn: C, name: str, parent: ActorRef) -> None:
        raise NotImplementedError

    # -- the loop and the bookkeeping ---------------------------------------------------------------------
    def on_start(self) -> None:
        self._accepted: queue.SimpleQueue[C] = queue.SimpleQueue()
        self._stopping = threading.Event()
        self._open: set[str] = set()
        self._counters: dict[str, int] = {}
        self._seq = itertools.count(1)
        self.start_io_loop(self._accept_one, self._stopping.set)

    def on_stop(self, reason: StopReason) -> None:
        self._stopping.set()
        while True:  # taken by the loop but never handed to an actor: close, do not leak
            try:
                self.close_conn(self._accepted.get_nowait())
            except queue.Empty:
                break

    def _accept_one(self) -> Message | None:
        """The accept loop (its own thread): queue the connection for the server's thread."""
        if self._stopping.is_set():
            return None
        try:
            conn = self.accept_blocking(self._poll)
        except TimeoutError:
            return None
        except OSError:  # the listener was closed: nothing more will come
            self._stopping.wait(self._poll)
            return None
        if self._stopping.is_set():
            self.close_conn(conn)
            return None
        self._accepted.put(conn)
        return self.accepted_message()

    def serve_queued(self) -> None:
        """Give each queued connection its actor (or close it: over the bound, or the tree stopping)."""
        while True:
            try:
                conn = self._accepted.get_nowait()
            except queue.Empty:
                return
            parent = self.lookup(self._conns_name)
            if parent is None or len(self._open) >= self._max_connections:
                self.count("busy")
                self.close_conn(conn)
                continue
            name = f"{self._server_name}-c{self.incarnation}-{next(self._seq)}"
            self._open.add(name)
            self.count("connections")
            try:
                self.spawn_conn(conn, name, parent)
            except Exception as e:  # the tree is stopping: this connection is not served
                self._log.debug("%s: could not serve %s: %s", self._server_name, name, e)
                self._open.discard(name)
                self.close_conn(conn)

    def connection_event(self, kind: str, conn: str, n: int = 1) -> None:
        """A connection's report: ``closed`` frees its slot, anything else is counted."""
        if kind == "closed":
            self._open.discard(conn)
        else:
            self.count(kind, n)

    def count(self, kind: str, n: int = 1) -> None:
        self._counters[kind] = self._counters.get(kind, 0) + n

    @property
    def open_connections(self) -> int:
        return len(self._open)

    def counters(self) -> dict[str, int]:
        return dict(self._counters)


class SocketServer(ConnectionServer[socket.socket]):
    """A ``ConnectionServer`` on a host listening socket (the loopback proxies' 127.0.0.1 listener, the
    LocalAPI's unix socket). The socket is the facade's and outlives a killed server, so a restart
    accepts on the same address; it is closed when the server stops for good (the device closes)."""

    def __init__(self, listener: socket.socket, *, conns: str, server: str, max_connections: int,
                 log: SubsystemLogger, poll: float) -> None:
        super().__init__(conns=conns, server=server, max_connections=max_connections, log=log, poll=poll)
        self.listener = listener

    def on_start(self) -> None:
        self.listener.settimeout(self._poll)
        super().on_start()

    def on_stop(self, reason: StopReason) -> None:
        super().on_stop(reason)
        if reason.kind is StopKind.NORMAL:  # for good: the address goes
            with contextlib.suppress(OSError):
                self.listener.close()

    def accept_blocking(self, timeout: float) -> socket.socket:
        sock, _ = self.listener.accept()  # the listener's own timeout (set at start) is ``timeout``
        return sock

    def close_conn(self, conn: socket.socket) -> None:
        conn.close()


def server_tree(server: ChildSpec, conns: str, restart: Restart = Restart.PERMANENT) -> ChildSpec:
    """The tree above as one child spec: ``<server>.sup`` over ``conns`` (whose children are never
    restarted) and the server (its own spec, a ``ConnectionServer``)."""
    children = (
        ChildSpec(Supervisor, conns, args=(SupervisorConfig(Strategy.ONE_FOR_ONE, 0, 1.0),),
                  dispatcher="thread"),
        server,
    )
    return ChildSpec(Supervisor, f"{server.name}.sup", args=(SupervisorConfig(Strategy.ONE_FOR_ONE, 5, 10.0),
                                                             children), restart=restart)
