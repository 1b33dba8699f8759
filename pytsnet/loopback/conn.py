"""``ProxyConnection``: one local client's connection to the loopback listener, its own actor.

Its thread reads the first byte (Go's ``proxymux``: ``05`` is SOCKS5, anything else HTTP), runs that
handshake under ``handshake_timeout`` (a slowloris is cut there), dials the target through the device
(``tcp_connect_blocking``: netmap, MagicDNS and the exit-node policy; a target beyond the tailnet is
refused before any socket is opened, never dialed from the host network), answers, and then copies
with a ``Splice`` (``actors/netstack/splice.py``: back-pressure, half-closes, paired resets) — or runs
the UDP relay, or one forwarded HTTP exchange. A refusal is written and the connection closed
gracefully (the client reads why). The actor owns the lifetime, as the exit node's ``TcpForwarder``:
killing it (or its crash) resets both the client's socket and the tailnet flow, and nothing else.
"""

from __future__ import annotations

import contextlib
import io
import select
import socket
import struct
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol
from urllib.parse import urlsplit

import h11

from pytsnet.actors.netstack.channel import FlowChannel
from pytsnet.actors.netstack.splice import Splice, SpliceLimits, abort_flow
from pytsnet.actors.runtime import Actor, ActorStopped, MailboxFull, StopReason, handles
from pytsnet.actors.runtime.logs import subsystem_logger
from pytsnet.localapi.http import BodyStream, check_and_handle, read_body, send_response
from pytsnet.localapi.server import LocalResponse
from pytsnet.loopback.http_proxy import PROXY_USER, BadHttp, Connect, Forward, HttpFront, Local, forward
from pytsnet.loopback.outcomes import dial_outcome
from pytsnet.loopback.udp_relay import UdpRelay
from pytsnet.messages.loopback import LoopbackConnDone, LoopbackEvent, LoopbackEventKind, LoopbackSpawn
from pytsnet.wire.http1_body import BodyTooLarge, MalformedHttp
from pytsnet.wire.socks5 import Rep, Socks5AuthFailed, Socks5Error, Socks5Server

if TYPE_CHECKING:
    from pytsnet.localapi.server import LocalApi
    from pytsnet.net import SocketLike, UdpSocket

__all__ = ["ClientStream", "ProxyConnection", "ProxyCreds", "Stopped", "TailnetDialer", "close_gracefully",
           "reset_socket"]

log = subsystem_logger("loopback")

_SLICE = 0.25  # seconds between checks of the stop flag while waiting for the client
_READ = 4096  # one handshake read: a request head arrives in a few of these, bounded by the parsers


class TailnetDialer(Protocol):
    """The device's dials (``ActorDevice`` is one): every policy lives behind them."""

    def tcp_connect_blocking(self, host: str, port: int, timeout: float = ...) -> SocketLike: ...
    def listen_packet_blocking(self, port: int = 0) -> UdpSocket: ...
    def local_api(self) -> LocalApi: ...


@dataclass(frozen=True)
class ProxyCreds:
    proxy: str
    """The SOCKS5 password and HTTP proxy password (user ``tsnet``)."""
    local_api: str
    """The LocalAPI's Basic auth password on this listener (with ``Sec-Tailscale: localapi``, as Go)."""

    def __repr__(self) -> str:
        return "ProxyCreds(<redacted>)"


class Stopped(Exception):
    """The actor is stopping: the thread unwinds (``on_stop`` resets what is open)."""


class _HandshakeTimeout(Exception):
    pass


class ClientStream:
    """The client's socket for the HTTP forward: reads that notice ``stop`` and end at ``idle``."""

    def __init__(self, sock: socket.socket, stop: threading.Event, idle: float) -> None:
        self.sock, self.stop, self.idle = sock, stop, idle

    def recv(self, n: int) -> bytes:
        end = time.monotonic() + self.idle
        while True:
            if self.stop.is_set():
                raise Stopped
            ready, _, _ = select.select([self.sock], [], [], _SLICE)
            if ready:
                return self.sock.recv(n)
            if time.monotonic() > end:
                raise TimeoutError("client idle")

    def sendall(self, data: bytes) -> None:
        self.sock.sendall(data)


