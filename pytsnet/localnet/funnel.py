"""localnet as a Funnel ingress (``localnet --funnel HOST:PORT``): public TCP on the host carried to
a tailnet node the way Tailscale's ingress nodes do it.

The ingress is itself a tailnet node: an ``ActorDevice`` joined to this localnet with the tag
``tag:funnel-ingress``, which localnet's control grants the peer capability
``https://tailscale.com/cap/ingress`` towards the Funnel nodes (``funnel_policy.py``). For each
public connection it reads the TLS ClientHello (not terminating TLS: the node does) for its server
name, finds the tailnet node with that MagicDNS name, dials that node's peerAPI over the tailnet,
sends ``POST /v0/ingress`` with ``Tailscale-Ingress-Src`` (the public client's ``ip:port``) and
``Tailscale-Ingress-Target`` (``name:port``), and on ``101 Switching Protocols`` sends the
ClientHello on and splices the two (``actors/netstack/splice.py``). Anything else (no TLS, an
unknown name, a refusal, a slow client: ``hello_timeout``) closes the public connection, counted in
``stats``; at ``max_connections`` a new connection is closed at once.

The target port is the public port when that is a Funnel port (443, 8443, 10000), else 443
(``target_port`` overrides): tests listen on a free loopback port and reach the node's 443.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import socket
import threading
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

from pytsnet.actors.netstack.channel import FlowChannel
from pytsnet.actors.netstack.splice import Splice, abort_flow
from pytsnet.localnet.funnel_policy import INGRESS_HOSTNAME, INGRESS_TAG
from pytsnet.wire.clienthello import MAX_HELLO, ClientHelloError, client_hello_sni

if TYPE_CHECKING:
    from pytsnet.device import ActorDevice
    from pytsnet.localnet.server import LocalTailnet
    from pytsnet.messages.peers import PeerInfo
    from pytsnet.net.socket import SocketLike

__all__ = ["FunnelIngress", "parse_funnel"]

log = logging.getLogger(__name__)

FUNNEL_PORTS = (443, 8443, 10000)
MAX_RESPONSE_HEAD = 4096


def parse_funnel(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT``) of the public listener; ``ValueError`` otherwise."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"--funnel wants HOST:PORT, got {text!r}")
    return host.strip("[]"), int(port)


class FunnelIngress:
    """The public listener and the ingress node; ``start``/``close`` (LocalTailnet does both)."""

    def __init__(self, net: LocalTailnet, listen: str, state_dir: Path, *, target_port: int | None = None,
                 max_connections: int = 256, hello_timeout: float = 10.0, dial_timeout: float = 10.0,
                 register_timeout: float = 30.0) -> None:
        self.net = net
        self.listen = parse_funnel(listen)
        self.state_dir = state_dir
        self._target_port = target_port
        self.max_connections = max_connections
        self.hello_timeout = hello_timeout
        self.dial_timeout = dial_timeout
        self.register_timeout = register_timeout
        self.stats: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._open = 0
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._closed = threading.Event()
        self.device: ActorDevice | None = None

    @property
    def address(self) -> tuple[str, int]:
        """The public listener's bound address."""
        assert self._sock is not None, "not started"
        host, port = self._sock.getsockname()[:2]
        return host, port

    @property
    def target_port(self) -> int:
        if self._target_port is not None:
            return self._target_port
        port = self.address[1]
        return port if port in FUNNEL_PORTS else 443

    def start(self) -> FunnelIngress:
        from pytsnet.config import Config
        from pytsnet.device import ActorDevice

        host = self.net.listen[0]
        cfg = Config(dir=self.state_dir, hostname=INGRESS_HOSTNAME, control_url=self.net.control_url,
                     auth_key=self.net.create_authkey(tags=[INGRESS_TAG]))
        if host not in ("", "0.0.0.0", "::"):  # its UDP where control listens (loopback in tests)
            cfg = dataclasses.replace(cfg, bind_host=host, ipv6=":" in host)  # 24d: an IPv6 control host
        self.device = ActorDevice(cfg)
        self.device.start()
        # registered before any node asks for Funnel: their maps carry its grant from the first one
        self.device.wait_until_running_blocking(self.register_timeout)
        family = socket.AF_INET6 if ":" in self.listen[0] else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(self.listen)
        sock.listen(128)
        sock.settimeout(0.5)
        self._sock = sock
        self._thread = threading.Thread(target=self._accept_loop, name="funnel-ingress", daemon=True)
        self._thread.start()
        log.info("funnel: ingress listening on %s:%d (targets' port %d)", *self.address, self.target_port)
        return self

    def close(self) -> None:
        self._closed.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._sock is not None:
            self._sock.close()
        if self.device is not None:
            self.device.close()

    def sees(self, name: str) -> bool:
        """The ingress node knows a peer by this MagicDNS name (routes to it can work)."""
        return self._peer(name.rstrip(".").lower()) is not None

    # -- per connection ------------------------------------------------------------------------------
    def _accept_loop(self) -> None:
        assert self._sock is not None
        while not self._closed.is_set():
            try:
                conn, addr = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                busy = self._open >= self.max_connections
                if not busy:
                    self._open += 1
            if busy:
                self.stats["busy"] += 1
                conn.close()
                continue
            threading.Thread(target=self._serve, args=(conn, addr), name=f"funnel-{addr[1]}",
                             daemon=True).start()

    def _serve(self, conn: socket.socket, addr: tuple[str, int]) -> None:
        try:
            self.stats["accepted"] += 1
            self._carry(conn, addr)
        except Exception as e:  # one connection's failure is that connection's only
            self.stats["failed"] += 1
            log.debug("funnel: connection from %s:%d failed: %s", addr[0], addr[1], e)
        finally:
            conn.close()
            with self._lock:
                self._open -= 1

    def _read_hello(self, conn: socket.socket) -> tuple[str, bytes] | None:
        conn.settimeout(self.hello_timeout)
        data = b""
        while True:
            try:
                chunk = conn.recv(4096)
            except (TimeoutError, OSError):
                self.stats["hello_timeout"] += 1
                return None
            if not chunk:
                self.stats["no_hello"] += 1
                return None
            data += chunk
            try:
                name = client_hello_sni(data)
            except ClientHelloError as e:
                self.stats["bad_hello"] += 1
                log.debug("funnel: not a usable ClientHello: %s", e)
                return None
            if name is not None:
                return name, data
            if len(data) > MAX_HELLO:
                self.stats["bad_hello"] += 1
                return None

    def _peer(self, name: str) -> PeerInfo | None:
        dev = self.device
        if dev is None:
            return None
        for p in dev.peers():
            if p.name.rstrip(".").lower() == name and p.peerapi_ports.get("peerapi4"):
                return p
        return None

    def _carry(self, conn: socket.socket, addr: tuple[str, int]) -> None:
        got = self._read_hello(conn)
        if got is None:
            return
        name, hello = got
        peer = self._peer(name)
        if peer is None or self.device is None:
            self.stats["unknown_target"] += 1
            log.info("funnel: no tailnet node named %r: dropped", name)
            return
        ip = next(a.split("/")[0] for a in peer.addresses if ":" not in a)
        port = peer.peerapi_ports["peerapi4"]
        src = f"[{addr[0]}]:{addr[1]}" if ":" in addr[0] else f"{addr[0]}:{addr[1]}"
        tail = self.device.tcp_connect_blocking(ip, port, timeout=self.dial_timeout)
        try:
            tail.settimeout(self.dial_timeout)
            tail.sendall((f"POST /v0/ingress HTTP/1.1\r\nHost: {ip}:{port}\r\n"
                          f"Tailscale-Ingress-Src: {src}\r\n"
                          f"Tailscale-Ingress-Target: {name}:{self.target_port}\r\n"
                          "Content-Length: 0\r\n\r\n").encode())
            head, early = self._response_head(tail)
            if not head.startswith(b"HTTP/1.1 101 "):
                self.stats["refused"] += 1
                log.info("funnel: %s refused the ingress: %r", name, head.split(b"\r\n", 1)[0][:80])
                tail.close()
                return
            tail.sendall(hello)
            if early:
                conn.sendall(early)
        except (OSError, TimeoutError):
            self.stats["refused"] += 1
            tail.close()
            return
        self.stats["spliced"] += 1
        conn.settimeout(None)
        ch = _channel(tail)
        if Splice(sock=conn, ch=ch, name=f"funnel-{addr[1]}").run() is not None:
            abort_flow(ch)

    @staticmethod
    def _response_head(tail: SocketLike) -> tuple[bytes, bytes]:
        data = b""
        while b"\r\n\r\n" not in data:
            if len(data) > MAX_RESPONSE_HEAD:
                return b"", b""
            chunk = tail.recv(1024)
            if not chunk:
                return data, b""
            data += chunk
        head, _, rest = data.partition(b"\r\n\r\n")
        return head + b"\r\n\r\n", rest


def _channel(sock: SocketLike) -> FlowChannel:
    with contextlib.suppress(AttributeError):
        return sock._ch  # the tailnet flow under the socket-like object (as the device's bridge)
    raise TypeError("not a tailnet socket")
