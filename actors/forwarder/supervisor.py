"""The forwarder subtree (subnet router / exit node): one supervised actor per forwarded flow.

    forwarder.sup    Supervisor        one-for-one, FORWARDER_RESTARTS within FORWARDER_WITHIN
    ├── forwarder.flows  Supervisor    budget 0: its children are never restarted
    │   └── forwarder-{tcp,udp,echo}-N  TcpForwarder / UdpForwarder / EchoForwarder  Restart.NEVER
    └── forwarder    ForwarderActor    permanent: spawns forwarders, routes datagrams, counts

The netstack tells ``forwarder`` each new forwarded SYN, datagram and echo request; it spawns a
forwarder per TCP connection, per UDP 4-tuple and per echo stream (bounded by ``ForwardLimits``;
beyond them a SYN is reset and a datagram dropped, counted). Flow forwarders are siblings of the
``ForwarderActor``, not its children: killing it (or its crash) restarts only it, the flows in
progress keep going, and the new incarnation finds them in the ``ForwardTable`` (a spawn argument).
A forwarder that dies resets only its own flow (``TcpForwarder.on_stop``).
"""

from __future__ import annotations

import contextlib
import itertools
from typing import TYPE_CHECKING

from pytsnet.actors.forwarder.datagram import EchoForwarder, UdpForwarder
from pytsnet.actors.forwarder.table import ForwardTable
from pytsnet.actors.forwarder.tcp import TcpForwarder
from pytsnet.actors.runtime import (
    Actor,
    ActorStopped,
    ChildSpec,
    MailboxConfig,
    MailboxFull,
    Restart,
    Strategy,
    Supervisor,
    SupervisorConfig,
    handles,
)
from pytsnet.actors.runtime.logs import subsystem_logger
from pytsnet.messages.forwarder import (
    ForwardEchoIn,
    ForwarderDone,
    ForwarderStatus,
    ForwarderStatusRequest,
    ForwardTcpOpen,
    ForwardTcpRefuse,
    ForwardUdpIn,
)

if TYPE_CHECKING:
    from pytsnet.actors.netstack.channel import FlowRegistry
    from pytsnet.actors.runtime import ActorRef, ActorSystem

log = subsystem_logger("forwarder")

__all__ = ["FORWARDER", "FORWARDER_RESTARTS", "FORWARDER_WITHIN", "ForwarderActor", "flows_name",
           "forwarder_spec", "supervisor_name"]

FORWARDER = "forwarder"
FORWARDER_RESTARTS, FORWARDER_WITHIN = 5, 10.0
_FORWARDER_MAILBOX = MailboxConfig(4096, max_bytes=4 << 20)
_ids = itertools.count(1)


def supervisor_name(name: str) -> str:
    return f"{name}.sup"


def flows_name(name: str) -> str:
    return f"{name}.flows"


