"""A tailnet flow spliced to a host socket: bytes both ways, half-closes carried, resets paired.

Three callers need the same copy loop: the exit node's ``TcpForwarder`` (flow ↔ the destination's host
socket), the app-facing socket bridge (flow ↔ one end of a socketpair the app holds as a real socket)
and the loopback proxies (flow ↔ a local client's connection). One thread copies both directions: a
selector waits on the socket and on the flow channel's wake-up (an eventfd its ``notify`` signals). Each
direction holds at most one read (``buffer``) plus the flow channel's own limit, and reads no more until
that is written, so a slow side closes the other's window: back-pressure, nothing unbounded. A FIN on
one side becomes a half-close on the other; a reset (or ``stop``) ends both, but when a write to the
socket fails, what the socket still holds from before goes to the flow first (the peer gets a host
app's last answer, then the reset); a flow silent for ``idle`` seconds is ended as a reset.

``run`` returns None for a clean end (both FINs carried, the socket closed, the flow closed after what
is queued) or why it ended; on an error the caller resets both sides (it owns the socket and flow).
"""

from __future__ import annotations

import contextlib
import os
import selectors
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
    """One side reset (or must be reset): both sides are torn down. Args: why, and which direction
    (``up``: flow → socket, ``down``: socket → flow)."""


def _no_count(key: str, n: int = 1) -> None:
    pass


