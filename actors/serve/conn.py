"""``ServeConnection``: one tailnet connection to a served port, its own actor (never restarted).

Go's ``tcpHandlerForServeTCP`` per connection: ``TCPForward`` splices the flow to a host connection
to the target (dialled with Go's 10 s bound; a failed dial resets the flow), with ``TerminateTLS``
the TLS is terminated first (the certificate for that name, from the cert provider) and the
plaintext piped to the target; ``HTTP``/``HTTPS`` serve the port's Web config (``actors/serve/http``,
TLS first for HTTPS, the certificate for the client's SNI). The session runs on the actor's I/O
thread against a real socket: one end of a socketpair spliced to the flow (``actors/netstack/splice``),
so TLS and h11 work unchanged. A public connection handed over by Funnel (20g, ``handoff``) is served
the same way, its first bytes (``prefix``) before the flow's, as its public source, without identity.
The actor's stop (normal end, a kill, the tree stopping) closes every
socket of the session; an unclean end resets the flow (RST to the client). Nothing outlives it.
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
import ssl
import threading
from collections.abc import Callable
from typing import get_args

from pytsnet.actors.netstack.channel import FlowChannel
from pytsnet.actors.netstack.splice import Splice, abort_flow
from pytsnet.actors.peerapi.ingress import IngressHandoff
from pytsnet.actors.runtime import Actor, ActorError, StopReason, handles
from pytsnet.actors.runtime.logs import subsystem_logger
from pytsnet.actors.serve.certs import ServeCerts
from pytsnet.actors.serve.http import Identity, WebSession
from pytsnet.messages.base import Message
from pytsnet.messages.dataplane import GetDataplaneInfo
from pytsnet.messages.peers import GetPeers
from pytsnet.messages.serve import (
    GetServePortConfig,
    ServeConnDone,
    ServeConnEvent,
    ServeConnEventKind,
    ServeSpawn,
)
from pytsnet.wire.proxy_protocol import encode as encode_proxy_header
from pytsnet.wire.serve import ServeConfig, parse_serve_config, split_host_port

__all__ = ["ServeConnection"]

log = subsystem_logger("serve")

COPY_CHUNK = 64 * 1024


class _Ended(Exception):
    """The session ends here; the message says why (the flow is reset)."""


class ServeConnection(Actor):
    def __init__(self, spawn: ServeSpawn, server: str, port: int, config: str, channel: FlowChannel,
                 certs: ServeCerts | None, service: str = "",
                 handoff: IngressHandoff | None = None) -> None:
        self.spawn = spawn
        self.handoff = handoff  # 20g: a Funnel connection (its public source and first bytes)
        self.service = service
        self.server = server
        self.port = port
        self.config_json = config
        self.ch = channel
        self.certs = certs

    def on_start(self) -> None:
        self._stop = threading.Event()
        self._socks: list[socket.socket] = []
        self._lock = threading.Lock()
        self._splice_error: str | None = None
        self._ran = False
        self._clean = False
        self.start_io_loop(self._session_once, self._close_all)

    def on_stop(self, reason: StopReason) -> None:
        self._stop.set()
        self._close_all()
        if self._clean:
            self.ch.close()
        else:
            abort_flow(self.ch)  # unclean or killed: the client sees a reset, never a silent hang
            self.ch.close()
        self.tell_named(self.server, ServeConnEvent(kind="closed", conn=self.name))

    @handles(ServeConnDone)
    def on_done(self, msg: ServeConnDone) -> None:
        if msg.error is not None:
            log.debug("serve %s: %s", self.name, msg.error)
        self.stop()

    # -- the session (the I/O thread) ------------------------------------------------------------------
    def _close_all(self) -> None:
        self._stop.set()
        with self._lock:
            socks, self._socks = self._socks, []
        for s in socks:
            with contextlib.suppress(OSError):
                s.close()

    def _own(self, s: socket.socket) -> socket.socket:
        with self._lock:
            if self._stop.is_set():
                s.close()
                raise _Ended("stopping")
            self._socks.append(s)
        return s

    def _session_once(self) -> Message | None:
        if self._ran:
            self._stop.wait(1.0)
            return None
        self._ran = True
        try:
            self._session()
        except _Ended as e:
            return ServeConnDone(error=str(e))
        except (OSError, ssl.SSLError, ValueError) as e:
            return ServeConnDone(error=f"{type(e).__name__}: {e}")
        self._clean = True
        return ServeConnDone()

    def _count(self, kind: str) -> None:
        if kind in get_args(ServeConnEventKind):
            self._event(kind)  # type: ignore[arg-type]

    def _event(self, kind: ServeConnEventKind, n: int = 1) -> None:
        self.tell_named(self.server, ServeConnEvent(kind=kind, conn=self.name, n=n))

    def _session(self) -> None:
        cfg = parse_serve_config(self.config_json)
        h = cfg.TCP.get(self.port) if cfg is not None else None
        if cfg is None or h is None:
            raise _Ended(f"port {self.port} is no longer served")
        if self.handoff is not None:
            self._event("funnel")
        if h.TCPForward:
            self._forward(h.TCPForward, h.TerminateTLS, h.ProxyProtocol)
        else:
            self._web(cfg, https=h.HTTPS)

    def _dial(self, target: str) -> socket.socket:
        host, port = split_host_port(target)
        try:
            return self._own(socket.create_connection((host, port), timeout=self.spawn.backend_timeout))
        except OSError as e:
            self._event("backend_error")
            raise _Ended(f"forward to {target}: {e}") from None

    def _spliced_pair(self) -> tuple[socket.socket, threading.Thread]:
        """Our end of a socketpair whose other end is spliced to the flow, and the splice's thread."""
        ours, theirs = socket.socketpair()
        self._own(ours)
        self._own(theirs)
        if self.handoff is not None and self.handoff.prefix:  # 20g: what came with the ingress request
            theirs.sendall(self.handoff.prefix)
        splice = Splice(theirs, self.ch, name=f"{self.name}-splice", stop=self._stop)
        t = threading.Thread(target=self._run_splice, args=(splice,), name=f"{self.name}-splice", daemon=True)
        t.start()
        return ours, t

    def _run_splice(self, splice: Splice) -> None:
        """The splice's thread. Its error (the client reset the flow, or the flow is gone) ends the
        session now: every socket of the session is shut down, so the session's blocked reads (the
        TLS layer on ``ours``, the backend) end instead of waiting for bytes that cannot come."""
        err = splice.run()
        if err is None:
            return
        self._splice_error = err
        self._stop.set()
        with self._lock:
            socks = list(self._socks)
        for s in socks:
            _shutdown(s, socket.SHUT_RDWR)

    def _check_splice(self) -> None:
        if self._splice_error is not None:
            raise _Ended(self._splice_error)

    def _forward(self, target: str, terminate_tls: str, proxy_protocol: int = 0) -> None:
        back = self._dial(target)
        if proxy_protocol:  # 20h: Go's forwardTCPWithProxyProtocol, the header before any byte
            back.sendall(self._proxy_header(proxy_protocol, back))
        back.settimeout(None)
        self._event("forwarded")
        if not terminate_tls:
            if self.handoff is not None and self.handoff.prefix:  # 20g
                back.sendall(self.handoff.prefix)
            err = Splice(back, self.ch, name=f"{self.name}-fwd", stop=self._stop).run()
            if err is not None:
                raise _Ended(err)
            return
        ctx = self._tls_context(terminate_tls)
        ours, splice = self._spliced_pair()
        tls = self._tls_accept(ctx, ours)
        self._own(tls)
        _pipe(tls, back, self._stop)
        # ``wrap_socket`` took ``ours``'s fd (``ours`` is detached: its shutdown raised EBADF, which
        # ended the session as an error and reset the flow under the answer's tail): shut the TLS one
        _shutdown(tls, socket.SHUT_RDWR)
        splice.join(timeout=5.0)  # a last-resort bound: the shutdown above is the splice's EOF
        self._check_splice()

    def _proxy_header(self, version: int, back: socket.socket) -> bytes:
        """Go's PROXY header (20h): the tailnet caller (4-in-6 unmapped) as the source; as the
        destination the node's own address of the caller's family (127.0.0.1 / ::1 when unknown, as
        Go) with the backend's port (Go takes ``backConn.RemoteAddr().Port``)."""
        src = self.ch.remote
        ip = ipaddress.ip_address(src[0])
        mapped = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else None
        family = (mapped or ip).version
        dst_ip = "127.0.0.1" if family == 4 else "::1"
        dp_ref = self.lookup(self.spawn.dataplane)
        if dp_ref is not None:
            try:
                nm = dp_ref.ask(GetDataplaneInfo(), timeout=self.spawn.whois_timeout).netmap
            except ActorError:
                nm = None
            mine = [ipaddress.ip_interface(a).ip for a in nm.self_node.addresses] if nm is not None else []
            dst_ip = next((str(a) for a in mine if a.version == family), dst_ip)
        return encode_proxy_header(version, src, (dst_ip, back.getpeername()[1]))

    def _web(self, cfg: ServeConfig, *, https: bool) -> None:
        ours, splice = self._spliced_pair()
        sock: socket.socket = ours
        sni: str | None = None
        if https:
            holder: dict[str, str] = {}
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.minimum_version = ssl.TLSVersion.TLSv1_2
            ctx.options |= ssl.OP_IGNORE_UNEXPECTED_EOF  # as ServeCerts' contexts (see there)
            ctx.sni_callback = self._sni_callback(holder)
            ctx.set_alpn_protocols(["http/1.1"])
            tls = self._tls_accept(ctx, ours)
            self._own(tls)
            sock = tls
            sni = holder.get("sni", "")
        identity, domain = self._whois()
        if self.handoff is not None:  # 20g: the public client; no tailnet identity (Go's funnelFlow)
            identity = Identity(src_ip=self.handoff.request.src[0], funnel=True)
        # a service port's Web server is the one of the service's FQDN whatever the Host (Go webServerConfig)
        label = self.service.removeprefix("svc:")
        service_host = (f"{label}.{domain}" if domain else label) if self.service else None
        session = WebSession(sock, port=self.port, config=self._current(cfg), tailnet_domain=domain,
                             identity=identity, sni=sni, service_host=service_host,
                             idle_timeout=self.spawn.idle_timeout,
                             backend_timeout=self.spawn.backend_timeout, count=self._count)
        session.run()
        if isinstance(sock, ssl.SSLSocket):  # our close_notify, without waiting for the client's
            with contextlib.suppress(OSError, ssl.SSLError, ValueError):
                sock.settimeout(0.0)
                sock.unwrap()
        # The transport's shutdown is the splice's EOF, hence the flow's FIN. With HTTPS, ``ours`` was
        # detached by ``wrap_socket`` (its own shutdown fails with EBADF): shut the TLS socket's fd, or
        # the splice never hears the end and the session waits out the join bound below.
        _shutdown(sock, socket.SHUT_RDWR)
        splice.join(timeout=5.0)  # a last-resort bound, as in ``_forward``
        self._check_splice()

    def _current(self, accepted: ServeConfig) -> Callable[[], ServeConfig | None]:
        """The port's config in force, asked of the port server before each request (parsed once per
        change); a port server that is gone (the port was removed) serves nothing: 404s."""
        cache: dict[str, ServeConfig | None] = {self.config_json: accepted}

        def current() -> ServeConfig | None:
            ref = self.lookup(self.server)
            if ref is None:
                return None
            try:
                text = ref.ask(GetServePortConfig(), timeout=self.spawn.whois_timeout).config
            except ActorError:
                return None
            if text not in cache:
                cache.clear()
                cache[text] = parse_serve_config(text)
            return cache[text]
        return current

    # -- TLS -------------------------------------------------------------------------------------------------
    def _tls_context(self, domain: str) -> ssl.SSLContext:
        if self.certs is None:
            self._event("tls_error")
            raise _Ended("no certificate provider: TLS cannot be terminated")
        try:
            return self.certs.context(domain)  # the tree's cached context for the pair in force
        except Exception as e:  # the provider's failure (no HTTPS on the tailnet, ACME down): this conn only
            self._event("tls_error")
            raise _Ended(f"certificate for {domain}: {e}") from None

    def _sni_callback(self, holder: dict[str, str]
                      ) -> Callable[[ssl.SSLObject, str, ssl.SSLContext], int | None]:
        """Go ``getTLSServeCertForPort``: the certificate for the name the client asked (none: refused)."""
        def pick(sock: ssl.SSLObject, name: str | None, _ctx: ssl.SSLContext) -> int | None:
            if not name:
                return ssl.ALERT_DESCRIPTION_UNRECOGNIZED_NAME
            try:
                sock.context = self._tls_context(name)
            except _Ended:
                return ssl.ALERT_DESCRIPTION_INTERNAL_ERROR
            holder["sni"] = name
            return None
        return pick

    def _tls_accept(self, ctx: ssl.SSLContext, sock: socket.socket) -> ssl.SSLSocket:
        sock.settimeout(self.spawn.idle_timeout)
        try:
            return ctx.wrap_socket(sock, server_side=True)
        except (OSError, ssl.SSLError) as e:
            self._event("tls_error")
            raise _Ended(f"TLS handshake: {e}") from None

    # -- who is calling --------------------------------------------------------------------------------------
    def _whois(self) -> tuple[Identity, str]:
        """Go ``WhoIs`` on the source address, and our tailnet's MagicDNS domain (for Host → Web key)."""
        src = self.ch.remote[0]
        unknown = Identity(src_ip=src)
        peers_ref, dp_ref = self.lookup(self.spawn.peers), self.lookup(self.spawn.dataplane)
        if peers_ref is None or dp_ref is None:
            return unknown, ""
        try:
            nm = dp_ref.ask(GetDataplaneInfo(), timeout=self.spawn.whois_timeout).netmap
            table = peers_ref.ask(GetPeers(), timeout=self.spawn.whois_timeout)
        except ActorError:
            return unknown, ""
        if nm is None:
            return unknown, ""
        name = nm.self_node.name.rstrip(".")
        domain = name.split(".", 1)[1] if "." in name else ""
        ip = ipaddress.ip_address(src)
        for node in [nm.self_node, *table.peers]:
            if any(ip == ipaddress.ip_interface(a).ip for a in node.addresses):
                user = nm.user_profiles.get(node.user)
                if user is None:
                    return Identity(src_ip=src, tagged=bool(node.tags), known=True), domain
                return Identity(src_ip=src, login_name=user.login_name, display_name=user.display_name,
                                tagged=bool(node.tags), known=True), domain
        self._event("unknown_peer")
        return unknown, domain


