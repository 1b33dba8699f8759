"""``PeerApiServer``: accepts the peerAPI's connections and gives each its own actor.

    peerapi.sup     Supervisor         one-for-one, 5 restarts / 10 s
    ├── peerapi.conns  Supervisor      budget 0: its children are never restarted
    │   └── peerapi-cI-N  PeerApiConnection  Restart.NEVER (one per TCP connection)
    └── peerapi        PeerApiServer   permanent: the accept loop and the counters

The accept loop, the bound and the bookkeeping are ``actors.connserver.ConnectionServer``'s. The
listener is the device's (``Bindings``: it follows the netstack across restarts and rebuilds),
handed over like a socket; a killed server leaves it open, so its restart accepts again and the
connections being served (siblings, not children) finish. A connection's crash ends that connection
only. At ``max_connections`` a new connection is accepted and closed at once (counted ``busy``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from pytsnet.actors.connserver import ConnectionServer, server_tree
from pytsnet.actors.netstack.channel import FlowChannel
from pytsnet.actors.peerapi.conn import PeerApiConnection
from pytsnet.actors.peerapi.ingress import IngressRoutes
from pytsnet.actors.runtime import (
    ActorRef,
    ChildSpec,
    MailboxConfig,
    MailboxPolicy,
    Restart,
    handles,
)
from pytsnet.actors.runtime.logs import subsystem_logger
from pytsnet.actors.taildrop.store import TaildropStore
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


class PeerApiServer(ConnectionServer[FlowChannel]):
    def __init__(self, spawn: PeerApiSpawn, acceptor: Acceptor, system: ActorSystem,
                 ingress: IngressRoutes | None = None, taildrop: TaildropStore | None = None) -> None:
        super().__init__(conns=spawn.conns, server=spawn.server, max_connections=spawn.max_connections,
                         log=log, poll=ACCEPT_POLL)
        self.spawn = spawn
        self.acceptor = acceptor
        self.system = system
        self.ingress = ingress
        """Funnel listeners by port (the device's), handed to each connection for ``/v0/ingress``."""
        self.taildrop = taildrop
        """22a: where ``/v0/put/`` writes (None: Taildrop off, Go's 403)."""

    def accept_blocking(self, timeout: float) -> FlowChannel:
        return self.acceptor.accept_blocking(timeout)

    def close_conn(self, conn: FlowChannel) -> None:
        conn.close()

    def accepted_message(self) -> PeerApiAccepted:
        return PeerApiAccepted()

    def spawn_conn(self, conn: FlowChannel, name: str, parent: ActorRef) -> None:
        mailbox = MailboxConfig(8, MailboxPolicy.BLOCK, block_timeout=self.spawn.idle_timeout)
        self.system.spawn(PeerApiConnection, self.spawn, conn, self.ingress, self.taildrop, name=name,
                          parent=parent, restart=Restart.NEVER, dispatcher="thread", mailbox=mailbox)

    @handles(PeerApiAccepted)
    def on_accepted(self, msg: PeerApiAccepted) -> None:
        self.serve_queued()

    @handles(PeerApiEvent)
    def on_event(self, msg: PeerApiEvent) -> None:
        self.connection_event(msg.kind, msg.conn)

    @handles(PeerApiStatusRequest)
    def on_status(self, msg: PeerApiStatusRequest) -> PeerApiStatus:
        return PeerApiStatus(port=self.spawn.port, open=self.open_connections, counters=self.counters())


def peerapi_spec(system: ActorSystem, spawn: PeerApiSpawn, acceptor: Acceptor,
                 restart: Restart = Restart.PERMANENT, ingress: IngressRoutes | None = None,
                 taildrop: TaildropStore | None = None) -> ChildSpec:
    """The subtree above as one child spec (spawned under the system root by the device)."""
    args = (spawn, acceptor, system, ingress, taildrop)
    return server_tree(ChildSpec(PeerApiServer, spawn.server, args=args, dispatcher="thread"), spawn.conns,
                       restart)
