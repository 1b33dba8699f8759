"""The exit lab (``pytsnet.testing.exitnet``) with a supervised ``Egress`` in its client namespace.

    client ns: Egress front (in this process, its threads entered into the namespace) + its worker
               processes (forked from those threads: they inherit the namespace), curl, httpx
    exit ns:   the exit node ``exit-b`` (its own process: a test can SIGKILL it), optionally a SOCKS5
               proxy node (``proxy``) whose dials to the internet are host sockets in ``exit``
    internet:  the kernel HTTP server (``BIG`` = a few MiB of random bytes at ``/big.bin``) and DNS

The client namespace has no route out of the lab (or, with ``client_route``, a direct one that nothing
may use). Proxy clients run *in* the client namespace (``client_run`` / ``lab.client.call``).
"""

from __future__ import annotations

import base64
import contextlib
import os
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dns.resolver

from pytsnet.egress import Egress, EgressConfig, EgressStatus
from pytsnet.testing.exitlab import INTERNET_ADDR, WEB_PORT
from pytsnet.testing.exitnet import ExitNet, NodeProcess, exit_tailnet
from pytsnet.testing.polling import wait_until
from pytsnet.testing.socks_upstream import read_socks5_request
from pytsnet.testing.streams import recv_exact
from pytsnet.wire.socks5 import Rep, Socks5Server

PW = "egress-pw-5x7"
"""The front's proxy password (user ``tsnet``)."""
AUTH = "Proxy-Authorization: Basic " + base64.b64encode(f"tsnet:{PW}".encode()).decode()
PROXY_PORT = 1080
PROXY_USER, PROXY_PW = "up", "proxy-pw-93k"
BIG_SIZE = 3 * 1024 * 1024 + 17


@dataclass
class EgressLab:
    w: ExitNet
    eg: Egress
    key: str
    exit_b: NodeProcess | None
    big: bytes
    proxied: list[tuple[str, int]] = field(default_factory=list)
    """(host, port) the upstream proxy node was asked for."""

    @property
    def socks(self) -> str:
        assert self.eg.socks_address is not None
        return self.eg.socks_address

    @property
    def http(self) -> str:
        assert self.eg.http_address is not None
        return self.eg.http_address

    def status(self) -> EgressStatus:
        return self.eg.status()

    def wait_workers(self, exit_ok: bool | None, timeout: float = 40.0) -> EgressStatus:
        """Every worker ready (and its heartbeat's ``exit_ok`` as given, unless None)."""
        def ok() -> bool:
            st = self.status()
            return bool(st.workers) and all(
                w.state == "ready" and (exit_ok is None or w.exit_ok is exit_ok) for w in st.workers)
        wait_until(ok, timeout, f"workers ready, exit_ok={exit_ok}: {self.status()}")
        return self.status()


def _resolve_in_lab(host: str) -> str:
    """The proxy node's resolver: the lab's DNS server (a thread's ``setns`` does not remount
    ``/etc/resolv.conf`` as ``ip netns exec`` does)."""
    try:
        socket.inet_aton(host)
        return host
    except OSError:
        pass
    r = dns.resolver.Resolver(configure=False)
    r.nameservers = [INTERNET_ADDR]
    return str(r.resolve(host, "A", lifetime=5)[0])


def _socks_proxy(lab: EgressLab, conn: Any) -> None:
    """A SOCKS5 proxy (``Socks5Server``) on a tailnet node: its dials are host sockets in ``exit``."""
    conn.settimeout(15)
    s = Socks5Server(PROXY_USER, PROXY_PW)
    try:
        req = read_socks5_request(conn, s)
        if req is None:
            return conn.close()
        lab.proxied.append((req.host, req.port))
        try:
            up = socket.create_connection((_resolve_in_lab(req.host), req.port), timeout=10)
        except Exception:
            conn.sendall(s.reply(Rep.HOST_UNREACHABLE))
            return conn.close()
        host, port = up.getsockname()[:2]
        conn.sendall(s.reply(Rep.SUCCEEDED, host, port))
        if early := s.trailing():
            up.sendall(early)
        conn.settimeout(None)
        up.settimeout(None)

        def pump(src: Any, dst: Any) -> None:
            try:
                while data := src.recv(65536):
                    dst.sendall(data)
            except OSError:
                pass
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_WR)

        t = threading.Thread(target=pump, args=(up, conn), daemon=True)
        t.start()
        pump(conn, up)
        t.join(60)
        up.close()
    except OSError:
        pass
    finally:
        conn.close()