def _pipe(client: ssl.SSLSocket, back: socket.socket, stop: threading.Event) -> None:
    """Copy both ways. The client's end (TLS close or EOF) half-closes the backend, whose answer still
    flows back; the backend's end ends the session with a TLS close (close_notify, as Go's deferred
    ``tls.Conn.Close``: a bare EOF reads as a truncation to a strict client; TLS has no half-close)."""
    def copy(src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError, ssl.SSLError, ValueError):
            while not stop.is_set():
                data = src.recv(COPY_CHUNK)
                if not data:
                    return
                dst.sendall(data)

    client.settimeout(None)
    def upward() -> None:
        copy(client, back)
        _shutdown(back, socket.SHUT_WR)

    up = threading.Thread(target=upward, daemon=True)
    up.start()
    copy(back, client)
    _shutdown(client, socket.SHUT_RD)  # ends the other direction's TLS read (EOF) ...
    _shutdown(back, socket.SHUT_RDWR)  # ... and its write to the backend
    up.join(timeout=5.0)
    if not up.is_alive():  # the TLS object is ours alone now: its close_notify, without waiting for one
        with contextlib.suppress(OSError, ssl.SSLError, ValueError):
            client.settimeout(0.0)
            client.unwrap()
    _shutdown(client, socket.SHUT_RDWR)


def _shutdown(sock: socket.socket, how: int) -> None:
    """The transport's shutdown, under any TLS on it (an SSLSocket's own would drop its state mid-read)."""
    with contextlib.suppress(OSError):
        socket.socket.shutdown(sock, how)
