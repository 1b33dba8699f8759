"""``FunnelListener``: TLS-terminated connections from the public internet (through an ingress node's
``/v0/ingress``) and, unless ``funnel_only``, from the tailnet on the same port (Go ``ListenFunnel``:
``listenOnBoth`` / ``FunnelOnly``).

The peerAPI connection that accepted an ingress request hands its flow over (``IngressHandoff``) on
its own thread; the listener queues it (bounded by ``backlog``: one more is refused, and the peerAPI
closes it) and ``accept`` returns it at once as a ``FunnelStream``. TLS is terminated with the node's
certificate on the stream's first ``receive``/``send`` (or an explicit ``handshake()``), in the task
that serves the connection, as Go's ``tls.NewListener`` does: a client that stalls its handshake
holds up only its own task, never ``accept``. One that does not finish within ``handshake_timeout``
(or sends no TLS) gets its connection closed, ``anyio.BrokenResourceError`` in that task, and is
counted in ``FunnelListener.dropped``.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Mapping
from typing import Any

import anyio
from anyio.abc import ByteStream

from pytsnet.actors.netstack.channel import Waitable
from pytsnet.actors.peerapi.ingress import IngressHandoff, IngressRoutes
from pytsnet.cert.stream import HANDSHAKE_TIMEOUT, ContextSource, TlsStream
from pytsnet.net.stream import TcpListener, TcpStream

__all__ = ["ContextSource", "FunnelListener", "FunnelStream"]

DEFAULT_BACKLOG = 64



class _Handoffs(Waitable):
    """Handed-over public connections waiting for ``accept`` (any thread offers, the app takes)."""

    def __init__(self, backlog: int) -> None:
        super().__init__()
        self._items: collections.deque[IngressHandoff] = collections.deque()
        self._backlog = backlog
        self.closed = False

    def offer(self, h: IngressHandoff) -> bool:
        with self.lock:
            if self.closed or len(self._items) >= self._backlog:
                return False
            self._items.append(h)
        self.notify()
        return True

    def ready(self) -> bool:
        return bool(self._items) or self.closed

    def take(self) -> IngressHandoff:
        with self.lock:
            if self._items:
                return self._items.popleft()
        raise anyio.ClosedResourceError

    def close(self) -> list[IngressHandoff]:
        with self.lock:
            self.closed = True
            left = list(self._items)
            self._items.clear()
        self.notify()
        return left


class _Prefixed(ByteStream):
    """A handed-over flow: the bytes that came with the ingress request first, then the flow's."""

    def __init__(self, inner: TcpStream, prefix: bytes) -> None:
        self._inner = inner
        self._prefix = prefix

    async def receive(self, max_bytes: int = 65536) -> bytes:
        if self._prefix:
            out, self._prefix = self._prefix[:max_bytes], self._prefix[max_bytes:]
            return out
        return await self._inner.receive(max_bytes)

    async def send(self, item: bytes) -> None:
        await self._inner.send(item)

    async def send_eof(self) -> None:
        await self._inner.send_eof()

    async def aclose(self) -> None:
        await self._inner.aclose()

    @property
    def extra_attributes(self) -> Mapping[Any, Callable[[], Any]]:
        return self._inner.extra_attributes


class FunnelStream(TlsStream):
    """One connection, TLS terminated on first use (``pytsnet.cert.stream``). ``src`` is who is on the
    other end: the public client (Go ``FunnelConn.Src``, the ingress's ``Tailscale-Ingress-Src``) when
    ``funnel``, else the tailnet peer's address; ``target`` is the ``host:port`` the public client asked
    for."""

    def __init__(self, raw: ByteStream, context: ContextSource, *, src: tuple[str, int], funnel: bool,
                 target: str = "", handshake_timeout: float = HANDSHAKE_TIMEOUT,
                 on_failed: Callable[[], None] | None = None) -> None:
        super().__init__(raw, context, peer=src, handshake_timeout=handshake_timeout, on_failed=on_failed)
        self.src = src
        self.funnel = funnel
        self.target = target


_Raw = tuple[ByteStream, tuple[str, int], bool, str]


class FunnelListener:
    """Made by ``ActorDevice.listen_funnel`` (which checked the tailnet allows it)."""

    def __init__(self, routes: IngressRoutes, port: int, context: ContextSource,
                 tailnet: TcpListener | None, *, backlog: int = DEFAULT_BACKLOG,
                 handshake_timeout: float = HANDSHAKE_TIMEOUT) -> None:
        self.port = port
        self._routes = routes
        self._context = context
        self._tailnet = tailnet
        self._handoffs = _Handoffs(backlog)
        self._pending: collections.deque[_Raw] = collections.deque()
        self.handshake_timeout = handshake_timeout
        self.dropped = 0
        """Connections whose TLS handshake failed (no TLS, or too slow a handshake)."""
        self._offer = self._handoffs.offer  # one bound method: unregister matches it by identity
        routes.register(port, self._offer)  # KeyError: the port has a Funnel listener

    async def accept(self) -> FunnelStream:
        """The next connection (TLS on its first use: serve it in its own task);
        ``anyio.ClosedResourceError`` once closed."""
        raw, src, funnel, target = await self._next_raw()
        return FunnelStream(raw, self._context, src=src, funnel=funnel, target=target,
                            handshake_timeout=self.handshake_timeout, on_failed=self._count_drop)

    def _count_drop(self) -> None:
        self.dropped += 1

    async def _from_funnel(self) -> _Raw:
        await self._handoffs.wait_async(self._handoffs.ready)
        h = self._handoffs.take()
        return _Prefixed(TcpStream(h.channel), h.prefix), h.request.src, True, h.request.target

    async def _from_tailnet(self, tailnet: TcpListener) -> _Raw:
        stream = await tailnet.accept()
        return stream, stream.remote_address, False, ""

    async def _next_raw(self) -> _Raw:
        if self._pending:
            return self._pending.popleft()
        tailnet = self._tailnet
        if tailnet is None:
            return await self._from_funnel()
        got: list[_Raw] = []
        async with anyio.create_task_group() as tg:
            async def run(source: Callable[[], Any]) -> None:
                got.append(await source())
                tg.cancel_scope.cancel()

            tg.start_soon(run, self._from_funnel)
            tg.start_soon(run, lambda: self._from_tailnet(tailnet))
        self._pending.extend(got[1:])  # both arrived at once: the second waits for the next accept
        return got[0]

    def close(self) -> None:
        """Stop taking connections: the route goes, queued ones are closed, the tailnet port freed."""
        self._routes.unregister(self.port, self._offer)
        for h in self._handoffs.close():
            h.channel.close()
        if self._tailnet is not None:
            self._tailnet.close()

    async def aclose(self) -> None:
        self.close()

    async def __aenter__(self) -> FunnelListener:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()
