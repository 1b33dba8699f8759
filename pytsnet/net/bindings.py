"""``Bindings``: the device's listeners and UDP sockets, kept across data-plane rebuilds.

Go's ``Listen`` works before the node is up, and a listener outlives a change of node key or
addresses. Here the netstack (and its listener table) is part of the data-plane subtree, which the
bridge spawns at the first netmap and rebuilds on a new node key, address set or DERP map. So the
device keeps what the app asked for (TCP port + backlog, UDP port) in this table, and every new
netstack is told all of it (``attach``, called by the subtree's spawn before it carries traffic);
each handle then swaps to its new channel and a waiting ``accept``/``recvfrom`` carries on.
"""

from __future__ import annotations

import errno
import logging
import threading
from collections.abc import Callable

from pytsnet.actors.runtime import ActorStopped, AskTimeout
from pytsnet.errors import AddressInUse, DeviceClosed
from pytsnet.messages.netstack import NetstackReply, TcpListen, UdpBind
from pytsnet.net.netstack import Netstack
from pytsnet.net.stream import TcpListener, UdpSocket

log = logging.getLogger("pytsnet.net")

__all__ = ["Bindings"]

BIND_TIMEOUT = 10.0
"""A bind is one ask the netstack answers at once; this only bounds a netstack stuck behind packets."""


class Bindings:
    def __init__(self) -> None:
        self._lock = threading.RLock()  # held across the (immediate) binds: one rebind at a time
        self._netstack: Netstack | None = None
        self._tcp: dict[int, tuple[TcpListener, int | None]] = {}
        self._udp: list[UdpSocket] = []
        self._closed = False

    def attach(self, ns: Netstack) -> None:
        """A new netstack (first spawn or a rebuild): bind every listener and socket on it."""
        with self._lock:
            if self._closed:
                return
            self._netstack = ns
            for lst, backlog in list(self._tcp.values()):
                self._bind_tcp(ns, lst, backlog)
            for sock in list(self._udp):
                self._bind_udp(ns, sock)

    def listen(self, port: int, backlog: int | None) -> TcpListener:
        with self._lock:
            if self._closed:
                raise DeviceClosed("the device is closed: make a new ActorDevice")
            if port in self._tcp:
                raise AddressInUse(errno.EADDRINUSE, f"tailnet TCP port {port} already has a listener on "
                                   "this node: close it first, or pick another port")
            lst = TcpListener(None, None, port=port, on_close=self._forget_tcp, on_lost=self._heal)
            self._tcp[port] = (lst, backlog)
            if self._netstack is not None:
                try:
                    self._bind_tcp(self._netstack, lst, backlog, strict=True)
                except BaseException:
                    del self._tcp[port]
                    raise
            return lst

    def bind_udp(self, port: int, resolve: Callable[[str], str]) -> UdpSocket:
        with self._lock:
            if self._closed:
                raise DeviceClosed("the device is closed: make a new ActorDevice")
            if port and any(s.port == port for s in self._udp):
                raise AddressInUse(errno.EADDRINUSE, f"tailnet UDP port {port} is already bound on this "
                                   "node: close that socket first, or pick another port")
            sock = UdpSocket(None, None, port=port, resolve=resolve, on_close=self._forget_udp,
                             on_lost=self._heal)
            self._udp.append(sock)
            if self._netstack is not None:
                try:
                    self._bind_udp(self._netstack, sock, strict=True)
                except BaseException:
                    self._udp.remove(sock)
                    raise
            return sock

    def close(self) -> None:
        """The device closed: every handle ends its waits with the closed error."""
        with self._lock:
            self._closed = True
            self._netstack = None
            handles = [lst for lst, _ in self._tcp.values()] + list(self._udp)
            self._tcp.clear()
            self._udp.clear()
        for h in handles:
            h._shutdown()

    # -- internals ---------------------------------------------------------------------------------------
    def _heal(self, handle: TcpListener | UdpSocket, lost: object) -> None:
        """A handle found its channel closed by the netstack (its subtree crash-looped past its budget
        and restarted empty): bind it again on the current netstack. During a rebuild the ask fails
        (that netstack is gone) and ``attach`` brings the new one instead."""
        with self._lock:
            ns = self._netstack
            if self._closed or ns is None or handle._closed or handle._current() is not lost:
                return
            if isinstance(handle, TcpListener):
                entry = self._tcp.get(handle.port)
                if entry is not None and entry[0] is handle:
                    self._bind_tcp(ns, handle, entry[1])
            elif handle in self._udp:
                self._bind_udp(ns, handle)

    def _forget_tcp(self, lst: TcpListener) -> None:
        with self._lock:
            if self._tcp.get(lst.port, (None,))[0] is lst:
                del self._tcp[lst.port]

    def _forget_udp(self, sock: UdpSocket) -> None:
        with self._lock:
            if sock in self._udp:
                self._udp.remove(sock)

    @staticmethod
    def _bind_tcp(ns: Netstack, lst: TcpListener, backlog: int | None, *, strict: bool = False) -> None:
        if Bindings._ask_bind(ns, TcpListen(port=lst.port, backlog=backlog),
                              f"listen on tailnet TCP port {lst.port}", strict) is not None:
            lst._swap(ns, ns.registry.listener(lst.port))

    @staticmethod
    def _bind_udp(ns: Netstack, sock: UdpSocket, *, strict: bool = False) -> None:
        reply = Bindings._ask_bind(ns, UdpBind(port=sock.port), f"bind tailnet UDP port {sock.port}", strict)
        if reply is not None:
            sock._swap(ns, ns.registry.udp(reply.port))

    @staticmethod
    def _ask_bind(ns: Netstack, msg: TcpListen | UdpBind, what: str, strict: bool) -> NetstackReply | None:
        """Ask ``ns`` to bind; None when it cannot now. ``strict`` (the app's own call) raises instead:
        a netstack being replaced (``ActorStopped``: ``attach`` brings the new one), a refusal or a
        timeout."""
        try:
            return ns.check(ns.ref.ask(msg, timeout=BIND_TIMEOUT))
        except ActorStopped:
            if strict:
                raise
            return None
        except (OSError, AskTimeout) as e:
            if strict:
                raise
            log.warning("could not %s on the data plane: %s", what, e)
            return None
