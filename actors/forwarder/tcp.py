"""``TcpForwarder``: one forwarded TCP connection, the peer's tailnet flow spliced to a host socket.

As Go's netstack (``forwardTCP``), the destination is dialed first, through a host socket in the
node's network namespace (the host's stack picks the source address: source NAT by the host), and
only then is the peer's handshake completed; a failed dial resets the peer's SYN. Then two threads
copy bytes, each bounded by one read (``ForwardLimits.buffer``) plus the tailnet channel's limit, so
a slow side closes the other's window (back-pressure, nothing unbounded). A FIN on one side becomes
a half-close on the other; a reset on one side resets the other; a flow idle past
``ForwardLimits.tcp_idle`` is reset on both.

The actor itself only owns the lifetime: its threads tell it ``ForwarderDone`` when the flow ends,
and killing it (or its crash) resets both sides in ``on_stop`` — one flow's fault ends that flow.
"""

from __future__ import annotations

import contextlib
import errno
import select
import socket
import struct
import threading
import time
from typing import TYPE_CHECKING

from pytsnet.actors.netstack.channel import FlowChannel
from pytsnet.actors.runtime import Actor, ActorStopped, AskTimeout, MailboxFull, StopReason, handles
from pytsnet.actors.runtime.logs import subsystem_logger
from pytsnet.messages.forwarder import (
    ForwarderDone,
    ForwardTcpAccept,
    ForwardTcpOpen,
    ForwardTcpRefuse,
)
from pytsnet.messages.netstack import FlowAbort

if TYPE_CHECKING:
    from pytsnet.actors.forwarder.table import ForwardTable
    from pytsnet.actors.netstack.channel import FlowRegistry
    from pytsnet.actors.runtime import ActorSystem

log = subsystem_logger("forwarder")

__all__ = ["TcpForwarder"]

_SLICE = 0.5  # seconds between checks of the stop flag and the idle clock while waiting
_HANDSHAKE = 10.0  # the peer must finish its handshake within this after our SYN-ACK


class _Reset(Exception):
    """One side reset (or must be reset): both sides are torn down."""


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
        self._last = time.monotonic()
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
            _abort_flow(ch)
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
        result: dict[str, int | str | None] = {}
        up = threading.Thread(target=self._guard, args=(self._up, sock, ch, result, "up"),
                              name=f"{self.name}-up", daemon=True)
        up.start()
        self._guard(self._down, sock, ch, result, "down")
        up.join()
        errors = [v for k, v in result.items() if k.endswith("error") and v is not None]
        if errors:
            self._finish(str(errors[0]))
            return
        with self._lock:
            self._sock = None
        sock.close()
        ch.close()  # every byte was read: a FIN after what is queued, not an abort
        self._clean = True
        self._finish(None)

    def _guard(self, fn: object, sock: socket.socket, ch: FlowChannel, result: dict[str, int | str | None],
               side: str) -> None:
        try:
            fn(sock, ch)  # type: ignore[operator]
            result[f"{side}_error"] = None
        except (_Reset, OSError) as e:
            result[f"{side}_error"] = f"{side}: {e}"
            self._stop.set()

    def _idle(self) -> bool:
        return time.monotonic() - self._last > self.table.limits.tcp_idle

    def _up(self, sock: socket.socket, ch: FlowChannel) -> None:
        """Tailnet -> host: bytes the peer sent, then its FIN as our write shutdown."""
        while True:
            if self._stop.is_set():
                raise _Reset("stopped")
            if not ch.wait(ch.recv_ready, _SLICE):
                if self._idle():
                    self.table.count("tcp_idle_timeout")
                    raise _Reset("idle")
                continue
            try:
                data = ch.try_recv(self.table.limits.buffer)
            except ConnectionError as e:
                self.table.count("tcp_reset_by_peer")
                raise _Reset(f"tailnet side reset: {e}") from None
            if data is None:
                continue
            if not data:
                sock.shutdown(socket.SHUT_WR)
                return
            self._last = time.monotonic()
            sock.sendall(data)
            self.table.count("tcp_bytes_out", len(data))

    def _down(self, sock: socket.socket, ch: FlowChannel) -> None:
        """Host -> tailnet: the destination's bytes, then its FIN as the flow's."""
        while True:
            if self._stop.is_set():
                raise _Reset("stopped")
            ready, _, _ = select.select([sock], [], [], _SLICE)
            if not ready:
                if self._idle():
                    self.table.count("tcp_idle_timeout")
                    raise _Reset("idle")
                continue
            try:
                data = sock.recv(self.table.limits.buffer)
            except ConnectionResetError:
                self.table.count("tcp_reset_by_destination")
                raise _Reset("host side reset") from None
            if not data:
                if self._stop.is_set():
                    raise _Reset("stopped")  # our own teardown, not the destination's FIN
                ch.send_eof()
                return
            self._last = time.monotonic()
            view = memoryview(data)
            while view:
                try:
                    n = ch.try_send(view)
                except (ConnectionError, BrokenPipeError) as e:
                    raise _Reset(f"tailnet side gone: {e}") from None
                if n is None:
                    if self._stop.is_set():
                        raise _Reset("stopped")
                    ch.wait(ch.send_ready, _SLICE)
                    continue
                view = view[n:]
            self.table.count("tcp_bytes_in", len(data))


def _abort_flow(ch: FlowChannel, attempts: int = 50) -> None:
    """Tell the flow actor to reset; a mailbox full of the peer's segments is retried briefly
    (bounded), so a busy flow is still reset rather than left open."""
    for _ in range(attempts):
        if ch.ref is None:
            return
        try:
            ch.ref.tell(FlowAbort())
            return
        except ActorStopped:
            return  # it ended on its own
        except MailboxFull:
            time.sleep(0.01)