def serve_on_node(lab: EgressLab, hostname: str, port: int, handler: Callable[[Any], None]) -> str:
    """A tailnet node ``hostname`` in the exit namespace serving ``handler(conn)`` per connection on
    ``port`` (threads born in ``exit``: a handler's host sockets live there); its tailnet IPv4."""
    w = lab.w
    dev = w.device(w.lab.exit, hostname)
    with w.lab.exit.entered():
        lst = dev.listen_blocking(port)

        def accept() -> None:
            lst.settimeout(0.5)
            while dev.system is not None:
                try:
                    conn, _ = lst.accept()
                except (TimeoutError, OSError):
                    continue
                threading.Thread(target=handler, args=(conn,), daemon=True).start()

        threading.Thread(target=accept, name=f"{hostname}-accept", daemon=True).start()
    return str(dev.tailscale_ips()[0])


def start_proxy_node(lab: EgressLab) -> str:
    """The tailnet node ``proxy`` serving ``_socks_proxy``; its tailnet IPv4."""
    return serve_on_node(lab, "proxy", PROXY_PORT, lambda conn: _socks_proxy(lab, conn))


@contextlib.contextmanager
def egress_lab(tmp: Path, *, client_route: bool = False, exit_node: bool = True, approve: bool = True,
               workers: int = 1, upstream: bool = False, **cfg: Any) -> Iterator[EgressLab]:
    """The lab, an exit node ``exit-b`` (approved unless ``approve=False``; none if not ``exit_node``),
    and an ``Egress`` in the client namespace whose workers use it (or, with ``upstream``, the proxy
    node as their upstream proxy hop). Drained and closed on exit."""
    with exit_tailnet(tmp, client_route=client_route, prefix="eg") as w:
        big = os.urandom(BIG_SIZE)
        (tmp / "www" / "big.bin").write_bytes(big)
        b = w.node_process(w.lab.exit, "exit-b", advertise_exit_node=True) if exit_node else None
        if b is not None and approve:
            w.approve_exit("exit-b")
        key = w.net.create_authkey(reusable=True, ephemeral=True)
        holder = EgressLab(w=w, eg=Egress(EgressConfig()), key=key, exit_b=b, big=big)
        up_url = None
        if upstream:
            up_url = f"socks5://{PROXY_USER}:{PROXY_PW}@{start_proxy_node(holder)}:{PROXY_PORT}"
        config = EgressConfig(auth_key=key, control_url=w.net.control_url, workers=workers,
                              socks="127.0.0.1:0", http="127.0.0.1:0", proxy_password=PW,
                              exit_node="exit-b" if exit_node else None, upstream_proxy=up_url,
                              heartbeat_interval=0.2, dial_timeout=10, drain_timeout=5, **cfg)
        eg = Egress(config)
        with w.lab.client.entered():  # the front's threads, hence its worker processes, live in client
            eg.start()
        holder.eg = eg
        try:
            yield holder
        finally:
            try:
                eg.drain(5)
            finally:
                eg.close()


def client_run(lab: EgressLab, args: list[str], timeout: float = 60) -> Any:
    """``args`` in the client namespace (a CompletedProcess, text)."""
    return lab.w.lab.client.run(args, check=False, timeout=timeout)


def socks_connect(lab: EgressLab, host: str, port: int) -> tuple[bytes, socket.socket]:
    """A raw SOCKS5 CONNECT (IPv4 target) from the client namespace with the front's credentials: the
    reply's first two bytes (VER, REP) — what a refused client sees, byte for byte — and the socket
    (connected to the target when REP is 0; the rest of the reply is read)."""
    def run() -> tuple[bytes, socket.socket]:
        h, p = lab.socks.rsplit(":", 1)
        s = socket.create_connection((h, int(p)), timeout=30)
        s.sendall(b"\x05\x01\x02")
        assert s.recv(2) == b"\x05\x02"
        s.sendall(b"\x01" + bytes([5]) + b"tsnet" + bytes([len(PW)]) + PW.encode())
        assert s.recv(2) == b"\x01\x00"
        s.sendall(b"\x05\x01\x00\x01" + socket.inet_aton(host) + port.to_bytes(2, "big"))
        rep = s.recv(2)
        if rep == b"\x05\x00":
            assert len(recv_exact(s, 8)) == 8  # RSV, ATYP 1, BND.ADDR, BND.PORT
        return rep, s
    out: tuple[bytes, socket.socket] = lab.w.lab.client.call(run)
    return out


def socks_request(lab: EgressLab, host: str, port: int) -> bytes:
    """``socks_connect``'s VER, REP (the socket closed)."""
    rep, s = socks_connect(lab, host, port)
    s.close()
    return rep


def http_request(lab: EgressLab, head: str) -> bytes:
    """A raw HTTP proxy request from the client namespace (with the front's credentials); the answer
    until the proxy closes (a refusal) or 64 KiB."""
    def run() -> bytes:
        h, p = lab.http.rsplit(":", 1)
        with socket.create_connection((h, int(p)), timeout=30) as s:
            s.sendall(head.encode())
            out = b""
            while len(out) < 65536 and (chunk := s.recv(65536)):
                out += chunk
            return out
    out: bytes = lab.w.lab.client.call(run)
    return out


WEB = f"{INTERNET_ADDR}:{WEB_PORT}"
