"""``ServiceListener`` and the service modes: a node hosting a Tailscale Service (Go's ``ListenService``).

As Go's tsnet (``ServiceModeTCP``/``ServiceModeHTTP``; one call per port): the node must be tagged
(``UntaggedServiceHost`` otherwise), it advertises the service to control (Go: ``Prefs.AdvertiseServices``,
of which control sees ``Hostinfo.ServicesHash``: :func:`services_hash`), and control answers with the
service's VIP in the ``service-host`` capability. The netstack then hands each SYN to a VIP of ours to
the device, which accepts it only for a listener of that service on that port (any other port of the
VIP is reset: fail closed) and queues the connection here, bounded by ``backlog`` (full: reset).

HTTP mode (``HttpServiceListener``) is Go's: the device puts the port in the serve config's
``Services`` (``"svc:web"`` → ``TCP[port] = HTTP`` or ``HTTPS``, ``Web["web.<domain>:port"]`` ``/`` →
``Proxy`` to a loopback listener of this object), so Serve answers the VIP's connections and proxies
each request with the caller's ``Tailscale-User-*`` and ``X-Forwarded-*`` headers (copies sent by the
caller dropped); the app accepts the proxied connections (plain sockets from 127.0.0.1; the
loopback listener is bound in the calling thread's network namespace, where the node's actors must
dial it). Closing it takes the entry out of the serve config again (not at the device's own close:
the stored entry is then a leftover the next ``listen_service`` of the port replaces). HTTPS
terminates TLS with the certificate for the service's FQDN (the node's ACME cert — Go's control, and
localnet, list a host's services in its ``CertDomains`` — or ``ActorDevice.serve_cert_provider``).

Where TCP mode differs from Go: Go routes the VIP's flows through its serve config (``TCPForward``
to a localhost listener); here plain TCP mode queues the connection itself (a blocking ``SocketLike``;
identify the peer with ``dev.whois``). With ``terminate_tls`` or ``proxy_protocol`` (20h) it is Go's
way (``ForwardServiceListener``): the device puts ``Services[name].TCP[port] = TCPForward`` to a
loopback listener of this object, with ``TerminateTLS`` = the service's FQDN (the certificate for it,
as HTTPS mode) and ``ProxyProtocol`` = the version, so Serve terminates TLS and/or writes the PROXY
header naming the tailnet caller before the plaintext reaches the app. ``AcceptAppCaps`` and HTTP
mode's ``proxy_protocol`` (which Go's ListenService does not use either) are refused with
``ServiceUnavailable``.
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import json
import re
import socket
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from pytsnet.actors.netstack.channel import FlowChannel
from pytsnet.errors import ServiceUnavailable
from pytsnet.net.socket import SocketLike

__all__ = ["ForwardServiceListener", "HttpServiceListener", "ServiceListener", "ServiceModeHTTP",
           "ServiceModeTCP", "check_service_name", "services_hash", "tcp_port_ranges"]

_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
DEFAULT_BACKLOG = 128


def check_service_name(name: str) -> str:
    """Go's ``tailcfg.ServiceName.Validate``: ``svc:`` and one DNS label (``ValueError`` otherwise)."""
    bare = name.removeprefix("svc:")
    if bare == name:
        raise ValueError(f"{name!r} is not a valid service name: must start with 'svc:'")
    if not _LABEL.match(bare):
        raise ValueError(f"{name!r} is not a valid service name: 'svc:' and a DNS label (a-z, 0-9, -)")
    return name


@dataclass(frozen=True)
class ServiceModeTCP:
    """Go's ``ServiceModeTCP``: raw TCP on ``port`` of the service's VIP."""

    port: int
    terminate_tls: bool = False
    proxy_protocol: int = 0

    def check(self) -> None:
        _check_port(self.port)
        if self.proxy_protocol not in (0, 1, 2):  # 20h: Go's "must be 1 or 2"
            raise ValueError(f"invalid PROXY protocol version {self.proxy_protocol}; must be 1 or 2")

    @property
    def forwarded(self) -> bool:
        """Served through the serve config (Go's ``TCPForward``) rather than queued directly (20h)."""
        return self.terminate_tls or bool(self.proxy_protocol)


@dataclass(frozen=True)
class ServiceModeHTTP:
    """Go's ``ServiceModeHTTP``: HTTP on ``port`` (see the module docstring for what differs)."""

    port: int
    https: bool = False
    accept_app_caps: dict[str, list[str]] = field(default_factory=dict)
    proxy_protocol: int = 0

    def check(self) -> None:
        _check_port(self.port)
        if self.accept_app_caps or self.proxy_protocol:
            raise ServiceUnavailable("ServiceModeHTTP accept_app_caps / proxy_protocol are not "
                                     "implemented yet")


def _check_port(port: int) -> None:
    if not 0 < port <= 0xFFFF:
        raise ValueError("must specify a port to advertise (1..65535)")


def tcp_port_ranges(ports: Iterable[int]) -> list[str]:
    """Go's ``ServiceConfigView.ServicePortRange`` for TCP handlers: sorted, adjacent ports merged,
    as ``tailcfg.ProtoPortRange`` text (``tcp:80``, ``tcp:80-81``)."""
    out: list[list[int]] = []
    for p in sorted(set(ports)):
        if out and p == out[-1][1] + 1:
            out[-1][1] = p
        else:
            out.append([p, p])
    return [f"tcp:{a}" if a == b else f"tcp:{a}-{b}" for a, b in out]


