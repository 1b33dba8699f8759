"""``FallbackHandlers``: the app's fallback TCP handlers (Go's ``tsnet.Server.RegisterFallbackTCPHandler``).

A handler is ``cb(src, dst) -> (handler, intercept)`` with ``src``/``dst`` as ``(ip, port)``, called
for a TCP flow to this node that no listener takes. As Go's ``getTCPHandlerForFlow``: the callbacks
are asked in turn (here: in registration order; Go leaves the order undefined) and the first one
answering ``intercept=True`` decides: with a ``handler`` the handshake completes and
``handler(conn)`` owns the connection (a blocking ``SocketLike``; the handler closes it), with
``handler=None`` the SYN is reset. When every callback passes (``intercept=False``) the SYN is reset
too: nothing on the tailnet side falls through to a host socket. With no callback registered the
netstack resets such SYNs itself, as before.

The netstack holds the SYN meanwhile (bounded, as a subnet router's dial) and hands it over through
a ``FallbackChannel``; one dispatcher thread per netstack takes them, and each SYN is decided and
served in its own thread (Go: a goroutine per flow), so a slow callback or handler delays only its
own flow. A callback that raises counts as a reject (fail closed), logged.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import threading
from collections.abc import Callable
from typing import Protocol

from pytsnet.actors.netstack.channel import FlowChannel
from pytsnet.actors.netstack.fallback import FallbackChannel, FallbackSyn
from pytsnet.actors.runtime import ActorStopped, AskTimeout, MailboxFull
from pytsnet.messages.forwarder import ForwardTcpAccept, ForwardTcpRefuse
from pytsnet.messages.services import TcpFallbackSet
from pytsnet.net.netstack import Netstack
from pytsnet.net.socket import SocketLike

log = logging.getLogger("pytsnet.services")

__all__ = ["ConnHandler", "FallbackHandlers", "FallbackTcpHandler", "ServiceTarget"]


class ServiceTarget(Protocol):
    """Who takes a service VIP port's flows: the app's ``ServiceListener`` (TCP mode) or Serve's
    ``ServiceAcceptor`` (the port is in the serve config's ``Services``)."""

    def wants(self) -> bool: ...

    def take(self, ch: FlowChannel) -> bool: ...

ConnHandler = Callable[[SocketLike], object]
FallbackTcpHandler = Callable[[tuple[str, int], tuple[str, int]], tuple[ConnHandler | None, bool]]

ASK_TIMEOUT = 10.0
"""Bounds one ask of the netstack (it answers at once; this only covers one stuck behind packets)."""
DISPATCH_POLL = 1.0
"""How often an idle dispatcher checks whether its netstack is still the device's."""
MAX_HANDLERS = 1024
"""Intercepted connections being served at once (a thread each, as Go's goroutine); more are reset,
counted in ``FallbackHandlers.refused_busy`` — a peer cannot make the app run unbounded threads."""
HANDSHAKE_TIMEOUT = 10.0
"""The peer must finish its handshake within this after our SYN-ACK, as for a forwarded flow."""


class FallbackHandlers:
    """The app's fallback handlers, and the dispatcher of held SYNs (to them, or to the service
    listener ``service_listener(name, port)`` names for a SYN to one of our VIPs)."""

    def __init__(self, service_listener: Callable[[str, int], ServiceTarget | None] | None = None) -> None:
        self._service_listener = service_listener or (lambda name, port: None)
        self._lock = threading.Lock()
        self._handlers: dict[int, FallbackTcpHandler] = {}
        self._ids = itertools.count()
        self._ns: Netstack | None = None
        self._closed = False
        self._slots = threading.BoundedSemaphore(MAX_HANDLERS)
        self.refused_busy = 0

    def register(self, cb: FallbackTcpHandler) -> Callable[[], None]:
        """Add ``cb``; the returned callable removes it (idempotent)."""
        with self._lock:
            hid = next(self._ids)
            self._handlers[hid] = cb
            first = len(self._handlers) == 1
            ns = self._ns
        if first and ns is not None:
            self._enable(ns)

        def unregister() -> None:
            with self._lock:
                if self._handlers.pop(hid, None) is None:
                    return
                last = not self._handlers
                ns = self._ns
            if last and ns is not None:
                self._enable(ns)
        return unregister

    def attach(self, ns: Netstack | None) -> None:
        """A new netstack (or None while the data plane rebuilds): tell it whether we have handlers,
        and start taking its held SYNs (service SYNs come whether or not we have handlers)."""
        with self._lock:
            if self._closed:
                return
            self._ns = ns
        if ns is not None:
            self._enable(ns)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._ns = None
            self._handlers.clear()

    # -- internals ---------------------------------------------------------------------------------------
    def _enable(self, ns: Netstack) -> None:
        """Tell ``ns`` whether SYNs for unlistened ports wait for handlers; start its dispatcher (the
        ask also ensures the netstack started, so its channel exists)."""
        with self._lock:
            on = bool(self._handlers)
        try:
            ns.check(ns.ref.ask(TcpFallbackSet(enabled=on), timeout=ASK_TIMEOUT))
        except (ActorStopped, AskTimeout, OSError) as e:  # a rebuild: attach brings the next netstack
            log.debug("fallback TCP handlers: could not %s on the netstack: %s",
                      "enable" if on else "disable", e)
            return
        ch = ns.registry.fallback
        with self._lock:
            start = ch is not None and not ch.dispatched
            if start and ch is not None:
                ch.dispatched = True
        if start:
            threading.Thread(target=self._dispatch, args=(ns, ch), name="fallback-tcp", daemon=True).start()

    def _current(self, ns: Netstack) -> bool:
        with self._lock:
            return not self._closed and self._ns is ns

    def _dispatch(self, ns: Netstack, ch: FallbackChannel) -> None:
        """Until the device closes or moves to another netstack (a rebuild)."""
        while self._current(ns) or (self._ns is None and not self._closed):
            if not ch.wait(ch.ready, DISPATCH_POLL):
                continue
            with ch.lock:
                if ch.closed:
                    return
            syn = ch.take()
            if syn is not None:
                threading.Thread(target=self._decide, args=(ns, syn), name="fallback-tcp-flow",
                                 daemon=True).start()

    def _decide(self, ns: Netstack, syn: FallbackSyn) -> None:
        if syn.service:
            self._to_service(ns, syn)
            return
        with self._lock:
            handlers = list(self._handlers.values())
        handler: ConnHandler | None = None
        for cb in handlers:
            try:
                got, intercept = cb((syn.src, syn.sport), (syn.dst, syn.dport))
            except Exception:
                log.exception("fallback TCP handler raised for %s:%d -> %s:%d: rejecting the flow",
                              syn.src, syn.sport, syn.dst, syn.dport)
                break
            if intercept:
                handler = got
                break
        if handler is None:
            _refuse(ns, syn, "no fallback handler took the flow")
            return
        if not self._slots.acquire(blocking=False):
            with self._lock:
                self.refused_busy += 1
            _refuse(ns, syn, "too many intercepted connections being served")
            return
        try:
            conn = self._accept(ns, syn)
            if conn is None:
                return
            try:
                handler(conn)
            except Exception:
                log.exception("fallback TCP connection handler raised: closing its connection")
                conn.close()
        finally:
            self._slots.release()

    def _to_service(self, ns: Netstack, syn: FallbackSyn) -> None:
        """A SYN to our VIP: accepted only for a listener of that service on that port (fail closed)."""
        lst = self._service_listener(syn.service, syn.dport)
        if lst is None or not lst.wants():
            _refuse(ns, syn, "no listener for this service port")
            return
        ch = self._accept_channel(ns, syn)
        if ch is not None and not lst.take(ch):
            ch.close()

    @staticmethod
    def _accept(ns: Netstack, syn: FallbackSyn) -> SocketLike | None:
        ch = FallbackHandlers._accept_channel(ns, syn)
        return None if ch is None else SocketLike(ch)

    @staticmethod
    def _accept_channel(ns: Netstack, syn: FallbackSyn) -> FlowChannel | None:
        try:
            reply = ns.ref.ask(ForwardTcpAccept(client=syn.src, client_port=syn.sport, dst=syn.dst,
                                                dst_port=syn.dport), timeout=ASK_TIMEOUT)
        except (ActorStopped, AskTimeout):
            return None
        if reply.flow is None:  # the peer gave up meanwhile
            return None
        ch = ns.registry.claim_flow(reply.flow)
        if ch is None:
            return None
        if not ch.wait(ch.connected_ready, HANDSHAKE_TIMEOUT):
            ch.close()
            return None
        with ch.lock:
            ok = ch.established
        if not ok:
            ch.close()
            return None
        return ch


def _refuse(ns: Netstack, syn: FallbackSyn, reason: str) -> None:
    with contextlib.suppress(ActorStopped, MailboxFull):  # a netstack going takes its SYNs along
        ns.ref.tell(ForwardTcpRefuse(client=syn.src, client_port=syn.sport, dst=syn.dst, dst_port=syn.dport,
                                     reason=reason))