class ProxyConnection(Actor):
    def __init__(self, spawn: LoopbackSpawn, sock: socket.socket, creds: ProxyCreds,
                 dialer: TailnetDialer) -> None:
        self.spawn = spawn
        self.sock = sock
        self.creds = creds
        self.dialer = dialer

    def on_start(self) -> None:
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._ch: FlowChannel | None = None
        self._clean = False
        threading.Thread(target=self._run, name=f"{self.name}-run", daemon=True).start()

    # -- lifetime ------------------------------------------------------------------------------------
    @handles(LoopbackConnDone)
    def on_done(self, msg: LoopbackConnDone) -> None:
        self._clean = msg.error is None
        if msg.error is not None:
            log.debug("%s: ended: %s", self.name, msg.error)
        self.stop()

    def on_stop(self, reason: StopReason) -> None:
        """Done cleanly: all is closed already. Else (killed, crashed, a reset): the tailnet flow is
        reset first (its peer sees a RST), then the client's socket (linger 0: a RST too)."""
        with self._lock:
            self._stop.set()
            ch = self._ch
        if not self._clean:
            if ch is not None:
                abort_flow(ch)
            reset_socket(self.sock)
            self._event("reset")
        self._event("closed")

    def _event(self, kind: LoopbackEventKind, n: int = 1) -> None:
        self.tell_named(self.spawn.server, LoopbackEvent(kind=kind, conn=self.name, n=n))

    def _finish(self, error: str | None) -> None:
        with contextlib.suppress(ActorStopped, MailboxFull):
            self.ref.tell(LoopbackConnDone(error=error))

    # -- the connection (own thread) -----------------------------------------------------------------
    def _run(self) -> None:
        try:
            error = self._serve()
        except Stopped:
            error = "stopped"
        except _HandshakeTimeout:
            self._event("handshake_timeout")
            close_gracefully(self.sock)
            error = None
        except OSError as e:
            error = f"client: {e}"
        except Exception as e:  # a bug: this connection ends (reset), the listener and device go on
            log.warning("%s: %r", self.name, e)
            error = repr(e)
        self._finish(error)

    def _serve(self) -> str | None:
        sp, sock = self.spawn, self.sock
        sock.settimeout(sp.handshake_timeout)  # bounds our writes to a client that reads nothing
        deadline = time.monotonic() + sp.handshake_timeout
        first = self._recv(deadline)
        if not first:
            sock.close()
            return None
        if first[0] == 5:
            return self._socks(first, deadline)
        return self._http(first, deadline)

    def _recv(self, deadline: float) -> bytes:
        while True:
            if self._stop.is_set():
                raise Stopped
            left = deadline - time.monotonic()
            if left <= 0:
                raise _HandshakeTimeout
            ready, _, _ = select.select([self.sock], [], [], min(_SLICE, left))
            if ready:
                return self.sock.recv(_READ)

    def _dial(self, host: str, port: int) -> SocketLike:
        fs = self.dialer.tcp_connect_blocking(host, port, self.spawn.dial_timeout)
        with self._lock:
            if self._stop.is_set():
                fs.close()
                raise Stopped
            self._ch = fs._ch
        return fs

    def _refuse(self, data: bytes, kind: LoopbackEventKind) -> None:
        self._event(kind)
        with contextlib.suppress(OSError):
            self.sock.sendall(data)
        close_gracefully(self.sock)

    # -- SOCKS5 ---------------------------------------------------------------------------------------
    def _socks(self, data: bytes, deadline: float) -> str | None:
        s = Socks5Server(PROXY_USER, self.creds.proxy)
        while True:
            try:
                req = s.receive(data)
            except Socks5Error as e:
                self._refuse(s.data_to_send() + e.reply,
                             "auth_failed" if isinstance(e, Socks5AuthFailed) else "bad_socks")
                return None
            out = s.data_to_send()
            if out:
                self.sock.sendall(out)
            if req is not None:
                break
            data = self._recv(deadline)
            if not data:
                self.sock.close()
                return None
        if req.command == "udp_associate":
            return self._udp(s)
        try:
            fs = self._dial(req.host, req.port)
        except OSError as e:
            o = dial_outcome(req.host, e)
            log.debug("%s: SOCKS5 CONNECT %s:%d refused: %s", self.name, req.host, req.port, e)
            self._refuse(s.reply(o.rep), o.kind)
            return None
        self._event("socks_connect")
        host, port = fs._ch.local
        self.sock.sendall(s.reply(Rep.SUCCEEDED, host, port))
        return self._splice(fs._ch, s.trailing())

    def _udp(self, s: Socks5Server) -> str | None:
        try:
            tailnet = self.dialer.listen_packet_blocking(0)
        except OSError:
            self._refuse(s.reply(Rep.GENERAL_FAILURE), "dial_failed")
            return None
        relay = UdpRelay(tailnet, stop=self._stop, count=lambda k: self._event(k),  # type: ignore[arg-type]
                         max_datagram=self.spawn.udp_max_datagram)
        self._event("socks_udp")
        self.sock.sendall(s.reply(Rep.SUCCEEDED, *relay.address))
        relay.run(self.sock)
        if self._stop.is_set():
            raise Stopped
        close_gracefully(self.sock)
        return None

    # -- HTTP -------------------------------------------------------------------------------------------
    def _http(self, data: bytes, deadline: float) -> str | None:
        sp = self.spawn
        front = HttpFront(self.creds.proxy, sp.max_head)
        try:
            req = front.receive(data)
            while req is None:
                data = self._recv(deadline)
                req = front.receive(data)
                if req is None and not data:
                    self.sock.close()
                    return None
            action = front.classify(req)
        except BadHttp as e:
            kind: LoopbackEventKind = "head_too_large" if e.status == 431 else "bad_http"
            self._refuse(front.error(e.status, "bad request"), kind)
            return None
        if isinstance(action, Local) and action.kind == "local_api":
            return self._local_api(front, req, deadline)
        if isinstance(action, Local):
            self._refuse(front.error(action.status, "the LocalAPI is not served here yet"
                                     if action.kind == "local_api" else "not found"),
                         "local_api" if action.kind == "local_api" else "not_found")
            return None
        if not isinstance(action, Connect | Forward):
            self._refuse(front.error(action.status, action.reason), "bad_http")
            return None
        if not front.authorized(req):
            challenge = [(b"proxy-authenticate", b'Basic realm="tsnet"')]
            self._refuse(front.error(407, "proxy authentication required", headers=challenge), "auth_failed")
            return None
        try:
            fs = self._dial(action.host, action.port)
        except OSError as e:
            o = dial_outcome(action.host, e)
            log.debug("%s: HTTP proxy to %s:%d refused: %s", self.name, action.host, action.port, e)
            self._refuse(front.error(o.status, o.reason), o.kind)
            return None
        if isinstance(action, Connect):
            self._event("http_connect")
            head, early = front.established()
            self.sock.sendall(head)
            return self._splice(fs._ch, early)
        self._event("http_forward")
        self.sock.settimeout(sp.idle_timeout)
        fs.settimeout(sp.idle_timeout)
        try:
            forward(front, action, ClientStream(self.sock, self._stop, sp.idle_timeout), fs,
                    max_head=sp.max_head, chunk=sp.buffer)
        except BadHttp as e:
            return f"forward: {e}"  # mid-answer: both sides are reset
        with self._lock:
            self._ch = None
        fs.close()
        close_gracefully(self.sock)
        return None

    def _local_api(self, front: HttpFront, req: h11.Request, deadline: float) -> str | None:
        """Go tsnet's ``/localapi`` on this listener: ``pytsnet.localapi.http`` checks the
        ``Sec-Tailscale`` header and the ``local_api`` credential, then answers (19a). A streaming
        route (Taildrop's ``file-put/``, 22c) reads its body as it arrives, each read given the idle
        timeout."""
        route = self.dialer.local_api().lookup(urlsplit(req.target.decode("ascii", "replace")).path)
        if route is not None and route.streaming:
            idle = self.spawn.idle_timeout
            raw = BodyStream(front.conn, lambda: self._recv(time.monotonic() + idle))
            stream = io.BufferedReader(raw, _READ)
            try:
                resp = check_and_handle(self.dialer.local_api(), req, b"", password=self.creds.local_api,
                                        sec_header=True, stream=stream)
            except MalformedHttp:
                self._refuse(front.error(400, "bad request"), "bad_http")
                return None
            self._event("local_api")
            send_response(self.sock.sendall, front.conn, resp)
            close_gracefully(self.sock)
            return None
        try:
            body: bytes | None = read_body(front.conn, lambda: self._recv(deadline))
        except BodyTooLarge:
            body = None
        except MalformedHttp:
            self._refuse(front.error(400, "bad request"), "bad_http")
            return None
        resp = (LocalResponse.error(413, "request body too large") if body is None else
                check_and_handle(self.dialer.local_api(), req, body, password=self.creds.local_api,
                                 sec_header=True))
        self._event("local_api")
        send_response(self.sock.sendall, front.conn, resp)  # a file's stream too (22c)
        close_gracefully(self.sock)
        return None

    # -- the tunnel -------------------------------------------------------------------------------------
    def _splice(self, ch: FlowChannel, early: bytes) -> str | None:
        sp = self.spawn
        self.sock.settimeout(sp.idle_timeout)
        view = memoryview(early)
        while view:  # what the client sent before our answer: the target's first bytes
            n = ch.try_send(view)
            if n is None:
                if self._stop.is_set():
                    raise Stopped
                ch.wait(ch.send_ready, _SLICE)
                continue
            view = view[n:]
        splice = Splice(self.sock, ch, SpliceLimits(buffer=sp.buffer, idle=sp.idle_timeout),
                        count=self._count_splice, name=self.name, stop=self._stop)
        return splice.run()

    def _count_splice(self, key: str, n: int = 1) -> None:
        if key in ("reset_by_peer", "reset_by_destination", "idle_timeout"):
            self._event("reset")


def reset_socket(sock: socket.socket) -> None:
    """Close with a RST (linger 0): the client sees the connection reset, not a clean end."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.close()


def close_gracefully(sock: socket.socket, drain: float = 1.0, limit: int = 256 * 1024) -> None:
    """FIN after what we wrote; read (and drop) what the client still sends for a moment, so a close
    with unread bytes does not turn into a RST that destroys our answer before the client reads it."""
    try:
        sock.shutdown(socket.SHUT_WR)
        end, got = time.monotonic() + drain, 0
        while got < limit and (left := end - time.monotonic()) > 0:
            ready, _, _ = select.select([sock], [], [], left)
            if not ready:
                break
            chunk = sock.recv(65536)
            if not chunk:
                break
            got += len(chunk)
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError):
            sock.close()

