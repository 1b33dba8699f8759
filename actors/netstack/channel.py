"""Thread-safe, bounded hand-over points between netstack actors and application code.

A ``FlowChannel`` sits between one TcpFlowActor and its app-side stream. Its ``rx`` and ``tx`` are
the connection's own receive and send buffers (issue 14: one buffer per direction per flow, handed
to the sans-IO ``TcpConnection`` with ``use_buffers``): in-order payload goes from the segment into
``rx`` and the app reads it from there; the app's writes land in ``tx``, which retransmissions are
cut from. ``rx`` is bounded by the advertised window (computed from its length, so a slow reader
closes the window), ``tx`` by the send buffer size: backpressure, never unbounded buffering.

Locking: the app side calls ``rx.take``/``tx.write`` with ``lock`` held; the connection (on the flow
actor's thread) calls the buffers' other methods, which take ``lock`` themselves
(``ChannelRecvBuffer``, ``ChannelSendBuffer``), so the flow actor never calls the connection while
holding ``lock``. Lengths are read without it: the one writer of each side only grows what the
other side sees, so a stale length is a conservative one.
Waiting is either blocking (``wait``) or async (``wait_async``, cancellation-safe: nothing is
consumed until the condition holds, and the waiter is unregistered however the await ends).
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pytsnet.actors.runtime.condition import LazyCondition
from pytsnet.actors.runtime.errors import ActorStopped, MailboxFull
from pytsnet.actors.runtime.waker import ThreadWaker
from pytsnet.messages.netstack import FlowAppWake, ListenerWake
from pytsnet.netstack.tcp.recvbuf import RecvBuffer
from pytsnet.netstack.tcp.sendbuf import SendBuffer

if TYPE_CHECKING:
    from pytsnet.actors.netstack.fallback import FallbackChannel
    from pytsnet.actors.runtime.ref import ActorRef
    from pytsnet.netstack.interface import FlowKey

__all__ = ["ChannelRecvBuffer", "ChannelSendBuffer", "DatagramChannel", "FlowAborted", "FlowChannel",
           "FlowCrashed", "FlowRecord", "FlowRegistry", "ListenerChannel", "Waitable"]


class FlowCrashed(ConnectionResetError):
    """The flow's actor died; the connection was reset (an RST went to the peer)."""


class FlowAborted(ConnectionAbortedError):
    """The device was closed with this connection open; it was reset (an RST went to the peer)."""


class Waitable:
    """A lock, a condition and async wake-ups: what every channel (and a rebindable handle) waits on."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        # Both made lean for many idle flows: no preallocated waiter deque, no empty set.
        self._cond = LazyCondition(self.lock)
        self._async: set[Callable[[], None]] | None = None  # async waiters, while there are any

    def notify(self) -> None:
        """Wake every waiter (call without holding the lock)."""
        with self.lock:
            self._cond.notify_all()
            callbacks = list(self._async) if self._async else []
        for cb in callbacks:
            cb()

    def wait(self, ready: Callable[[], bool], timeout: float | None) -> bool:
        """Block until ``ready()`` (evaluated under the lock) holds; False on timeout."""
        end = None if timeout is None else time.monotonic() + timeout
        with self.lock:
            while not ready():
                left = None if end is None else end - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._cond.wait(left)
            return True

    async def wait_async(self, ready: Callable[[], bool]) -> None:
        """Wait in the caller's event loop (asyncio or trio) until ``ready()`` holds; cancellable."""
        while True:
            waker = ThreadWaker()
            with self.lock:
                if ready():
                    return
                if self._async is None:
                    self._async = set()
                self._async.add(waker.set)
            try:
                await waker.wait()
            finally:
                with self.lock:
                    if self._async is not None:
                        self._async.discard(waker.set)
                        if not self._async:
                            self._async = None


def _tell(ref: ActorRef | None, msg: Any) -> bool:
    if ref is None:
        return False
    try:
        ref.tell(msg)
    except (ActorStopped, MailboxFull):
        return False  # the actor is gone (the channel carries its error) or busy
    return True


class ChannelRecvBuffer(RecvBuffer):
    """The flow's receive buffer: the connection pushes under the channel's lock; the app takes with
    it held (``FlowChannel.try_recv``)."""

    __slots__ = ("_lock",)

    def __init__(self, lock: threading.Lock) -> None:
        super().__init__()
        self._lock = lock

    def push(self, data: bytes | bytearray | memoryview) -> None:
        with self._lock:
            self._buf += data

    def discard(self) -> None:
        with self._lock:
            self._buf.clear()


