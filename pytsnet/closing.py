"""Closing a device so its peers notice at once: reset every flow, then flush the data plane.

Go's tsnet ``Close`` closes its listeners and the netstack, whose endpoints send RSTs. Here the
RSTs are messages on their way (flow → WireGuard engine → magicsock UDP actor → DERP client), and
stopping the actor tree drops whatever is still queued: a peer's sender would stay blocked until its
own timeouts (minutes). So, before the tree stops:

1. ask the netstack to ``AbortAllFlows`` (listeners close, each flow is told ``FlowAbort``);
2. ask the netstack how many flows are still open until none is (each flow tells ``FlowClosed``
   after its RST was told to the engine; the facade never reads the netstack's tables);
3. ask the engine, the UDP actor, then each DERP client a status: mailboxes are FIFO, so each reply
   means the packets before it were encrypted and handed on, or written to the socket.

Every step is bounded by one overall deadline; a missing or stuck actor only shortens the drain.
"""

from __future__ import annotations

import time
from typing import TypeVar

from pytsnet.actors.runtime import ActorStopped, ActorSystem, AskTimeout
from pytsnet.actors.runtime.errors import HandlerError
from pytsnet.actors.runtime.logs import subsystem_logger
from pytsnet.messages.base import Request
from pytsnet.messages.dataplane import GetDataplaneInfo
from pytsnet.messages.magicsock import DerpStatusRequest, PathStatusRequest
from pytsnet.messages.netstack import AbortAllFlows, FlowsAborted, NetstackStatusRequest
from pytsnet.messages.wgengine import GetWgStatus

__all__ = ["DRAIN_TIMEOUT", "reset_flows_and_flush"]

log = subsystem_logger("device")
_R = TypeVar("_R")

DRAIN_TIMEOUT = 1.0
"""Close waits at most this long for the resets to leave."""


def reset_flows_and_flush(system: ActorSystem, bridge: str, timeout: float = DRAIN_TIMEOUT) -> int:
    """Reset every open flow and push the RSTs out to the wire; returns how many flows were reset.
    ``bridge`` names the data-plane bridge, asked which actors the running subtree has (none: 0)."""
    deadline = time.monotonic() + timeout
    info = _ask(system, bridge, GetDataplaneInfo(), deadline)
    if info is None or not info.names:
        return 0
    names = info.names
    reply = _ask(system, names.get("netstack", ""), AbortAllFlows(), deadline)
    if not isinstance(reply, FlowsAborted):
        return 0
    _wait_flows_closed(system, names.get("netstack", ""), deadline)
    # Barriers, in the order the packets travel.
    _ask(system, names.get("engine", ""), GetWgStatus(), deadline)
    _ask(system, names.get("udp", ""), PathStatusRequest(), deadline)
    for role, name in names.items():
        if role.startswith("derp."):
            _ask(system, name, DerpStatusRequest(), deadline)
    return reply.flows


def _wait_flows_closed(system: ActorSystem, name: str, deadline: float) -> None:
    """Poll the netstack's open-flow count (a status ask) until 0; the resets take milliseconds."""
    pause = 0.001
    while (status := _ask(system, name, NetstackStatusRequest(), deadline)) is not None and status.flows:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        time.sleep(min(pause, left))
        pause = min(pause * 2, 0.02)
    if status is not None and status.flows:
        log.debug("close: %d flows did not finish in time", status.flows)


def _ask(system: ActorSystem, name: str, msg: Request[_R], deadline: float) -> _R | None:
    ref = system.lookup(name) if name else None
    left = deadline - time.monotonic()
    if ref is None or left <= 0:
        return None
    try:
        return ref.ask(msg, timeout=left)
    except (AskTimeout, ActorStopped, HandlerError):
        return None
