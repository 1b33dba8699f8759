"""``PeerApiServer``: accepts the peerAPI's connections and gives each its own actor.

    peerapi.sup     Supervisor         one-for-one, 5 restarts / 10 s
    ├── peerapi.conns  Supervisor      budget 0: its children are never restarted
    │   └── peerapi-cI-N  PeerApiConnection  Restart.NEVER (one per TCP connection)
    └── peerapi        PeerApiServer   permanent: the accept loop and the counters

The listener is the device's (``Bindings``: it follows the netstack across restarts and rebuilds),
handed over like a socket; a killed server leaves it open, so its restart accepts again and the
connections being served (siblings, not children) finish. A connection's crash ends that connection
only. At ``max_connections`` a new connection is accepted and closed at once (counted ``busy``).
"""

from __future__ import annotations

import itertools
import queue
import threading
from typing import TYPE_CHECKING, Protocol

from pytsnet.actors.netstack.channel import FlowChannel
from pytsnet.actors.peerapi.conn import PeerApiConnection
from pytsnet.actors.runtime import (
    Actor,
    ChildSpec,
    MailboxConfig,
    MailboxPolicy,
    Restart,
    StopReason,
    Strategy,
    Supervisor,
    SupervisorConfig,
    handles,
)
from pytsnet.actors.runtime.logs import subsystem_logger
from pytsnet.messages.peerapi import (
    PeerApiAccepted,
    PeerApiEvent,
    PeerApiSpawn,
    PeerApiStatus,
    PeerApiStatusRequest,
)

if TYPE_CHECKING:
    from pytsnet.actors.runtime import ActorSystem

__all__ = ["ACCEPT_POLL", "Acceptor", "PeerApiServer", "peerapi_spec"]

log = subsystem_logger("peerapi")

ACCEPT_POLL = 0.25
"""The accept loop's wait: a stopped incarnation's loop ends within it (the device's close waits that long
at most for it; an idle device wakes it 4 times a second)."""


class Acceptor(Protocol):
    """The listening end (the device's ``TcpListener``): the next connection, ``TimeoutError`` when none
    came within ``timeout``, ``OSError`` once closed."""

    def accept_blocking(self, timeout: float | None = None) -> FlowChannel: ...


class PeerApiServer(Actor):
    def __init__(self, spawn: PeerApiSpawn, acceptor: Acceptor, system: ActorSystem) -> None:
        self.spawn = spawn
        self.acceptor = acceptor
        self.system = system

    def on_start(self) -> None:
        self._accepted: queue.SimpleQueue[FlowChannel] = queue.SimpleQueue()
        self._stopping = threading.Event()
        self._open: set[str] = set()
        self._counters: dict[str, int] = {}
        self._seq = itertools.count(1)
        self.start_io_loop(self._accept_one, self._stopping.set)

    def on_stop(self, reason: StopReason) -> None:
        self._stopping.set()
        while True:  # taken by the loop but never handed to an actor: close, do not leak
            try:
                self._accepted.get_nowait().close()
            except queue.Empty:
                break

    def _accept_one(self) -> PeerApiAccepted | None:
        """The accept loop (its own thread): queue the connection for the actor, which spawns its actor."""
        if self._stopping.is_set():
            return None
        try:
            ch = self.acceptor.accept_blocking(ACCEPT_POLL)
        except TimeoutError:
            return None
        except OSError:  # the device closed the listener: nothing more will come
            self._stopping.wait(ACCEPT_POLL)
            return None
        if self._stopping.is_set():
            ch.close()
            return None
        self._accepted.put(ch)
        return PeerApiAccepted()

    @handles(PeerApiAccepted)
    def on_accepted(self, msg: PeerApiAccepted) -> None:
        while True:
            try:
                ch = self._accepted.get_nowait()
            except queue.Empty:
                return
            conns = self.lookup(self.spawn.conns)
            if conns is None or len(self._open) >= self.spawn.max_connections:
                self._count("busy")
                ch.close()
                continue
            name = f"{self.spawn.server}-c{self.incarnation}-{next(self._seq)}"
            self._open.add(name)
            self._count("connections")
            mailbox = MailboxConfig(8, MailboxPolicy.BLOCK, block_timeout=self.spawn.idle_timeout)
            try:
                self.system.spawn(PeerApiConnection, self.spawn, ch, name=name, parent=conns,
                                  restart=Restart.NEVER, dispatcher="thread", mailbox=mailbox)
            except Exception as e:  # the tree is stopping: this connection is not served
                log.debug("peerapi: could not serve %s: %s", name, e)
                self._open.discard(name)
                ch.close()

    @handles(PeerApiEvent)
    def on_event(self, msg: PeerApiEvent) -> None:
        if msg.kind == "closed":
            self._open.discard(msg.conn)
        else:
            self._count(msg.kind)

    @handles(PeerApiStatusRequest)
    def on_status(self, msg: PeerApiStatusRequest) -> PeerApiStatus:
        return PeerApiStatus(port=self.spawn.port, open=len(self._open), counters=dict(self._counters))

    def _count(self, kind: str) -> None:
        self._counters[kind] = self._counters.get(kind, 0) + 1


def peerapi_spec(system: ActorSystem, spawn: PeerApiSpawn, acceptor: Acceptor,
                 restart: Restart = Restart.PERMANENT) -> ChildSpec:
    """The subtree above as one child spec (spawned under the system root by the device)."""
    children = (
        ChildSpec(Supervisor, spawn.conns, args=(SupervisorConfig(Strategy.ONE_FOR_ONE, 0, 1.0),),
                  dispatcher="thread"),
        ChildSpec(PeerApiServer, spawn.server, args=(spawn, acceptor, system), dispatcher="thread"),
    )
    return ChildSpec(Supervisor, f"{spawn.server}.sup",
                     args=(SupervisorConfig(Strategy.ONE_FOR_ONE, 5, 10.0), children), restart=restart)