class ChannelSendBuffer(SendBuffer):
    """The flow's send buffer: the app writes with the channel's lock held (``FlowChannel.try_send``);
    the connection's reads, acknowledgments and release take it."""

    __slots__ = ("_lock",)

    def __init__(self, lock: threading.Lock, capacity: int) -> None:
        super().__init__(capacity)
        self._lock = lock

    def read(self, offset: int, length: int) -> bytes:
        i = offset - self.start  # ``start`` moves only in ``ack_to``, on the caller's own thread
        with self._lock:  # once per segment sent: inlined, not through super()
            return bytes(self._buf[i:i + length])

    def ack_to(self, offset: int) -> int:
        with self._lock:
            return super().ack_to(offset)

    def release(self) -> None:
        with self._lock:
            super().release()


class FlowChannel(Waitable):
    """One TCP connection's app-side state; the actor and the app each touch it under ``lock``.

    ``send_capacity`` bounds ``tx`` until a connection adopts the buffers (it sets its own size)."""

    def __init__(self, name: str, local: tuple[str, int], remote: tuple[str, int],
                 send_capacity: int) -> None:
        super().__init__()
        self.name = name
        self.local = local
        self.remote = remote
        self.ref: ActorRef | None = None
        self.rx = ChannelRecvBuffer(self.lock)
        self.tx = ChannelSendBuffer(self.lock, send_capacity)
        # Unread bytes at or below which a read wakes the flow for a window update (the connection's
        # ``read_wake_level``, published by the flow after each pump); -1: no read needs to.
        self.rx_wake_level = -1
        self.rx_eof = False
        self.tx_eof = False
        self.app_closed = False
        self.established = False
        self.finished = False  # the flow actor is gone
        self.error: BaseException | None = None
        self._wake_pending = False

    # -- app side (non-blocking; None means: wait and retry) -----------------------------------------
    def try_recv(self, max_bytes: int) -> bytes | None:
        wake = False
        with self.lock:
            rx = self.rx
            if rx:
                data = rx.take(max_bytes)
                if len(rx) <= self.rx_wake_level:  # this read opened the window by enough
                    wake = self.claim_wake()
            elif self.rx_eof:
                data = b""
            elif self.error is not None:
                raise self.error
            elif self.finished:
                data = b""
            else:
                return None
        if wake:
            self.wake()
        return data

    def recv_ready(self) -> bool:
        return bool(self.rx) or self.rx_eof or self.error is not None or self.finished

    def try_send(self, data: bytes | memoryview) -> int | None:
        with self.lock:
            if self.error is not None:
                raise self.error
            if self.tx_eof or self.app_closed or self.finished:
                raise BrokenPipeError("send after shutdown or close")
            n = self.tx.write(data)  # straight into the buffer the connection sends from
            if n <= 0:
                return None
            wake = self.claim_wake()
        if wake:
            self.wake()
        return n

    def send_ready(self) -> bool:
        return (self.tx.free > 0 or self.error is not None or self.finished
                or self.tx_eof or self.app_closed)

    def connected_ready(self) -> bool:
        return self.established or self.error is not None or self.finished

    def drained_ready(self) -> bool:
        """The peer acknowledged every byte written (the send buffer holds unacknowledged bytes too)."""
        return not self.tx or self.error is not None or self.finished

    def send_eof(self) -> None:
        with self.lock:
            if self.tx_eof or self.app_closed:
                return
            self.tx_eof = True
            wake = self.claim_wake()
        if wake:
            self.wake()

    def close(self) -> None:
        """App close: unread data makes it an abort (as Linux does), else a FIN after queued data."""
        with self.lock:
            if self.app_closed:
                return
            self.app_closed = True
            wake = self.claim_wake()
        if wake:
            self.wake()
        self.notify()

    def wake(self) -> None:
        """Tell the flow to pump (a write, a read that opened the window, a close); after ``claim_wake``."""
        if not _tell(self.ref, FlowAppWake()):
            with self.lock:
                self._wake_pending = False

    def claim_wake(self) -> bool:
        """Under ``lock``: True if the caller must ``wake`` the flow (one wake in flight at a time)."""
        if self._wake_pending or self.finished:
            return False
        self._wake_pending = True
        return True

    # -- actor side ----------------------------------------------------------------------------------
    def woken(self) -> None:
        """Called by the actor (under ``lock``) when it starts a pump."""
        self._wake_pending = False


class ListenerChannel(Waitable):
    """Established connections (their channels) waiting for the app's ``accept``; bounded by backlog."""

    def __init__(self, port: int, backlog: int, netstack: ActorRef) -> None:
        super().__init__()
        self.port = port
        self.backlog = backlog
        self.netstack = netstack
        self.ready: collections.deque[FlowChannel] = collections.deque()
        self.closed = False

    def has_room(self) -> bool:
        return len(self.ready) < self.backlog

    def try_accept(self) -> FlowChannel | None:
        with self.lock:
            if self.closed:
                raise OSError("listener closed")
            if not self.ready:
                return None
            ch = self.ready.popleft()
        _tell(self.netstack, ListenerWake(port=self.port))
        return ch

    def accept_ready(self) -> bool:
        return bool(self.ready) or self.closed