def services_hash(ports_by_service: Mapping[str, Iterable[int]]) -> str:
    """Go's ``vipServiceHash(vipServicesFromPrefsLocked())``: hex SHA-256 of the JSON list of
    ``tailcfg.VIPService`` (``Name``, ``Ports``, ``Active``), sorted by name; "" for none."""
    listed = [{"Name": n, "Ports": tcp_port_ranges(ports_by_service[n]) or None, "Active": True}
              for n in sorted(ports_by_service)]
    if not listed:
        return ""
    return hashlib.sha256(json.dumps(listed, separators=(",", ":")).encode()).hexdigest()


class ServiceListener:
    """Connections to ``port`` of the service ``name``'s VIP; ``fqdn`` as Go's ``ServiceListener.FQDN``."""

    def __init__(self, name: str, port: int, fqdn: str, vips: Callable[[], list[str]],
                 on_close: Callable[[ServiceListener], None], backlog: int = DEFAULT_BACKLOG) -> None:
        self.name = name
        self.port = port
        self.fqdn = fqdn
        self._vips = vips
        self.backlog = backlog
        self._on_close = on_close
        self._cond = threading.Condition()
        self._ready: collections.deque[SocketLike] = collections.deque()
        self._closed = False

    def vips(self) -> list[str]:
        """The service's VIPs as control gave them to us now (empty until it approves us as a host)."""
        return self._vips()

    @property
    def addr(self) -> tuple[str, int]:
        """Go's ``Addr()``: the FQDN and port (a service listens on every VIP of it)."""
        return self.fqdn, self.port

    def offer(self, conn: SocketLike) -> bool:
        """The dispatcher's hand-over; False (the caller resets it) when closed or full."""
        with self._cond:
            if self._closed or len(self._ready) >= self.backlog:
                return False
            self._ready.append(conn)
            self._cond.notify()
            return True

    def wants(self) -> bool:
        with self._cond:
            return not self._closed and len(self._ready) < self.backlog

    def take(self, ch: FlowChannel) -> bool:
        """``offer`` for the dispatcher, which holds the flow's channel."""
        return self.offer(SocketLike(ch))

    def accept(self, timeout: float | None = None) -> tuple[SocketLike, tuple[str, int]]:
        """The next connection and its peer's (ip, port); ``TimeoutError`` after ``timeout``,
        ``OSError`` once closed."""
        end = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while not self._ready:
                if self._closed:
                    raise OSError("service listener closed")
                left = None if end is None else end - time.monotonic()
                if left is not None and left <= 0:
                    raise TimeoutError("accept timed out")
                self._cond.wait(left)
            conn = self._ready.popleft()
        return conn, conn.getpeername()

    def close(self) -> None:
        """Stop hosting on this port (the last listener of a service withdraws its advertisement);
        connections not yet accepted are closed."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            pending = list(self._ready)
            self._ready.clear()
            self._cond.notify_all()
        for c in pending:
            c.close()
        self._on_close(self)

    def __enter__(self) -> ServiceListener:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class HttpServiceListener:
    """HTTP mode: the app accepts the connections Serve's proxy makes to ``local_addr`` for requests to
    ``port`` of the service ``name`` (plain sockets from 127.0.0.1, each request carrying the caller's
    identity headers). ``on_close`` (the device) takes the serve config entry out and withdraws."""

    def __init__(self, name: str, port: int, fqdn: str, https: bool, vips: Callable[[], list[str]],
                 on_close: Callable[[HttpServiceListener], None], backlog: int = DEFAULT_BACKLOG) -> None:
        self.name = name
        self.port = port
        self.fqdn = fqdn
        self.https = https
        self._vips = vips
        self._on_close = on_close
        self._sock = socket.create_server(("127.0.0.1", 0), backlog=backlog)
        self._lock = threading.Lock()
        self._closed = False

    @property
    def local_addr(self) -> str:
        """The loopback ``host:port`` Serve's ``Proxy`` names (Go: ``ln.Addr().String()``)."""
        host, port = self._sock.getsockname()[:2]
        return f"{host}:{port}"

    def vips(self) -> list[str]:
        return self._vips()

    @property
    def addr(self) -> tuple[str, int]:
        return self.fqdn, self.port

    def accept(self, timeout: float | None = None) -> tuple[socket.socket, tuple[str, int]]:
        """The next proxied connection (from Serve on 127.0.0.1); ``TimeoutError`` after ``timeout``,
        ``OSError`` once closed."""
        self._sock.settimeout(timeout)
        conn, peer = self._sock.accept()
        conn.settimeout(None)
        return conn, peer

    def close(self) -> None:
        """Take the service port out of the serve config, withdraw, stop listening (once)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        try:
            self._on_close(self)
        finally:
            with contextlib.suppress(OSError):
                self._sock.shutdown(socket.SHUT_RDWR)  # wakes an accept blocked in another thread
            with contextlib.suppress(OSError):
                self._sock.close()

    def abandon(self) -> None:
        """Stop listening without ``on_close`` (it was never registered)."""
        with self._lock:
            self._closed = True
        self._sock.close()

    def __enter__(self) -> HttpServiceListener:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ForwardServiceListener(HttpServiceListener):
    """TCP mode with ``terminate_tls`` / ``proxy_protocol`` (20h, Go's ``SetTCPForwardingForService``):
    the app accepts Serve's forwarded connections at ``local_addr`` (plaintext from 127.0.0.1; with
    ``proxy_protocol`` each begins with the PROXY header naming the tailnet caller)."""
