"""The write side of one DERP connection, shared by its ``DerpClient`` and the WireGuard engine.

Issue 14's DERP send lane: the engine framed a DERP-only peer's burst into a ``DerpSends`` for the
region's client actor, which framed it again and wrote it (a mailbox hop and a thread wake-up per
burst, on both nodes: the receiver's ACKs go the same way). The client now publishes its connected
plain-TCP socket's ``DerpWriter`` here under its actor name, and the engine frames the burst and
writes it itself (``send``) when the socket takes it at once. Writes never block the engine: the
first that the socket does not take whole leaves its rest in the writer's bounded ``pending`` buffer
and the client is woken to write it (``wake``, then ``flush`` on its own thread, blocking as before);
until that is done every other write is appended behind it, so frames stay in order whoever writes
them, and a write that would take the buffer over ``MAX_PENDING_BYTES`` is refused (the caller
counts it as dropped, as a full client mailbox was). The client's own frames (ClientInfo, pongs,
NotePreferred, sends while the lane is off) go through the same writer. TLS connections are not
published (one ``SSLSocket`` must not be written from two threads): their bursts take the mailbox.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Sequence

from pytsnet.actors.runtime import ActorRef
from pytsnet.wire.derp.handshake import frame_send_packets

__all__ = ["MAX_PENDING_BYTES", "DerpWriter", "publish", "send", "withdraw"]

MAX_PENDING_BYTES = 1 << 20
"""Bytes a connection may hold unwritten before the lane refuses bursts (~800 full-size packets)."""

_writers: dict[ActorRef, DerpWriter] = {}
_lock = threading.Lock()


class DerpWriter:
    """Ordered, thread-safe writes to one DERP connection's socket (see the module docstring)."""

    def __init__(self, sock: socket.socket, wake: Callable[[], None]) -> None:
        self._sock = sock
        self._wake = wake
        self._lock = threading.Lock()
        self._pending = bytearray()
        self._flushing = False  # the client writes ``pending``: every write goes behind it
        self.failed: OSError | None = None
        self.writes = 0  # bursts the engine wrote (the client's idle-close clock counts them)
        self.bytes_out: dict[str, int] = {}  # per peer, written by the engine's thread only
        self.refused = 0

    def send(self, peer: str, key_raw: bytes, packets: Sequence[bytes | bytearray]) -> int | None:
        """The engine's burst to ``peer``: the number of packets refused (0: all written or queued
        in order), or None if the connection failed (the caller tells the client instead)."""
        out = bytearray()
        n, skipped = frame_send_packets(out, key_raw, packets)
        wake = False
        with self._lock:
            if self.failed is not None:
                return None
            if self._pending or self._flushing:
                if len(self._pending) + len(out) > MAX_PENDING_BYTES:
                    self.refused += len(packets)
                    return len(packets)
                self._pending += out
            else:
                try:
                    sent = self._sock.send(out, socket.MSG_DONTWAIT)
                except (BlockingIOError, InterruptedError):
                    sent = 0
                except OSError as e:
                    self.failed = e
                    return None
                if sent < len(out):
                    self._pending += memoryview(out)[sent:]
                    self._flushing = wake = True
        if wake:
            self._wake()
        self.writes += 1
        self.bytes_out[peer] = self.bytes_out.get(peer, 0) + n
        return skipped

    def write(self, data: bytes) -> None:
        """The client's own bytes, behind everything written so far; then ``flush`` (blocking).
        Raises the socket's ``OSError``."""
        if data:
            with self._lock:
                if self.failed is not None:
                    raise self.failed
                self._pending += data
                self._flushing = True
        self.flush()

    def flush(self) -> None:
        """Client thread: write ``pending`` until it is empty (blocking). Raises the socket's error."""
        while True:
            with self._lock:
                if self.failed is not None:
                    self._flushing = False
                    raise self.failed
                if not self._pending:
                    self._flushing = False
                    return
                chunk = bytes(self._pending)
                self._pending.clear()
                self._flushing = True
            try:
                self._sock.sendall(chunk)
            except OSError as e:
                with self._lock:
                    self.failed = e
                    self._flushing = False
                raise

    def fail(self, e: OSError) -> None:
        """The connection is closing: refuse every later write."""
        with self._lock:
            self.failed = e
            self._pending.clear()


def publish(owner: ActorRef, writer: DerpWriter) -> None:
    """The DERP client ``owner`` (its ref is stable across restarts) is connected: the engine may
    write on ``writer``."""
    with _lock:
        _writers[owner] = writer


def withdraw(owner: ActorRef, writer: DerpWriter) -> None:
    """``owner`` closes ``writer``'s connection; a newer connection's writer is left alone."""
    with _lock:
        if _writers.get(owner) is writer:
            del _writers[owner]


def send(owner: ActorRef, peer: str, key_raw: bytes, packets: Sequence[bytes | bytearray]) -> int | None:
    """Write a burst on DERP client ``owner``'s connection: packets refused, or None when there is no
    published connection (TLS, not connected, closing) and the caller tells the client instead."""
    w = _writers.get(owner)
    if w is None:
        return None
    return w.send(peer, key_raw, packets)