class DatagramChannel(Waitable):
    """A bound UDP port's received datagrams, bounded in count (overflow drops the newest)."""

    def __init__(self, port: int, limit: int) -> None:
        super().__init__()
        self.port = port
        self.limit = limit
        self.queue: collections.deque[tuple[bytes, tuple[str, int]]] = collections.deque()
        self.dropped = 0
        self.closed = False

    def push(self, data: bytes, source: tuple[str, int]) -> None:
        with self.lock:
            if len(self.queue) >= self.limit:
                self.dropped += 1
                return
            self.queue.append((data, source))
        self.notify()

    def try_recvfrom(self) -> tuple[bytes, tuple[str, int]] | None:
        with self.lock:
            if self.closed:
                raise OSError("UDP socket closed")
            return self.queue.popleft() if self.queue else None

    def recv_ready(self) -> bool:
        return bool(self.queue) or self.closed


_MAX_UNCLAIMED = 1024


@dataclass(frozen=True)
class FlowRecord:
    """One live flow as the demultiplexer needs it: its name, 4-tuple and actor. Written once when
    the flow is spawned and never changed, so a restarted NetstackActor can route to the flows that
    outlived the incarnation that made them without trusting anything that incarnation mutated."""

    name: str
    key: FlowKey
    ref: ActorRef
    channel: FlowChannel


class FlowRegistry:
    """The netstack's hand-over table: flow name -> record, port -> listener/UDP channel.

    Written by the NetstackActor (any incarnation: the registry is in its spawn arguments, so it
    outlives a restart and is what the next incarnation rebuilds its Stack from); read by the
    app-facing ``Netstack`` to pick up the channel a reply named."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._flows: dict[str, FlowRecord] = {}
        self._listeners: dict[int, ListenerChannel] = {}
        self._udp: dict[int, DatagramChannel] = {}
        # Dialed flows wait here until the dialer claims them: a peer that refuses at once can end
        # the flow (and pop it from _flows) before the dialer's ask reply is even read.
        self._unclaimed: dict[str, FlowChannel] = {}
        self.fallback: FallbackChannel | None = None  # 20d: SYNs for the app's fallback handlers/services
        self.fallback_on = False  # 20d: the app has fallback TCP handlers
        self.service_ips: dict[str, tuple[str, ...]] = {}  # 20d: services we host -> VIPs

    def add_flow(self, record: FlowRecord, *, dialed: bool = False) -> None:
        with self._lock:
            self._flows[record.name] = record
            if dialed:
                if len(self._unclaimed) >= _MAX_UNCLAIMED:  # dialers that timed out never claim
                    del self._unclaimed[next(iter(self._unclaimed))]
                self._unclaimed[record.name] = record.channel

    def claim_flow(self, name: str) -> FlowChannel | None:
        """Hand a dialed flow to its dialer, even if it already ended (its error is on the channel)."""
        with self._lock:
            return self._unclaimed.pop(name, None)

    def pop_flow(self, name: str) -> FlowRecord | None:
        with self._lock:
            return self._flows.pop(name, None)

    def flows(self) -> list[FlowRecord]:
        with self._lock:
            return list(self._flows.values())

    def set_listener(self, port: int, ch: ListenerChannel | None) -> None:
        with self._lock:
            if ch is None:
                self._listeners.pop(port, None)
            else:
                self._listeners[port] = ch

    def listener(self, port: int) -> ListenerChannel | None:
        with self._lock:
            return self._listeners.get(port)

    def listeners(self) -> list[ListenerChannel]:
        with self._lock:
            return list(self._listeners.values())

    def set_udp(self, port: int, ch: DatagramChannel | None) -> None:
        with self._lock:
            if ch is None:
                self._udp.pop(port, None)
            else:
                self._udp[port] = ch

    def udp(self, port: int) -> DatagramChannel | None:
        with self._lock:
            return self._udp.get(port)

    def udp_sockets(self) -> list[DatagramChannel]:
        with self._lock:
            return list(self._udp.values())

    def close_endpoints(self) -> None:
        """The netstack is gone for good: every listener and UDP socket's waiters see it closed.
        (Flows end by themselves: each flow actor's stop resets its connection.)"""
        with self._lock:
            listeners, self._listeners = list(self._listeners.values()), {}
            sockets, self._udp = list(self._udp.values()), {}
            self._flows.clear()
        for ch in listeners:
            with ch.lock:
                ch.closed = True
            ch.notify()
        for dch in sockets:
            with dch.lock:
                dch.closed = True
            dch.notify()