class _ChannelWake:
    """The flow channel's readiness as a file descriptor a selector can wait on: an eventfd the
    channel's ``notify`` (a byte queued, window room, EOF, an error, its end) signals.

    Registered as one of the channel's async waiters (``Waitable.wait_async``'s hook: a callback
    the channel calls, outside its lock, on every ``notify``). The eventfd is written only while the
    splice sleeps (``arm`` … ``disarm``): a notify while it is busy only marks ``pending``, which
    ``arm`` answers by going round again instead of sleeping, so no wake-up is lost and a busy flow
    costs no syscall per notify. A callback already copied by a ``notify`` may still run after
    ``close``: it then writes nothing (the fd may be another file's by then)."""

    def __init__(self, ch: FlowChannel) -> None:
        self.fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._ch = ch
        self._lock = threading.Lock()
        self._closed = False
        self._pending = False  # a notify since the last ``disarm``
        self._waiting = False  # between ``arm`` and ``disarm``: notifies write the eventfd
        self._written = False
        with ch.lock:
            if ch._async is None:
                ch._async = set()
            ch._async.add(self.signal)

    def signal(self) -> None:
        with self._lock:
            self._pending = True
            if self._waiting and not self._written and not self._closed:
                self._written = True
                os.eventfd_write(self.fd, 1)

    def arm(self) -> bool:
        """Before sleeping: False if a notify came since the last ``disarm`` (go round again)."""
        with self._lock:
            if self._pending:
                self._pending = False
                return False
            self._waiting = True
            return True

    def disarm(self) -> None:
        """After sleeping, before the next attempts (which see everything notified until now)."""
        with self._lock:
            self._waiting = self._pending = False
            if self._written:
                self._written = False
                with contextlib.suppress(BlockingIOError):
                    os.eventfd_read(self.fd)

    def close(self) -> None:
        ch = self._ch
        with ch.lock:
            if ch._async is not None:
                ch._async.discard(self.signal)
                if not ch._async:
                    ch._async = None
        with self._lock:
            self._closed = True
            os.close(self.fd)


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
        """Copy until both directions end (blocks the calling thread, the only one it uses).
        None: both ends finished cleanly, and the socket and flow are closed; else the first error
        (the caller resets what is still open)."""
        timeout = self.sock.gettimeout()
        wake = _ChannelWake(self.ch)
        try:
            self.sock.setblocking(False)
            with selectors.DefaultSelector() as sel:
                self._loop(sel, wake)
        except _Reset as e:
            self.stop.set()
            return f"{e.args[1]}: {e.args[0]}"
        except (OSError, ValueError) as e:  # ValueError: the socket was closed under us (fileno -1)
            self.stop.set()
            return f"splice: {e}"
        finally:
            wake.close()
            with contextlib.suppress(OSError):
                self.sock.settimeout(timeout)  # a caller's socket back as it was (unless closed)
        self.sock.close()
        self.ch.close()  # every byte was read: a FIN after what is queued, not an abort
        return None

    def _loop(self, sel: selectors.BaseSelector, wake: _ChannelWake) -> None:
        """Both directions on one thread: each turn moves what it can without blocking, then waits on
        the socket (readable when flow room is free, writable when bytes wait for it) and the flow's
        wake-up (``_ChannelWake``: a notify during the attempts makes the turn repeat, one while
        asleep wakes it), so no readiness is lost."""
        ch, sock, buffer = self.ch, self.sock, self.limits.buffer
        up: memoryview | None = None  # flow bytes not yet written to the socket
        down: memoryview | None = None  # socket bytes not yet taken by the flow
        up_open = down_open = True  # flow → socket until the flow's FIN; socket → flow until its EOF
        sel.register(wake.fd, selectors.EVENT_READ)
        interest = 0
        while up_open or down_open:
            if self.stop.is_set():
                raise _Reset("stopped", "up" if up_open else "down")
            moved = False
            # flow → socket
            while up_open:
                if up is None:
                    try:
                        data = ch.try_recv(buffer)
                    except ConnectionError as e:
                        self.count("reset_by_peer")
                        raise _Reset(f"tailnet side reset: {e}", "up") from None
                    if data is None:
                        break
                    if not data:
                        sock.shutdown(socket.SHUT_WR)
                        up_open = False
                        break
                    up = memoryview(data)
                try:
                    n = sock.send(up)
                except BlockingIOError:
                    break
                except OSError as e:
                    self._salvage(down)
                    raise _Reset(str(e), "up") from None
                moved = True
                self.bytes_out += n
                self.count("bytes_out", n)
                up = up[n:] or None
            # socket → flow
            while down_open:
                if down is None:
                    try:
                        data = sock.recv(buffer)
                    except BlockingIOError:
                        break
                    except ConnectionResetError:
                        self.count("reset_by_destination")
                        raise _Reset("host side reset", "down") from None
                    except OSError as e:
                        raise _Reset(str(e), "down") from None
                    if not data:
                        if self.stop.is_set():
                            raise _Reset("stopped", "down")  # our own teardown, not the other side's FIN
                        ch.send_eof()
                        down_open = False
                        break
                    down = memoryview(data)
                try:
                    taken = ch.try_send(down)
                except (ConnectionError, BrokenPipeError) as e:
                    raise _Reset(f"tailnet side gone: {e}", "down") from None
                if taken is None:
                    break
                moved = True
                self.bytes_in += taken
                self.count("bytes_in", taken)
                down = down[taken:] or None
            if moved:
                self._last = time.monotonic()
            want = ((selectors.EVENT_READ if down_open and down is None else 0)
                    | (selectors.EVENT_WRITE if up is not None else 0))
            if want != interest:
                if not interest:
                    sel.register(sock, want)
                elif not want:
                    sel.unregister(sock)
                else:
                    sel.modify(sock, want)
                interest = want
            if not (up_open or down_open):
                return
            if not wake.arm():
                continue  # the flow notified during this turn's attempts: try again before sleeping
            ready = sel.select(_SLICE)
            wake.disarm()
            if not ready and self._idle():
                self.count("idle_timeout")
                raise _Reset("idle", "up" if up_open else "down")

    def _salvage(self, down: memoryview | None) -> None:
        """The host side is gone (a write to it failed), but what it wrote before it went is still
        queued on our end: hand the flow what it takes now, so that the reset comes after it, as a
        kernel socket's RST comes after the data it sent (an HTTP server answering 501 to a body it
        never read, then closing). Bounded by the flow's free room; nothing waits."""
        ch, sock = self.ch, self.sock
        with contextlib.suppress(OSError, ConnectionError):  # BrokenPipeError included
            while True:
                if down is None:
                    data = sock.recv(self.limits.buffer)  # BlockingIOError, or the reset, when drained
                    if not data:
                        return
                    down = memoryview(data)
                taken = ch.try_send(down)
                if not taken:
                    return
                self.bytes_in += taken
                self.count("bytes_in", taken)
                down = down[taken:] or None

    def _idle(self) -> bool:
        return time.monotonic() - self._last > self.limits.idle


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
