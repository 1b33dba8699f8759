"""``TcpForwarder``: one forwarded TCP connection, the peer's tailnet flow spliced to a host socket.

As Go's netstack (``forwardTCP``), the destination is dialed first, through a host socket in the
node's network namespace (the host's stack picks the source address: source NAT by the host), and
only then is the peer's handshake completed; a failed dial resets the peer's SYN. Then a ``Splice``
(``actors.netstack.splice``) copies both ways with back-pressure, carries half-closes and pairs resets;
a flow idle past ``ForwardLimits.tcp_idle`` is reset on both sides.

The actor itself only owns the lifetime: its threads tell it ``ForwarderDone`` when the flow ends,
and killing it (or its crash) resets both sides in ``on_stop`` — one flow's fault ends that flow.
"""

from __future__ import annotations

import contextlib
import errno
import socket
import struct
import threading
from typing import TYPE_CHECKING

from pytsnet.actors.netstack.channel import FlowChannel
from pytsnet.actors.netstack.splice import Splice, SpliceLimits, abort_flow
from pytsnet.actors.runtime import Actor, ActorStopped, AskTimeout, MailboxFull, StopReason, handles
from pytsnet.actors.runtime.logs import subsystem_logger
from pytsnet.messages.forwarder import (
    ForwarderDone,
    ForwardTcpAccept,
    ForwardTcpOpen,
    ForwardTcpRefuse,
)

if TYPE_CHECKING:
    from pytsnet.actors.forwarder.table import ForwardTable
    from pytsnet.actors.netstack.channel import FlowRegistry
    from pytsnet.actors.runtime import ActorSystem

log = subsystem_logger("forwarder")

__all__ = ["TcpForwarder"]

_HANDSHAKE = 10.0  # the peer must finish its handshake within this after our SYN-ACK


class TcpForwarder(Actor):
    def __init__(self, system: ActorSystem, open_: ForwardTcpOpen, netstack: str, registry: FlowRegistry,
                 table: ForwardTable, manager: str) -> None:
        self.system = system
        self.open = open_
        self.netstack = netstack
        self.registry = registry
        self.table = table
        self.manager = manager
        self._stop = threading.Event()
        self._sock: socket.socket | None = None
        self._ch: FlowChannel | None = None
        self._accepted = False
        self._clean = False
        self._lock = threading.Lock()

    def on_start(self) -> None:
        threading.Thread(target=self._run, name=f"{self.name}-dial", daemon=True).start()

    # -- lifetime ------------------------------------------------------------------------------------
    @handles(ForwarderDone)
    def on_done(self, msg: ForwarderDone) -> None:
        self._clean = msg.error is None
        self._tell_manager(msg)
        self.ctx.stop_self()

    def on_stop(self, reason: StopReason) -> None:
        """Killed, crashed or done: whatever is still open is reset (a clean end already closed it).
        The tailnet side first, so the peer sees a RST, never the EOF our own socket teardown would
        look like to the splice threads."""
        self._stop.set()
        if self._clean:
            return
        ch = self._ch
        if ch is not None and ch.ref is not None:
            abort_flow(ch)
        elif not self._accepted:
            self._refuse("forwarder_stopped")
        self._abort_host()

    def _tell_manager(self, msg: ForwarderDone) -> None:
        ref = self.system.lookup(self.manager)
        if ref is not None:
            try:
                ref.tell(msg)
            except (ActorStopped, MailboxFull):
                self.table.remove(self.name)

    def _finish(self, error: str | None, up: int = 0, down: int = 0) -> None:
        with contextlib.suppress(ActorStopped, MailboxFull):
            self.ref.tell(ForwarderDone(name=self.name, kind="tcp", bytes_out=up, bytes_in=down, error=error))

    def _refuse(self, reason: str) -> None:
        o = self.open
        ref = self.system.lookup(self.netstack)
        if ref is not None:
            with contextlib.suppress(ActorStopped, MailboxFull):
                ref.tell(ForwardTcpRefuse(client=o.client, client_port=o.client_port, dst=o.dst,
                                          dst_port=o.dst_port, reason=reason))

    def _abort_host(self) -> None:
        with self._lock:
            sock, self._sock = self._sock, None
        if sock is None:
            return
        try:  # linger 0: close sends a RST (the host side sees the reset, not a clean FIN)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        sock.close()

    # -- the flow (own threads) ----------------------------------------------------------------------
    def _run(self) -> None:
        o = self.open
        try:
            sock = socket.create_connection((o.dst, o.dst_port), timeout=self.table.limits.dial_timeout)
        except OSError as e:
            reason = "tcp_connect_timeout" if isinstance(e, TimeoutError) else (
                f"tcp_connect_{errno.errorcode.get(e.errno or 0, 'failed').lower()}")
            self.table.count(reason)
            self._refuse(reason)
            self._accepted = True  # the refusal is sent: on_stop must not send another
            self._finish(reason)
            return
        sock.settimeout(None)
        with self._lock:
            if self._stop.is_set():
                sock.close()
                return
            self._sock = sock
        ref = self.system.lookup(self.netstack)
        try:
            if ref is None:
                raise ActorStopped(self.netstack)
            reply = ref.ask(ForwardTcpAccept(client=o.client, client_port=o.client_port, dst=o.dst,
                                             dst_port=o.dst_port), timeout=5.0)
        except (ActorStopped, AskTimeout, MailboxFull):
            self.table.count("tcp_netstack_unavailable")
            self._finish("netstack unavailable")
            return
        self._accepted = True
        ch = self.registry.claim_flow(reply.flow) if reply.flow is not None else None
        if ch is None:
            self.table.count("tcp_peer_gone")  # the peer reset its SYN while we dialed
            self._finish("peer gone")
            return
        self._ch = ch
        if not ch.wait(ch.connected_ready, _HANDSHAKE) or ch.error is not None or not ch.established:
            self.table.count("tcp_handshake_failed")
            self._finish("handshake failed")
            return
        self.table.count("tcp_forwarded")
        self._splice(sock, ch)

    def _splice(self, sock: socket.socket, ch: FlowChannel) -> None:
        limits = self.table.limits
        splice = Splice(sock, ch, SpliceLimits(buffer=limits.buffer, idle=limits.tcp_idle),
                        count=lambda key, n=1: self.table.count(f"tcp_{key}", n), name=self.name,
                        stop=self._stop)
        error = splice.run()
        if error is None:
            with self._lock:
                self._sock = None
            self._clean = True
        self._finish(error, splice.bytes_out, splice.bytes_in)
