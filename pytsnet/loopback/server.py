"""``LoopbackServer``: accepts on the 127.0.0.1 listener and gives each connection its own actor.

    loopback.sup       Supervisor          one-for-one, 5 restarts / 10 s
    ├── loopback.conns Supervisor          budget 0: its children are never restarted
    │   └── loopback-cI-N  ProxyConnection Restart.NEVER (one per client connection)
    └── loopback       LoopbackServer      permanent: the accept loop and the counters

The listening socket is the facade's (``pytsnet.loopback.Loopback``), handed over like the peerAPI's
listener: a killed server leaves it open, so its restart accepts again on the same address (Go's
``Loopback`` returns one address for the server's life) and the connections being served (siblings,
not children) go on. It is closed when the server stops for good (the device's close). At
``max_connections`` a new connection is accepted and closed at once (counted ``busy``).
"""

from __future__ import annotations

import contextlib
import itertools
import queue
import socket
import threading
from typing import TYPE_CHECKING

from pytsnet.actors.runtime import (
    Actor,
    ChildSpec,
    MailboxConfig,
    MailboxPolicy,
    Restart,
    StopKind,
    StopReason,
    Strategy,
    Supervisor,
    SupervisorConfig,
    handles,
)
from pytsnet.actors.runtime.logs import subsystem_logger
from pytsnet.loopback.conn import ProxyConnection, ProxyCreds, TailnetDialer
from pytsnet.messages.loopback import (
    LoopbackAccepted,
    LoopbackEvent,
    LoopbackSpawn,
    LoopbackStatus,
    LoopbackStatusRequest,
)

if TYPE_CHECKING:
    from pytsnet.actors.runtime import ActorSystem

__all__ = ["ACCEPT_POLL", "LoopbackServer", "loopback_spec"]

log = subsystem_logger("loopback")

ACCEPT_POLL = 0.25
"""The accept loop's wait: a stopped incarnation's loop ends within it."""

_CONN_MAILBOX = MailboxConfig(8, MailboxPolicy.BLOCK, block_timeout=5.0)


class LoopbackServer(Actor):
    def __init__(self, spawn: LoopbackSpawn, listener: socket.socket, creds: ProxyCreds,
                 dialer: TailnetDialer, system: ActorSystem) -> None:
        self.spawn = spawn
        self.listener = listener
        self.creds = creds
        self.dialer = dialer
        self.system = system

    def on_start(self) -> None:
        self._accepted: queue.SimpleQueue[socket.socket] = queue.SimpleQueue()
        self._stopping = threading.Event()
        self._open: set[str] = set()
        self._counters: dict[str, int] = {}
        self._seq = itertools.count(1)
        self.listener.settimeout(ACCEPT_POLL)
        self.start_io_loop(self._accept_one, self._stopping.set)

    def on_stop(self, reason: StopReason) -> None:
        self._stopping.set()
        while True:  # taken by the loop but never handed to an actor: close, do not leak
            try:
                self._accepted.get_nowait().close()
            except queue.Empty:
                break
        if reason.kind is StopKind.NORMAL:  # for good (the device closes): the address goes
            with contextlib.suppress(OSError):
                self.listener.close()

    def _accept_one(self) -> LoopbackAccepted | None:
        if self._stopping.is_set():
            return None
        try:
            sock, _ = self.listener.accept()
        except TimeoutError:
            return None
        except OSError:  # closed: nothing more will come
            self._stopping.wait(ACCEPT_POLL)
            return None
        if self._stopping.is_set():
            sock.close()
            return None
        self._accepted.put(sock)
        return LoopbackAccepted()

    @handles(LoopbackAccepted)
    def on_accepted(self, msg: LoopbackAccepted) -> None:
        while True:
            try:
                sock = self._accepted.get_nowait()
            except queue.Empty:
                return
            conns = self.lookup(self.spawn.conns)
            if conns is None or len(self._open) >= self.spawn.max_connections:
                self._count("busy")
                sock.close()
                continue
            name = f"{self.spawn.server}-c{self.incarnation}-{next(self._seq)}"
            self._open.add(name)
            self._count("connections")
            try:
                self.system.spawn(ProxyConnection, self.spawn, sock, self.creds, self.dialer, name=name,
                                  parent=conns, restart=Restart.NEVER, dispatcher="pool",
                                  mailbox=_CONN_MAILBOX)
            except Exception as e:  # the tree is stopping: this connection is not served
                log.debug("loopback: could not serve %s: %s", name, e)
                self._open.discard(name)
                sock.close()

    @handles(LoopbackEvent)
    def on_event(self, msg: LoopbackEvent) -> None:
        if msg.kind == "closed":
            self._open.discard(msg.conn)
        else:
            self._count(msg.kind, msg.n)

    @handles(LoopbackStatusRequest)
    def on_status(self, msg: LoopbackStatusRequest) -> LoopbackStatus:
        return LoopbackStatus(port=self.spawn.port, open=len(self._open), counters=dict(self._counters))

    def _count(self, kind: str, n: int = 1) -> None:
        self._counters[kind] = self._counters.get(kind, 0) + n


def loopback_spec(system: ActorSystem, spawn: LoopbackSpawn, listener: socket.socket, creds: ProxyCreds,
                  dialer: TailnetDialer) -> ChildSpec:
    """The subtree above as one child spec (spawned under the system root by ``dev.loopback()``)."""
    children = (
        ChildSpec(Supervisor, spawn.conns, args=(SupervisorConfig(Strategy.ONE_FOR_ONE, 0, 1.0),),
                  dispatcher="thread"),
        ChildSpec(LoopbackServer, spawn.server, args=(spawn, listener, creds, dialer, system),
                  dispatcher="thread"),
    )
    return ChildSpec(Supervisor, f"{spawn.server}.sup",
                     args=(SupervisorConfig(Strategy.ONE_FOR_ONE, 5, 10.0), children))
