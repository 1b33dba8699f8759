"""A tailnet flow spliced to a host socket: bytes both ways, half-closes carried, resets paired.

Three callers need the same copy loop: the exit node's ``TcpForwarder`` (flow ↔ the destination's host
socket), the app-facing socket bridge (flow ↔ one end of a socketpair the app holds as a real socket)
and the loopback proxies (flow ↔ a local client's connection). Two threads copy, one per direction,
each bounded by one read (``buffer``) plus the flow channel's own limit, so a slow side closes the
other's window: back-pressure, nothing unbounded. A FIN on one side becomes a half-close on the other;
a reset (or ``stop``) ends both; a flow silent for ``idle`` seconds is ended as a reset.

``run`` returns None for a clean end (both FINs carried, the socket closed, the flow closed after what
is queued) or why it ended; on an error the caller resets both sides (it owns the socket and flow).
"""

from __future__ import annotations

import select
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from pytsnet.actors.netstack.channel import FlowChannel
from pytsnet.actors.runtime.errors import ActorStopped, MailboxFull
from pytsnet.messages.netstack import FlowAbort

__all__ = ["Splice", "SpliceLimits", "abort_flow"]

_SLICE = 0.5  # seconds between checks of the stop flag and the idle clock while waiting


@dataclass(frozen=True)
class SpliceLimits:
    buffer: int = 64 * 1024
    """One host-socket read, and one read from the flow."""
    idle: float = 7200.0
    """A flow silent both ways this long is ended (Go relies on TCP keepalive)."""


class _Reset(Exception):
    """One side reset (or must be reset): both sides are torn down."""


def _no_count(key: str, n: int = 1) -> None:
    pass


@dataclass
class Splice:
    """One splice; ``count(key, n)`` hears ``bytes_out`` (flow → socket), ``bytes_in`` (socket →
    flow), ``idle_timeout``, ``reset_by_peer`` (the flow) and ``reset_by_destination`` (the socket)."""

    sock: socket.socket
    ch: FlowChannel
    limits: SpliceLimits = field(default_factory=SpliceLimits)
    count: Callable[..., None] = _no_count
    name: str = "splice"
    stop: threading.Event = field(default_factory=threading.Event)
    bytes_out: int = 0
    bytes_in: int = 0
    _last: float = field(default_factory=time.monotonic)

    def run(self) -> str | None:
        """Copy until both directions end (blocks; the second direction runs on its own thread).
        None: both ends finished cleanly, and the socket and flow are closed; else the first error
        (the caller resets what is still open)."""
        result: dict[str, str | None] = {}
        up = threading.Thread(target=self._guard, args=(self._up, result, "up"), name=f"{self.name}-up",
                              daemon=True)
        up.start()
        self._guard(self._down, result, "down")
        up.join()
        errors = [v for v in result.values() if v is not None]
        if errors:
            return errors[0]
        self.sock.close()
        self.ch.close()  # every byte was read: a FIN after what is queued, not an abort
        return None

    def _guard(self, fn: Callable[[], None], result: dict[str, str | None], side: str) -> None:
        try:
            fn()
            result[side] = None
        except (_Reset, OSError) as e:
            result[side] = f"{side}: {e}"
            self.stop.set()

    def _idle(self) -> bool:
        return time.monotonic() - self._last > self.limits.idle

    def _up(self) -> None:
        """Flow → socket: the bytes the flow's peer sent, then its FIN as our write shutdown."""
        ch, sock = self.ch, self.sock
        while True:
            if self.stop.is_set():
                raise _Reset("stopped")
            if not ch.wait(ch.recv_ready, _SLICE):
                if self._idle():
                    self.count("idle_timeout")
                    raise _Reset("idle")
                continue
            try:
                data = ch.try_recv(self.limits.buffer)
            except ConnectionError as e:
                self.count("reset_by_peer")
                raise _Reset(f"tailnet side reset: {e}") from None
            if data is None:
                continue
            if not data:
                sock.shutdown(socket.SHUT_WR)
                return
            self._last = time.monotonic()
            sock.sendall(data)
            self.bytes_out += len(data)
            self.count("bytes_out", len(data))

    def _down(self) -> None:
        """Socket → flow: the socket's bytes, then its FIN as the flow's."""
        ch, sock = self.ch, self.sock
        while True:
            if self.stop.is_set():
                raise _Reset("stopped")
            ready, _, _ = select.select([sock], [], [], _SLICE)
            if not ready:
                if self._idle():
                    self.count("idle_timeout")
                    raise _Reset("idle")
                continue
            try:
                data = sock.recv(self.limits.buffer)
            except ConnectionResetError:
                self.count("reset_by_destination")
                raise _Reset("host side reset") from None
            if not data:
                if self.stop.is_set():
                    raise _Reset("stopped")  # our own teardown, not the other side's FIN
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
                    if self.stop.is_set():
                        raise _Reset("stopped")
                    ch.wait(ch.send_ready, _SLICE)
                    continue
                view = view[n:]
            self.bytes_in += len(data)
            self.count("bytes_in", len(data))


def abort_flow(ch: FlowChannel, attempts: int = 50) -> None:
    """Reset the flow (an RST to its peer): the flow actor is told to abort; a mailbox full of the
    peer's segments is retried briefly (bounded), so a busy flow is still reset rather than left open."""
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
