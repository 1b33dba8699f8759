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

from pytsnet.actors.netstack.fallback import FallbackChannel, FallbackSyn
from pytsnet.actors.runtime import ActorStopped, AskTimeout, MailboxFull
from pytsnet.messages.forwarder import ForwardTcpAccept, ForwardTcpRefuse
from pytsnet.messages.services import TcpFallbackSet
from pytsnet.net.netstack import Netstack
from pytsnet.net.socket import SocketLike

log = logging.getLogger("pytsnet.services")

__all__ = ["ConnHandler", "FallbackHandlers", "FallbackTcpHandler"]

ConnHandler = Callable[[SocketLike], object]
FallbackTcpHandler = Callable[[tuple[str, int], tuple[str, int]], tuple[ConnHandler | None, bool]]

ASK_TIMEOUT = 10.0
"""Bounds one ask of the netstack (it answers at once; this only covers one stuck behind packets)."""
HANDSHAKE_TIMEOUT = 10.0
"""The peer must finish its handshake within this after our SYN-ACK, as for a forwarded flow."""


class FallbackHandlers:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._handlers: dict[int, FallbackTcpHandler] = {}
        self._ids = itertools.count()
        self._ns: Netstack | None = None
        self._closed = False

    def register(self, cb: FallbackTcpHandler) -> Callable[[], None]:
        """Add ``cb``; the returned callable removes it (idempotent)."""
        with self._lock:
            hid = next(self._ids)
            self._handlers[hid] = cb
            first = len(self._handlers) == 1
            ns = self._ns
        if first and ns is not None:
            self._enable(ns, True)

        def unregister() -> None:
            with self._lock:
                if self._handlers.pop(hid, None) is None:
                    return
                last = not self._handlers
                ns = self._ns
            if last and ns is not None:
                self._enable(ns, False)
        return unregister

    def attach(self, ns: Netstack | None) -> None:
        """A new netstack (or None while the data plane rebuilds): turn its fallback on if needed."""
        with self._lock:
            if self._closed:
                return
            self._ns = ns
            wanted = bool(self._handlers)
        if ns is not None and wanted:
            self._enable(ns, True)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._ns = None
            self._handlers.clear()

    # -- internals ---------------------------------------------------------------------------------------
    def _enable(self, ns: Netstack, on: bool) -> None:
        try:
            ns.check(ns.ref.ask(TcpFallbackSet(enabled=on), timeout=ASK_TIMEOUT))
        except (ActorStopped, AskTimeout, OSError) as e:  # a rebuild: attach brings the next netstack
            log.debug("fallback TCP handlers: could not %s on the netstack: %s",
                      "enable" if on else "disable", e)
            return
        ch = ns.registry.fallback
        if on and ch is not None and not ch.dispatched:
            ch.dispatched = True
            threading.Thread(target=self._dispatch, args=(ns, ch), name="fallback-tcp", daemon=True).start()

    def _dispatch(self, ns: Netstack, ch: FallbackChannel) -> None:
        while True:
            ch.wait(ch.ready, None)
            with ch.lock:
                if ch.closed:
                    return
            syn = ch.take()
            if syn is not None:
                threading.Thread(target=self._decide, args=(ns, syn), name="fallback-tcp-flow",
                                 daemon=True).start()

    def _decide(self, ns: Netstack, syn: FallbackSyn) -> None:
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
            with contextlib.suppress(ActorStopped, MailboxFull):  # a netstack going takes its SYNs along
                ns.ref.tell(ForwardTcpRefuse(client=syn.src, client_port=syn.sport, dst=syn.dst,
                                             dst_port=syn.dport, reason="no fallback handler took the flow"))
            return
        conn = self._accept(ns, syn)
        if conn is None:
            return
        try:
            handler(conn)
        except Exception:
            log.exception("fallback TCP connection handler raised: closing its connection")
            conn.close()

    @staticmethod
    def _accept(ns: Netstack, syn: FallbackSyn) -> SocketLike | None:
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
        return SocketLike(ch)
