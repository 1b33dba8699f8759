"""``EgressFlow``: one proxy client's flow inside an egress worker, its own actor.

The front already ran the handshake up to the request and handed us the client's socket (``FlowAssign``
+ fd). This actor's thread does the rest, as the loopback listener's ``ProxyConnection`` does after its
own handshake, with the same pieces: the dial through the device (``tcp_connect_blocking``: tailnet,
MagicDNS, the exit-node policy; fail closed, never a host socket), optionally the upstream proxy hop
(``pytsnet.egress.upstream``, the proxy itself dialed through the tailnet), the answer (SOCKS5 REP or
HTTP status mapped by ``dial_outcome``), then a ``Splice`` (or one forwarded ``http://`` exchange).

The actor owns the lifetime: stopping it (a drain's deadline, the channel's EOF, a crash) resets both
the client's socket and the tailnet flow, and ``on_stop`` reports the one ``FlowDone`` of the flow with
its outcome and byte counts — so the worker hears exactly one end per flow, however it ended.
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, NoReturn, Protocol

import h11

from pytsnet.actors.netstack.channel import FlowChannel
from pytsnet.actors.netstack.splice import Splice, SpliceLimits, abort_flow
from pytsnet.actors.peers.routes import is_tailnet_ip
from pytsnet.actors.runtime import Actor, ActorStopped, MailboxFull, StopReason, handles
from pytsnet.actors.runtime.logs import subsystem_logger
from pytsnet.egress.upstream import UpstreamProxy, UpstreamRefused, handshake
from pytsnet.loopback.conn import ClientStream, Stopped, close_gracefully, reset_socket
from pytsnet.loopback.http_proxy import BadHttp, Connect, HttpFront, Local, Refuse, forward
from pytsnet.loopback.outcomes import dial_outcome
from pytsnet.messages.egress import FlowAssign, FlowDone, FlowOutcome, WorkerSetup
from pytsnet.messages.loopback import LoopbackConnDone
from pytsnet.wire.socks5 import Rep, encode_reply

if TYPE_CHECKING:
    from pytsnet.net import SocketLike

__all__ = ["Dialer", "EgressFlow", "FlowSettings", "refusal"]

log = subsystem_logger("egress")

Report = Callable[[FlowDone], None]
Count = Callable[[str, int], None]
"""``("up" | "down", n)``: bytes client → target / target → client, as they move (the heartbeat's)."""


class Dialer(Protocol):
    """The device's dial (``ActorDevice`` is one): every policy lives behind it."""

    def tcp_connect_blocking(self, host: str, port: int, timeout: float = ...) -> SocketLike: ...


@dataclass(frozen=True)
class FlowSettings:
    dial_timeout: float = 15.0
    idle_timeout: float = 7200.0
    buffer: int = 64 * 1024
    max_head: int = 16 * 1024
    upstream: UpstreamProxy | None = None

    def __repr__(self) -> str:
        return f"FlowSettings(dial_timeout={self.dial_timeout}, upstream={self.upstream})"  # no credentials

    @classmethod
    def from_setup(cls, s: WorkerSetup) -> FlowSettings:
        """``ValueError`` for an upstream proxy URL that is not one (the URL is not in the message)."""
        up = UpstreamProxy.parse(s.upstream_proxy) if s.upstream_proxy else None
        return cls(s.dial_timeout, s.idle_timeout, s.buffer, s.max_head, up)


def refusal(assign: FlowAssign, rep: Rep, status: int, reason: str, max_head: int = 16 * 1024) -> bytes:
    """What a client whose flow we will not serve hears: SOCKS5 ``rep`` or HTTP ``status`` + reason."""
    if assign.proto == "socks5":
        return encode_reply(rep)
    front = HttpFront("", max_head)
    with contextlib.suppress(BadHttp):
        front.receive(assign.early)
    return front.error(status, reason)  # a bare status line if h11 never saw the head


class _Origin:
    """The tailnet side of a forwarded exchange: the upstream's early bytes first, bytes counted up."""

    def __init__(self, fs: SocketLike, early: bytes, count: Count) -> None:
        self.fs, self.early, self.count = fs, early, count

    def recv(self, n: int) -> bytes:
        if self.early:
            out, self.early = self.early[:n], self.early[n:]
            return out
        return self.fs.recv(n)

    def sendall(self, data: bytes) -> None:
        self.fs.sendall(data)
        self.count("up", len(data))


class _Client(ClientStream):
    """The client's side of a forwarded exchange: bytes to it counted down."""

    def __init__(self, sock: socket.socket, stop: threading.Event, idle: float, count: Count) -> None:
        super().__init__(sock, stop, idle)
        self.count = count

    def sendall(self, data: bytes) -> None:
        super().sendall(data)
        self.count("down", len(data))


def _beyond_tailnet(fs: SocketLike) -> bool:
    """The stream's peer is not a tailnet address (so it is reached through an exit node)."""
    try:
        return not is_tailnet_ip(ipaddress.ip_address(fs.getpeername()[0]))
    except (OSError, ValueError, IndexError):
        return False


class _Answered(Exception):
    """The flow was refused and the client told why."""

    def __init__(self, outcome: FlowOutcome, reason: str) -> None:
        super().__init__(reason)
        self.outcome, self.reason = outcome, reason


class EgressFlow(Actor):
    def __init__(self, assign: FlowAssign, sock: socket.socket, dialer: Dialer, settings: FlowSettings,
                 report: Report, count: Count, cut: threading.Event,
                 beyond: threading.Event | None = None) -> None:
        self.assign = assign
        self.sock = sock
        self.dialer = dialer
        self.settings = settings
        self.report = report
        self.total = count
        self.cut = cut
        """Set by the worker before it stops us: the flow was cut (drain deadline, channel EOF)."""
        self.beyond = beyond
        """Set once the dialed stream's peer is beyond the tailnet (so it rides the exit node): the
        worker cuts such flows when its exit node has been gone for a while."""

    def on_start(self) -> None:
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._ch: FlowChannel | None = None
        self._result: tuple[FlowOutcome, str | None] | None = None
        self._up = self._down = 0
        threading.Thread(target=self._run, name=f"{self.name}-run", daemon=True).start()

    # -- lifetime ------------------------------------------------------------------------------------
    @handles(LoopbackConnDone)
    def on_done(self, msg: LoopbackConnDone) -> None:
        self.stop()

    def on_stop(self, reason: StopReason) -> None:
        """Ended by itself cleanly (or answered with a refusal): all is closed. Else (cut, reset,
        crashed): the tailnet flow is reset first, then the client's socket (linger 0: a RST)."""
        with self._lock:
            self._stop.set()
            ch = self._ch
            result = self._result
        outcome: FlowOutcome
        if result is not None:
            outcome, error = result
        elif self.cut.is_set():
            outcome, error = "cut", "cut by the worker"
        else:
            outcome, error = "error", f"stopped: {reason}"
        if outcome not in ("ok", "dial_failed", "refused"):
            if ch is not None:
                abort_flow(ch)
            reset_socket(self.sock)
        self.report(FlowDone(flow=self.assign.flow, outcome=outcome, error=error, bytes_up=self._up,
                             bytes_down=self._down))

    def _count(self, key: str, n: int = 1) -> None:
        if key == "bytes_in" or key == "up":
            self._up += n
            self.total("up", n)
        elif key == "bytes_out" or key == "down":
            self._down += n
            self.total("down", n)

    # -- the flow (own thread) -----------------------------------------------------------------------
    def _run(self) -> None:
        try:
            result = self._serve()
        except Stopped:
            result = ("cut", "cut by the worker") if self.cut.is_set() else ("error", "stopped")
        except _Answered as e:
            result = e.outcome, e.reason
        except OSError as e:
            result = ("reset", f"client: {e}")
        except Exception as e:  # a bug: this flow ends (reset), the worker and its other flows go on
            log.warning("%s: %r", self.name, e)
            result = ("error", repr(e))
        with self._lock:
            if self._result is None:
                self._result = result
        with contextlib.suppress(ActorStopped, MailboxFull):
            self.ref.tell(LoopbackConnDone(error=result[1]))

    def _serve(self) -> tuple[FlowOutcome, str | None]:
        a, st = self.assign, self.settings
        self.sock.settimeout(st.idle_timeout)  # bounds our writes to a client that reads nothing
        if a.proto == "socks5":
            fs, early = self._connect(a.host, a.port, None)
            host, port = fs.getsockname()
            self.sock.sendall(encode_reply(Rep.SUCCEEDED, host, port) + early)
            self._count("down", len(early))
            return self._splice(fs, a.early)
        front = HttpFront("", st.max_head)  # the front authorized the request already
        try:
            req = front.receive(a.early)
            client = ClientStream(self.sock, self._stop, st.dial_timeout)
            while req is None:  # the front sends a complete head; this only bounds a short one
                data = client.recv(4096)
                req = front.receive(data)
                if req is None and not data:
                    raise _Answered("error", "client closed before its request head")
            action = front.classify(req)
        except BadHttp as e:
            self._refuse(front.error(e.status, "bad request"), "error", str(e))
        except TimeoutError:
            self._refuse(front.error(408, "request timeout"), "error", "request head timeout")
        if isinstance(action, Refuse):
            self._refuse(front.error(action.status, action.reason), "refused", action.reason)
        if isinstance(action, Local):  # the LocalAPI is the loopback listener's, never a worker's
            self._refuse(front.error(404, "not found"), "refused", "not a proxy request")
        fs, early = self._connect(action.host, action.port, front)
        if isinstance(action, Connect):
            head, trailing = front.established()
            self.sock.sendall(head + early)
            self._count("down", len(early))
            return self._splice(fs, trailing)
        fs.settimeout(st.idle_timeout)
        try:
            forward(front, action, _Client(self.sock, self._stop, st.idle_timeout, self._count),
                    _Origin(fs, early, self._count), max_head=st.max_head, chunk=st.buffer)
        except BadHttp as e:
            return "reset", f"forward: {e}"  # mid-answer: both sides are reset
        except h11.ProtocolError as e:
            return "reset", f"forward: {e}"
        with self._lock:
            self._ch = None
        fs.close()
        close_gracefully(self.sock)
        return "ok", None

    def _refuse(self, answer: bytes, outcome: FlowOutcome, reason: str) -> NoReturn:
        with contextlib.suppress(OSError):
            self.sock.sendall(answer)
        close_gracefully(self.sock)
        raise _Answered(outcome, reason)

    def _dial(self, host: str, port: int) -> SocketLike:
        fs = self.dialer.tcp_connect_blocking(host, port, self.settings.dial_timeout)
        with self._lock:
            if self._stop.is_set():
                fs.close()
                raise Stopped
            self._ch = fs._ch
        if self.beyond is not None and _beyond_tailnet(fs):
            self.beyond.set()
        return fs

    def _connect(self, host: str, port: int, front: HttpFront | None) -> tuple[SocketLike, bytes]:
        """The tailnet stream to ``host:port`` (through the upstream proxy if one is set) and the
        tunnel bytes that came with the proxy's answer; a failure answers the client and ends the flow."""
        up = self.settings.upstream
        dialed = up.host if up is not None else host
        try:
            fs = self._dial(dialed, up.port if up is not None else port)
        except OSError as e:
            o = dial_outcome(dialed, e)
            log.debug("%s: dial %s:%d refused: %s", self.name, host, port, o.reason)
            reason = o.reason if up is None else f"upstream proxy: {o.reason}"
            self._refuse(encode_reply(o.rep) if front is None else front.error(o.status, reason),
                         "dial_failed", reason)
        if up is None:
            return fs, b""
        fs.settimeout(self.settings.dial_timeout)
        try:
            early = handshake(up, fs, host, port)
        except (UpstreamRefused, OSError) as e:
            with self._lock:
                self._ch = None
            abort_flow(fs._ch)
            if isinstance(e, UpstreamRefused):
                rep, status, reason = e.rep, e.status, e.reason
            else:
                o = dial_outcome(host, e)
                rep, status, reason = o.rep, o.status, f"upstream proxy: {o.reason}"
            log.debug("%s: upstream %s to %s:%d: %s", self.name, up, host, port, reason)
            self._refuse(encode_reply(rep) if front is None else front.error(status, reason),
                         "dial_failed", reason)
        fs.settimeout(None)
        return fs, early

    def _splice(self, fs: SocketLike, early: bytes) -> tuple[FlowOutcome, str | None]:
        st = self.settings
        if early:  # what the client sent before our answer: the target's first bytes
            fs.settimeout(st.idle_timeout)
            fs.sendall(early)
            self._count("up", len(early))
        splice = Splice(self.sock, fs._ch, SpliceLimits(buffer=st.buffer, idle=st.idle_timeout),
                        count=self._count, name=self.name, stop=self._stop)
        error = splice.run()
        return ("ok", None) if error is None else ("reset", error)
