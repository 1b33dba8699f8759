"""The netstack's own supervision subtree: one declaration, used by the device tree and by ``Netstack.start``.

    <name>.sup    NetstackSupervisor  one-for-one, NETSTACK_RESTARTS within NETSTACK_WITHIN
    ├── <name>.flows  Supervisor      budget 0: its children are never restarted
    │   └── <name>-tcp-N  TcpFlowActor  Restart.NEVER, pooled (one per TCP connection)
    └── <name>        NetstackActor   permanent (thread dispatcher: the hot demultiplexer)

Fault isolation:

* A flow that panics (or is killed) is reset, not restarted: its ``on_stop`` sends an RST to the peer
  and the app's next call raises ``FlowCrashed``. Restarting it blindly would resurrect a connection
  from state the crash may have corrupted; one connection's fault stays that connection's.
  ``Restart.NEVER`` children do not count against a budget, so the flows supervisor's budget is 0:
  any restart there would be a bug, and escalates.
* The NetstackActor crashing restarts only it; the flows (siblings, not children) keep running and the
  new incarnation re-adopts them from the ``FlowRegistry`` (see ``actor.py``). A netstack crash-looping
  past its budget escalates: the whole subtree restarts from nothing (the registry's endpoints are
  closed, every flow is reset), counted against the parent's budget.
* When the subtree stops for good (or restarts after escalation) ``NetstackSupervisor.on_stop``
  closes the app's listener and UDP channels, so a waiting ``accept``/``recvfrom`` ends instead of
  hanging on a netstack that is gone.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pytsnet.actors.netstack.actor import NetstackActor
from pytsnet.actors.netstack.channel import FlowRegistry
from pytsnet.actors.runtime import ChildSpec, Restart, StopReason, Strategy, Supervisor, SupervisorConfig

if TYPE_CHECKING:
    from pytsnet.actors.runtime import ActorRef, ActorSystem, MailboxConfig
    from pytsnet.messages.base import Message
    from pytsnet.netstack.config import StackConfig
    from pytsnet.netstack.tcp.connection import TcpConfig

__all__ = ["NETSTACK_RESTARTS", "NETSTACK_WITHIN", "NetstackSupervisor", "flows_name", "netstack_spec",
           "supervisor_name"]

NETSTACK_RESTARTS, NETSTACK_WITHIN = 5, 10.0
"""NetstackActor restarts allowed before the subtree escalates (a poison packet crash-looping it)."""


def supervisor_name(name: str) -> str:
    return f"{name}.sup"


def flows_name(name: str) -> str:
    return f"{name}.flows"


class NetstackSupervisor(Supervisor):
    """The netstack subtree's supervisor; when it stops, the app's endpoints on this netstack close."""

    def __init__(self, config: SupervisorConfig, children: tuple[ChildSpec, ...],
                 registry: FlowRegistry) -> None:
        super().__init__(config, children)
        self.registry = registry

    def on_stop(self, reason: StopReason) -> None:
        self.registry.close_endpoints()


def netstack_spec(system: ActorSystem, name: str, config: StackConfig, sink: ActorRef | str,
                  registry: FlowRegistry, *, out_message: type[Message] | None = None,
                  tcp_config: TcpConfig | None = None, mailbox: MailboxConfig | None = None,
                  restart: Restart = Restart.PERMANENT, forwarder: str | None = None) -> ChildSpec:
    """The subtree above, as one child spec (spawn it under the data-plane supervisor, or the root).
    ``sink``: the link actor, or its name when it starts earlier in the same spec tree; ``forwarder``:
    the forwarder actor's name when ``config.forward`` is set (``actors/forwarder``)."""
    kwargs: dict[str, object] = {"flows": flows_name(name), "tcp_config": tcp_config, "forwarder": forwarder}
    if out_message is not None:
        kwargs["out_message"] = out_message
    children = (
        ChildSpec(Supervisor, flows_name(name), args=(SupervisorConfig(Strategy.ONE_FOR_ONE, 0, 1.0),),
                  dispatcher="thread"),
        ChildSpec(NetstackActor, name, args=(system, config, sink, registry), kwargs=kwargs,
                  mailbox=mailbox, dispatcher="thread"),
    )
    return ChildSpec(NetstackSupervisor, supervisor_name(name),
                     args=(SupervisorConfig(Strategy.ONE_FOR_ONE, NETSTACK_RESTARTS, NETSTACK_WITHIN),
                           children, registry),
                     restart=restart)
