"""``LoopbackServer``: accepts on the 127.0.0.1 listener and gives each connection its own actor.

    loopback.sup       Supervisor          one-for-one, 5 restarts / 10 s
    ├── loopback.conns Supervisor          budget 0: its children are never restarted
    │   └── loopback-cI-N  ProxyConnection Restart.NEVER (one per client connection)
    └── loopback       LoopbackServer      permanent: the accept loop and the counters

The accept loop, the bound and the bookkeeping are ``actors.connserver.SocketServer``'s. The
listening socket is the facade's (``pytsnet.loopback.Loopback``), handed over like the peerAPI's
listener: a killed server leaves it open, so its restart accepts again on the same address (Go's
``Loopback`` returns one address for the server's life) and the connections being served (siblings,
not children) go on. It is closed when the server stops for good (the device's close). At
``max_connections`` a new connection is accepted and closed at once (counted ``busy``).
"""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING

from pytsnet.actors.connserver import SocketServer, server_tree
from pytsnet.actors.runtime import (
    ActorRef,
    ChildSpec,
    MailboxConfig,
    MailboxPolicy,
    Restart,
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


class LoopbackServer(SocketServer):
    def __init__(self, spawn: LoopbackSpawn, listener: socket.socket, creds: ProxyCreds,
                 dialer: TailnetDialer, system: ActorSystem) -> None:
        super().__init__(listener, conns=spawn.conns, server=spawn.server,
                         max_connections=spawn.max_connections, log=log, poll=ACCEPT_POLL)
        self.spawn = spawn
        self.creds = creds
        self.dialer = dialer
        self.system = system

    def accepted_message(self) -> LoopbackAccepted:
        return LoopbackAccepted()

    def spawn_conn(self, conn: socket.socket, name: str, parent: ActorRef) -> None:
        self.system.spawn(ProxyConnection, self.spawn, conn, self.creds, self.dialer, name=name,
                          parent=parent, restart=Restart.NEVER, dispatcher="pool", mailbox=_CONN_MAILBOX)

    @handles(LoopbackAccepted)
    def on_accepted(self, msg: LoopbackAccepted) -> None:
        self.serve_queued()

    @handles(LoopbackEvent)
    def on_event(self, msg: LoopbackEvent) -> None:
        self.connection_event(msg.kind, msg.conn, msg.n)

    @handles(LoopbackStatusRequest)
    def on_status(self, msg: LoopbackStatusRequest) -> LoopbackStatus:
        return LoopbackStatus(port=self.spawn.port, open=self.open_connections, counters=self.counters())


def loopback_spec(system: ActorSystem, spawn: LoopbackSpawn, listener: socket.socket, creds: ProxyCreds,
                  dialer: TailnetDialer) -> ChildSpec:
    """The subtree above as one child spec (spawned under the system root by ``dev.loopback()``)."""
    return server_tree(ChildSpec(LoopbackServer, spawn.server, args=(spawn, listener, creds, dialer, system),
                                 dispatcher="thread"), spawn.conns)
