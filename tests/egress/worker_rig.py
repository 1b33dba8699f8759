"""A LocalTailnet with one Python node, ``web``, and egress worker processes run against it.

``web`` serves on its tailnet address: a TCP echo on ``ECHO_PORT``, HTTP on ``HTTP_PORT`` (``GET /x``
answers ``hello /x``), and two upstream proxies that *are* their targets (after the handshake they
echo, so a flow through them proves the hop; the target asked for is recorded): SOCKS5 on
``SOCKS_PORT`` and HTTP CONNECT on ``CONNECT_PORT``, both with user ``up``/``PROXY_PW``; the target
host ``refuse.test`` is refused (SOCKS5 REP 05 / HTTP 502).

``WorkerProc`` starts ``python -m pytsnet.egress.worker`` as the front would (``worker_command``,
``pass_fds``), sends ``WorkerSetup`` and collects every frame the worker sends.
"""

from __future__ import annotations

import base64
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import h11

from pytsnet.device import ActorDevice
from pytsnet.egress.channel import ChannelClosed, ChannelError, WorkerChannel
from pytsnet.egress.worker import worker_command
from pytsnet.localnet.server import LocalTailnet
from pytsnet.messages.base import Message
from pytsnet.messages.egress import FlowAssign, FlowDone, WorkerReady, WorkerSetup
from pytsnet.net import SocketLike
from pytsnet.testing.socks_upstream import read_socks5_request
from pytsnet.testing.streams import accept_in_threads, echo
from pytsnet.testing.tailnet import local_tailnet
from pytsnet.wire.socks5 import Rep, Socks5Server

ECHO_PORT, HTTP_PORT, SOCKS_PORT, CONNECT_PORT = 7000, 8080, 1080, 3128
PROXY_PW = "up-s3cret-pw"
_M = TypeVar("_M", bound=Message)


@dataclass
class Rig:
    net: LocalTailnet
    web: ActorDevice
    tmp: Path
    stop: threading.Event = field(default_factory=threading.Event)
    proxied: list[tuple[str, str, int]] = field(default_factory=list)
    """(proxy kind, host, port) each upstream proxy was asked for."""

    @property
    def web_ip(self) -> str:
        return self.web.tailscale_ips()[0]


def _http(conn: SocketLike) -> None:
    conn.settimeout(10)
    h = h11.Connection(h11.SERVER)
    try:
        while True:
            ev = h.next_event()
            if ev is h11.NEED_DATA:
                h.receive_data(conn.recv(65536))
                continue
            if isinstance(ev, h11.Request):
                out = b"hello " + ev.target
            elif isinstance(ev, h11.EndOfMessage):
                conn.sendall((h.send(h11.Response(status_code=200, headers=[
                    (b"content-length", str(len(out)).encode())])) or b"")
                    + (h.send(h11.Data(data=out)) or b"") + (h.send(h11.EndOfMessage()) or b""))
                return
            elif not isinstance(ev, h11.Data):
                return
    except (OSError, h11.ProtocolError):
        return
    finally:
        conn.close()


def _socks_proxy(rig: Rig, conn: SocketLike) -> None:
    conn.settimeout(10)
    s = Socks5Server("up", PROXY_PW)
    try:
        req = read_socks5_request(conn, s)
        if req is None:
            return conn.close()
        rig.proxied.append(("socks5", req.host, req.port))
        if req.host == "refuse.test":
            conn.sendall(s.reply(Rep.CONNECTION_REFUSED))
            return conn.close()
        conn.sendall(s.reply(Rep.SUCCEEDED, "192.0.2.1", 4321))
        conn.settimeout(None)
        echo(conn, s.trailing())
    except OSError:
        conn.close()


def _connect_proxy(rig: Rig, conn: SocketLike) -> None:
    conn.settimeout(10)
    h = h11.Connection(h11.SERVER)
    want = b"Basic " + base64.b64encode(f"up:{PROXY_PW}".encode())
    try:
        while True:
            ev = h.next_event()
            if ev is h11.NEED_DATA:
                h.receive_data(conn.recv(4096))
                continue
            break
        if not isinstance(ev, h11.Request):
            return conn.close()
        host, _, port = ev.target.decode().rpartition(":")
        rig.proxied.append(("http", host, int(port)))
        status = 200
        if dict(ev.headers).get(b"proxy-authorization") != want:
            status = 407
        elif host == "refuse.test":
            status = 502
        if status != 200:
            conn.sendall(h.send(h11.Response(status_code=status, reason=b"Nope From Proxy",
                                             headers=[(b"content-length", b"0")])) or b"")
            return conn.close()
        conn.sendall(h.send(h11.Response(status_code=200, headers=[])) or b"")
        conn.settimeout(None)
        echo(conn, h.trailing_data[0])
    except (OSError, h11.ProtocolError):
        conn.close()


