"""``UdpForwarder`` and ``EchoForwarder``: one forwarded UDP 4-tuple or ICMP echo stream each.

A UDP flow gets its own connected host socket (the host NATs it; replies from the destination
arrive on it and go back to the peer as packets from that destination). It ends after Go's idle
timeout (``forwardUDP``: 2 minutes, 30 s for DNS on port 53). ICMP echo uses an unprivileged ping
socket (``SOCK_DGRAM``/``IPPROTO_ICMP``): the kernel allows it only for groups in
``net.ipv4.ping_group_range``; where it refuses, the request is dropped and counted. The kernel
rewrites the echo identifier to the socket's, so the reply is re-stamped with the peer's.
"""

from __future__ import annotations

import select
import socket
import threading
import time
from typing import TYPE_CHECKING

from pytsnet.actors.runtime import Actor, ActorStopped, MailboxFull, StopReason, handles
from pytsnet.messages.forwarder import (
    ForwardEchoIn,
    ForwardEchoOut,
    ForwarderDone,
    ForwardIdle,
    ForwardUdpIn,
    ForwardUdpOut,
)

if TYPE_CHECKING:
    from pytsnet.actors.forwarder.table import ForwardTable
    from pytsnet.actors.runtime import ActorSystem, TimerHandle
    from pytsnet.messages.base import Message

__all__ = ["EchoForwarder", "UdpForwarder"]

_SLICE = 0.5
_ICMP_ECHO_REQUEST, _ICMPV6_ECHO_REQUEST = 8, 128


def _connected_datagram_socket(dst: str, port: int, proto_v4: int, proto_v6: int) -> socket.socket:
    """A non-blocking datagram socket connected to ``dst`` (so the kernel filters replies by source)."""
    v6 = ":" in dst
    family = socket.AF_INET6 if v6 else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM, proto_v6 if v6 else proto_v4)
    try:
        sock.connect((dst, port))
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


class _DatagramForwarder(Actor):
    """A host datagram socket, a reader thread, an idle timer; subclasses say what goes in and out."""

    kind = ""

    def __init__(self, system: ActorSystem, netstack: str, table: ForwardTable, manager: str,
                 idle: float) -> None:
        self.system = system
        self.netstack = netstack
        self.table = table
        self.manager = manager
        self.idle = idle
        self._sock: socket.socket | None = None
        self._stop = threading.Event()
        self._last = time.monotonic()
        self._timer: TimerHandle | None = None

    def open_socket(self) -> socket.socket:
        raise NotImplementedError

    def reply(self, data: bytes) -> Message | None:
        raise NotImplementedError

    def on_start(self) -> None:
        try:
            self._sock = self.open_socket()
        except OSError as e:
            self.table.count(f"{self.kind}_socket_{'denied' if isinstance(e, PermissionError) else 'failed'}")
            self._done(str(e))
            return
        threading.Thread(target=self._read, args=(self._sock,), name=f"{self.name}-rx", daemon=True).start()
        self._timer = self.send_interval(max(0.05, min(self.idle / 4, 5.0)), ForwardIdle())

    def send(self, data: bytes) -> None:
        sock = self._sock
        if sock is None:
            self.table.count(f"{self.kind}_dropped")
            return
        try:
            sock.send(data)
        except BlockingIOError:
            self.table.count(f"{self.kind}_send_full")
            return
        except OSError:
            self.table.count(f"{self.kind}_send_failed")
            return
        self._last = time.monotonic()
        self.table.count(f"{self.kind}_bytes_out", len(data))

    @handles(ForwardIdle)
    def on_idle(self, msg: ForwardIdle) -> None:
        if time.monotonic() - self._last > self.idle:
            self.table.count(f"{self.kind}_idle_timeout")
            self._done(None)

    def _done(self, error: str | None) -> None:
        ref = self.system.lookup(self.manager)
        if ref is not None:
            try:
                ref.tell(ForwarderDone(name=self.name, kind=self.kind, error=error))
            except (ActorStopped, MailboxFull):
                self.table.remove(self.name)
        self.ctx.stop_self()

    def on_stop(self, reason: StopReason) -> None:
        self._stop.set()
        if self._timer is not None:
            self._timer.cancel()
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()

    def _read(self, sock: socket.socket) -> None:
        while not self._stop.is_set():
            try:
                ready, _, _ = select.select([sock], [], [], _SLICE)
                if not ready:
                    continue
                data = sock.recv(65535)
            except ConnectionRefusedError:
                self.table.count(f"{self.kind}_unreachable")  # ICMP port unreachable from the destination
                continue
            except (OSError, ValueError):
                return  # closed by on_stop
            self._last = time.monotonic()
            msg = self.reply(data)
            ref = self.system.lookup(self.netstack)
            if msg is None or ref is None:
                continue
            try:
                ref.tell(msg)
                self.table.count(f"{self.kind}_bytes_in", len(data))
            except (ActorStopped, MailboxFull):
                self.table.count(f"{self.kind}_reply_dropped")


class UdpForwarder(_DatagramForwarder):
    kind = "udp"

    def __init__(self, system: ActorSystem, first: ForwardUdpIn, netstack: str, table: ForwardTable,
                 manager: str) -> None:
        limits = table.limits
        super().__init__(system, netstack, table, manager,
                         limits.dns_idle if first.dst_port == 53 else limits.udp_idle)
        self.flow = first
        self._first: bytes | None = first.data

    def open_socket(self) -> socket.socket:
        return _connected_datagram_socket(self.flow.dst, self.flow.dst_port, 0, 0)

    def on_start(self) -> None:
        super().on_start()
        first, self._first = self._first, None
        if first is not None and self._sock is not None:
            self.table.count("udp_forwarded")
            self.send(first)

    @handles(ForwardUdpIn)
    def on_datagram(self, msg: ForwardUdpIn) -> None:
        self.send(msg.data)

    def reply(self, data: bytes) -> Message | None:
        f = self.flow
        return ForwardUdpOut(client=f.client, client_port=f.client_port, dst=f.dst, dst_port=f.dst_port,
                             data=data)


class EchoForwarder(_DatagramForwarder):
    kind = "echo"

    def __init__(self, system: ActorSystem, first: ForwardEchoIn, netstack: str, table: ForwardTable,
                 manager: str) -> None:
        super().__init__(system, netstack, table, manager, table.limits.echo_idle)
        self.flow = first
        self._first: ForwardEchoIn | None = first

    def open_socket(self) -> socket.socket:
        # an unprivileged ping socket: the kernel owns the identifier and the checksum
        return _connected_datagram_socket(self.flow.dst, 0, socket.IPPROTO_ICMP, socket.IPPROTO_ICMPV6)

    def on_start(self) -> None:
        super().on_start()
        first, self._first = self._first, None
        if first is not None and self._sock is not None:
            self.table.count("echo_forwarded")
            self.on_echo(first)

    @handles(ForwardEchoIn)
    def on_echo(self, msg: ForwardEchoIn) -> None:
        kind = _ICMPV6_ECHO_REQUEST if ":" in self.flow.dst else _ICMP_ECHO_REQUEST
        # type, code, checksum (the kernel's), identifier (the kernel's), sequence (the peer's)
        self.send(bytes([kind, 0, 0, 0]) + msg.rest[:2] + msg.rest[2:4] + msg.data)

    def reply(self, data: bytes) -> Message | None:
        if len(data) < 8 or data[0] not in (0, 129):  # echo reply (v4, v6)
            return None
        f = self.flow
        return ForwardEchoOut(client=f.client, dst=f.dst, rest=f.rest[:2] + data[6:8], data=data[8:])