class ForwarderActor(Actor):
    """Spawns and finds the per-flow forwarders; answers ``ForwarderStatusRequest``."""

    def __init__(self, system: ActorSystem, netstack: str, registry: FlowRegistry,
                 table: ForwardTable) -> None:
        self.system = system
        self.netstack = netstack
        self.registry = registry
        self.table = table
        self._flows: ActorRef | None = None

    def on_start(self) -> None:
        self._flows = self.ctx.lookup(flows_name(self.name))
        if self._flows is None:
            raise RuntimeError(f"{self.name}: no flows supervisor")
        self.table.prune()

    def _spawn(self, kind: str, cls: type[Actor], *args: object) -> ActorRef | None:
        name = f"{self.name}-{kind}-{next(_ids)}"
        try:
            return self.system.spawn(cls, self.system, *args, name=name, parent=self._flows,
                                     restart=Restart.NEVER, dispatcher="pool", mailbox=_FORWARDER_MAILBOX)
        except Exception as e:
            log.warning("%s: cannot start a %s forwarder: %s", self.name, kind, e)
            self.table.count(f"{kind}_spawn_failed")
            return None

    @handles(ForwardTcpOpen)
    def on_tcp(self, msg: ForwardTcpOpen) -> None:
        limits = self.table.limits
        if self.table.live("tcp") >= limits.max_tcp_flows:
            self.table.count("tcp_flows_full")
            self._refuse(msg, "tcp_flows_full")
            return
        flow = ("tcp", msg.client, msg.client_port, msg.dst, msg.dst_port)
        name = f"{self.name}-tcp-{next(_ids)}"
        try:
            ref = self.system.spawn(TcpForwarder, self.system, msg, self.netstack, self.registry, self.table,
                                    self.name, name=name, parent=self._flows, restart=Restart.NEVER,
                                    dispatcher="pool", mailbox=_FORWARDER_MAILBOX)
        except Exception as e:
            log.warning("%s: cannot start a TCP forwarder: %s", self.name, e)
            self.table.count("tcp_spawn_failed")
            self._refuse(msg, "tcp_spawn_failed")
            return
        self.table.add(flow, name, ref)

    def _refuse(self, msg: ForwardTcpOpen, reason: str) -> None:
        ref = self.system.lookup(self.netstack)
        if ref is not None:
            with contextlib.suppress(ActorStopped, MailboxFull):
                ref.tell(ForwardTcpRefuse(client=msg.client, client_port=msg.client_port, dst=msg.dst,
                                          dst_port=msg.dst_port, reason=reason))

    @handles(ForwardUdpIn)
    def on_udp(self, msg: ForwardUdpIn) -> None:
        flow = ("udp", msg.client, msg.client_port, msg.dst, msg.dst_port)
        self._datagram(flow, msg, "udp", UdpForwarder, self.table.limits.max_udp_flows)

    @handles(ForwardEchoIn)
    def on_echo(self, msg: ForwardEchoIn) -> None:
        ident = int.from_bytes(msg.rest[:2], "big") if len(msg.rest) >= 2 else 0
        flow = ("echo", msg.client, 0, msg.dst, ident)
        self._datagram(flow, msg, "echo", EchoForwarder, self.table.limits.max_echo_flows)

    def _datagram(self, flow: tuple[str, str, int, str, int], msg: ForwardUdpIn | ForwardEchoIn, kind: str,
                  cls: type[Actor], bound: int) -> None:
        ref = self.table.get(flow)
        if ref is not None:
            try:
                ref.tell(msg)
                return
            except ActorStopped:
                pass  # it just ended: start another
            except MailboxFull:
                self.table.count(f"{kind}_dropped")
                return
        if self.table.live(kind) >= bound:
            self.table.count(f"{kind}_flows_full")
            return
        ref = self._spawn(kind, cls, msg, self.netstack, self.table, self.name)
        if ref is not None:
            self.table.add(flow, ref.name, ref)

    @handles(ForwarderDone)
    def on_done(self, msg: ForwarderDone) -> None:
        self.table.remove(msg.name)
        if msg.error is not None:
            log.debug("%s ended: %s", msg.name, msg.error)

    @handles(ForwarderStatusRequest)
    def on_status(self, msg: ForwarderStatusRequest) -> ForwarderStatus:
        self.table.prune()
        return ForwarderStatus(tcp_flows=self.table.live("tcp"), udp_flows=self.table.live("udp"),
                               echo_flows=self.table.live("echo"), counters=self.table.snapshot())


def forwarder_spec(system: ActorSystem, netstack: str, registry: FlowRegistry, table: ForwardTable,
                   name: str = FORWARDER, restart: Restart = Restart.PERMANENT) -> ChildSpec:
    """The subtree above as one child spec; ``netstack``: the name of the netstack actor it serves."""
    children = (
        ChildSpec(Supervisor, flows_name(name), args=(SupervisorConfig(Strategy.ONE_FOR_ONE, 0, 1.0),)),
        ChildSpec(ForwarderActor, name, args=(system, netstack, registry, table), restart=Restart.PERMANENT,
                  mailbox=MailboxConfig(8192, max_bytes=16 << 20)),
    )
    return ChildSpec(Supervisor, supervisor_name(name),
                     args=(SupervisorConfig(Strategy.ONE_FOR_ONE, FORWARDER_RESTARTS, FORWARDER_WITHIN),
                           children),
                     restart=restart)