@contextmanager
def worker_rig(tmp: Path) -> Iterator[Rig]:
    with local_tailnet(tmp, ["web"]) as tn:
        rig = Rig(tn.net, tn["web"], tmp)
        for port, handler in ((ECHO_PORT, echo), (HTTP_PORT, _http),
                              (SOCKS_PORT, lambda c: _socks_proxy(rig, c)),
                              (CONNECT_PORT, lambda c: _connect_proxy(rig, c))):
            accept_in_threads(rig.web.listen_blocking(port), rig.stop, handler)
        try:
            yield rig
        finally:
            rig.stop.set()


class WorkerProc:
    """One worker process and the front's end of its channel; ``frames`` is everything it sent."""

    def __init__(self, rig: Rig, hostname: str, **setup: Any) -> None:
        self.rig = rig
        self.key = rig.net.create_authkey(reusable=True, ephemeral=True)
        self.hostname = hostname
        self.ch, child = WorkerChannel.pair()
        self.stderr_path = rig.tmp / f"{hostname}.stderr"
        with open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(worker_command(child.fileno()), pass_fds=[child.fileno()],
                                         stderr=err)
        child.close()
        self.frames: list[Message] = []
        self.errors = 0
        self.cond = threading.Condition()
        self.eof = False
        threading.Thread(target=self._read, daemon=True).start()
        defaults: dict[str, Any] = {"bind_host": "127.0.0.1", "heartbeat_interval": 0.2, "up_timeout": 30,
                                    "dial_timeout": 5, "log_level": "INFO"}
        self.setup = WorkerSetup(worker=0, hostname=hostname, control_url=rig.net.control_url,
                                 auth_key=self.key, **(defaults | setup))
        self.ch.send(self.setup)
        self._flow = 0

    def _read(self) -> None:
        while True:
            try:
                got = self.ch.recv()
            except ChannelClosed:
                with self.cond:
                    self.eof = True
                    self.cond.notify_all()
                return
            except ChannelError:
                with self.cond:
                    self.errors += 1
                continue
            assert got is not None
            with self.cond:
                self.frames.append(got[0])
                self.cond.notify_all()

    def wait_for(self, kind: type[_M], pred: Callable[[_M], bool] = lambda m: True,
                 timeout: float = 15.0) -> _M:
        end = time.monotonic() + timeout
        with self.cond:
            while True:
                for m in self.frames:
                    if isinstance(m, kind) and pred(m):
                        return m
                left = end - time.monotonic()
                assert left > 0 and not self.eof, f"no {kind.__name__} from the worker (eof={self.eof})"
                self.cond.wait(left)

    def of(self, kind: type[_M]) -> list[_M]:
        with self.cond:
            return [m for m in self.frames if isinstance(m, kind)]

    def ready(self, timeout: float = 30.0) -> WorkerReady:
        return self.wait_for(WorkerReady, timeout=timeout)

    def flow(self, proto: str = "socks5", host: str = "", port: int = 0, early: bytes = b"",
             tcp: bool = False) -> tuple[int, socket.socket]:
        """Hand the worker a new client socket (a socketpair end, or with ``tcp`` an accepted loopback
        TCP connection, as the front's, where a reset is visible); (flow id, our end)."""
        self._flow += 1
        if tcp:
            with socket.create_server(("127.0.0.1", 0)) as lst:
                ours = socket.create_connection(lst.getsockname())
                theirs, _ = lst.accept()
        else:
            ours, theirs = socket.socketpair()
        ours.settimeout(15)
        self.ch.send(FlowAssign(flow=self._flow, proto=proto, host=host, port=port, early=early,  # type: ignore[arg-type]
                                client="127.0.0.1:1"), [theirs.fileno()])
        theirs.close()
        return self._flow, ours

    def done(self, flow: int, timeout: float = 15.0) -> FlowDone:
        return self.wait_for(FlowDone, lambda m: m.flow == flow, timeout)

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def close(self) -> None:
        self.ch.close()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


@contextmanager
def worker(rig: Rig, hostname: str, **setup: Any) -> Iterator[WorkerProc]:
    w = WorkerProc(rig, hostname, **setup)
    try:
        yield w
    finally:
        w.close()
