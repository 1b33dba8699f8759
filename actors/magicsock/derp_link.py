"""The blocking side of one DERP connection: dial, TLS, the ``/derp`` upgrade, then reads.

It runs as the ``DerpClient``'s I/O loop (``start_io_loop(link.step, link.close)``), never in a
handler: the first ``step`` dials and reports ``DerpDialed``/``DerpDialFailed``, every later one
reads and reports ``DerpBytes``/``DerpClosed``. Each read is framed here (``RecvSplitter``): once the
handshake is complete its RecvPackets go straight to ``DerpInbound`` (the engine, disco) from this
thread, and only the other frames' bytes are reported to the actor (issue 14's DERP receive lane).
A server that accepts TCP and then says nothing costs the actor nothing: it keeps answering asks
and queueing sends while the dial waits out its timeouts here. ``close`` (from the actor) unblocks
whatever ``step`` is blocked in.
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
import ssl
import threading
import time

from pytsnet.actors.magicsock.derp_lane import DerpInbound
from pytsnet.messages.magicsock import DerpBytes, DerpClosed, DerpDialed, DerpDialFailed, DerpRegion
from pytsnet.wire.derp.recv_split import RecvSplitter
from pytsnet.wire.errors import WireError
from pytsnet.wire.http1_upgrade import UpgradeClient

CONNECT_TIMEOUT = 5.0
"""Each blocking step of the dial (TCP connect, TLS handshake, each read of the answer) gets this."""
DIAL_DEADLINE = 10.0
"""The whole dial, however slowly a server drips its answer."""
MAX_HTTP_HEADER = 8192
"""Cap on the server's ``101`` head."""


class DerpLink:
    """One connection attempt and, once upgraded, its socket (the actor writes to ``sock``)."""

    def __init__(self, region: DerpRegion, conn_id: int, inbound: DerpInbound | None = None,
                 *, ipv6: bool = False) -> None:
        self.region = region
        self.ipv6 = ipv6  # 24d: Config.ipv6 (False: IPv4 only, the node's IPv6 never dialled)
        self.conn_id = conn_id
        self.inbound = inbound  # None: every frame to the actor (no packet lane)
        self.splitter = RecvSplitter()
        self.sock: socket.socket | None = None
        self._lock = threading.Lock()
        self._closed = False
        self._dialed = False
        self._eof = False  # reported: nothing more to read
        self._closed_event = threading.Event()  # close() was called: the loop is about to stop

    def step(self) -> DerpDialed | DerpDialFailed | DerpBytes | DerpClosed | None:
        """One blocking step for the I/O loop: the dial first, then one read."""
        if not self._dialed:
            self._dialed = True
            return self._dial()
        sock = self.sock
        if self._eof or sock is None:
            self._closed_event.wait(0.5)  # the actor closes us on our report; idle until then
            return None
        try:
            data = sock.recv(65536)
        except OSError as e:
            self._eof = True
            return DerpClosed(conn=self.conn_id, reason=repr(e))
        if not data:
            self._eof = True
            return DerpClosed(conn=self.conn_id, reason="EOF")
        if self.inbound is None:
            return DerpBytes(conn=self.conn_id, data=data)
        try:
            packets, rest = self.splitter.feed(data)
        except WireError as e:  # a framing error: the stream cannot go on (the actor dials again)
            self._eof = True
            return DerpClosed(conn=self.conn_id, reason=repr(e))
        if packets:
            self.inbound.packets(packets)
        return DerpBytes(conn=self.conn_id, data=rest) if rest else None

    def _dial(self) -> DerpDialed | DerpDialFailed | None:
        r = self.region
        deadline = time.monotonic() + DIAL_DEADLINE
        try:
            raw = _connect(r, self.ipv6)  # 24d
            if not self._adopt(raw):
                return None
            raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock: socket.socket = raw
            if r.tls:
                ctx = ssl.create_default_context()
                if r.insecure_for_tests:
                    ctx.check_hostname = False
                    ctx.verify_mode = ssl.CERT_NONE
                sock = ctx.wrap_socket(raw, server_hostname=r.host or r.host6)
                if not self._adopt(sock):
                    return None
            up = UpgradeClient("GET", "/derp", _host_header(r.host or r.host6), "DERP",
                               max_head=MAX_HTTP_HEADER)
            sock.sendall(up.request())
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"no HTTP 101 within {DIAL_DEADLINE}s")
                sock.settimeout(min(CONNECT_TIMEOUT, left))
                data = sock.recv(4096)
                if not data:
                    up.receive_eof()
                if (reply := up.receive_data(data)) is not None:
                    break
            sock.settimeout(None)
        except (OSError, WireError, ValueError) as e:
            self._eof = True
            return DerpDialFailed(conn=self.conn_id, reason=f"dial: {e!r}")
        leftover = reply.leftover
        if self.inbound is not None and leftover:  # framed here like every later read (the
            try:  # handshake is not complete yet: nothing is split off, whole frames go on)
                leftover = self.splitter.feed(leftover)[1]
            except WireError as e:
                self._eof = True
                return DerpDialFailed(conn=self.conn_id, reason=f"dial: {e!r}")
        return DerpDialed(conn=self.conn_id, leftover=leftover)

    def _adopt(self, sock: socket.socket) -> bool:
        """Make ``sock`` the one ``close`` shuts; False (and ``sock`` closed) if close came first."""
        with self._lock:
            if not self._closed:
                self.sock = sock
                return True
        _shutdown(sock)
        return False

    def close(self) -> None:
        """From any thread: stop reading and unblock a dial or read in progress."""
        with self._lock:
            self._closed = True
            sock = self.sock
        self._closed_event.set()
        if sock is not None:
            _shutdown(sock)


def _shutdown(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()


def _connect(r: DerpRegion, ipv6: bool) -> socket.socket:
    """TCP to the region's node: its IPv4 (or host name, resolved to IPv4 only with IPv6 off) first,
    then with ``ipv6`` its ``IPv6`` when that is missing or fails (Go dials both, IPv4 preferred)."""
    errors: list[OSError] = []
    if r.host:
        try:
            if ipv6 or _is_ip(r.host):
                if _is_ip(r.host) and ":" in r.host and not ipv6:
                    raise OSError(f"{r.host} is IPv6 and Config.ipv6 is off")
                return socket.create_connection((r.host, r.port), timeout=CONNECT_TIMEOUT)
            return _connect_v4(r.host, r.port)
        except OSError as e:
            errors.append(e)
    if ipv6 and r.host6:
        try:
            return socket.create_connection((r.host6, r.port), timeout=CONNECT_TIMEOUT)
        except OSError as e:
            errors.append(e)
    if not errors:
        why = "" if ipv6 else " over IPv4 (IPv6 is off)"
        raise OSError(f"region {r.region_id}: no address to dial{why}")
    raise errors[-1]


def _connect_v4(host: str, port: int) -> socket.socket:
    """A host name's IPv4 addresses only (``create_connection`` would try its AAAA too)."""
    last: OSError = OSError(f"{host}: no IPv4 address")
    for fam, kind, proto, _, addr in socket.getaddrinfo(host, port, socket.AF_INET, socket.SOCK_STREAM):
        sock = socket.socket(fam, kind, proto)
        try:
            sock.settimeout(CONNECT_TIMEOUT)
            sock.connect(addr)
        except OSError as e:
            sock.close()
            last = e
            continue
        return sock
    raise last


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _host_header(host: str) -> str:
    """The upgrade's ``Host``: an IPv6 literal in brackets, as a URL has it."""
    return f"[{host}]" if ":" in host else host
