"""The front end: listeners, one handshake actor per client, and the router that dispatches flows.

    egress (ActorSystem)
    ├── egress.router         EgressRouter   the slot table, dispatch, counters, restart budget, state
    ├── egress.worker-I       WorkerSlot     one per worker process (``supervisor``)
    └── egress.socks.sup / egress.http.sup   a ``connserver`` tree per listener:
        ├── egress.socks.conns                 budget 0
        │   └── egress.socks-cI-N  Handshake   Restart.NEVER, one per accepted client
        └── egress.socks           FrontListener the accept loop, at most ``max_handshakes`` at once

A ``Handshake`` runs the proxy handshake only up to the request, bounded in time
(``handshake_timeout``: a slowloris is cut) and size (SOCKS5's own bound, ``max_head`` for HTTP): the
SOCKS5 greeting, user/pass auth and CONNECT (``early`` = bytes after it); or an HTTP request head
that is a CONNECT or an ``http://`` URI, authorized (``Proxy-Authorization: Basic tsnet:<pw>``), passed
whole as ``early`` (the worker parses it again and answers). Both listeners sniff the first byte
(``05``: SOCKS5) as the loopback proxy does. Bad input is answered (SOCKS5's own replies, HTTP
400/404/407/431) and counted ``refused``; UDP ASSOCIATE is REP 07. Then the handshake detaches the
socket and tells the router a ``Dispatch`` with its fd.

The router picks the least-loaded ready worker (flows open as the front counts them: assigned minus
done), or with ``affinity`` the one this client IP used while it is still ready, and tells its slot a
``SlotFlow``; with no worker ready it holds the flow (bounded, ``ready_wait``) while a slot is starting
or backing off, else answers itself (REP 01 / HTTP 503). It keeps the restart budget across slots;
spent, it escalates: every later flow is refused with the reason and the workers are drained.
"""

from __future__ import annotations

import contextlib
import itertools
import select
import socket
import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, NoReturn

from pytsnet.actors.connserver import SocketServer
from pytsnet.actors.runtime import Actor, ActorRef, ActorStopped, MailboxFull, Restart, StopReason, handles
from pytsnet.actors.runtime.logs import subsystem_logger
from pytsnet.egress.supervisor import refuse_flow
from pytsnet.loopback.http_proxy import PROXY_USER, BadHttp, Connect, Forward, HttpFront, Local
from pytsnet.messages.egress import (
    Dispatch,
    DrainRequest,
    EgressState,
    EgressStatus,
    FlowAssign,
    FrontAccepted,
    FrontCounters,
    FrontEvent,
    FrontTally,
    HandshakeDone,
    RouterTick,
    SlotDrain,
    SlotFlow,
    SlotFlowDone,
    SlotLost,
    SlotReport,
    SlotRestart,
    SlotStopped,
    StatusRequest,
    WorkerStatus,
)
from pytsnet.wire.socks5 import Rep, Socks5Error, Socks5Server

if TYPE_CHECKING:
    from pytsnet.actors.runtime import ActorSystem
    from pytsnet.egress.config import EgressConfig

__all__ = ["ROUTER", "EgressRouter", "FrontListener", "Handshake"]

log = subsystem_logger("egress")

ROUTER = "egress.router"
ROUTER_TICK = 0.1
ACCEPT_POLL = 0.25
_READ = 4096
_SLICE = 0.25
_AFFINITY_MAX = 4096


# -- the router ---------------------------------------------------------------------------------------------
@dataclass
class _Slot:
    status: WorkerStatus
    open: set[int]
    last_beat: float | None = None


class EgressRouter(Actor):
    def __init__(self, cfg: EgressConfig, slots: tuple[str, ...]) -> None:
        self.cfg = cfg
        self.slot_names = slots

    def on_start(self) -> None:
        self._state: EgressState = "starting"
        self._reason: str | None = None
        self._slots = {i: _Slot(WorkerStatus(worker=i, state="starting"), set())
                       for i in range(len(self.slot_names))}
        self._front = FrontCounters()
        self._pending: deque[tuple[float, Dispatch]] = deque()
        self._affinity: OrderedDict[str, int] = OrderedDict()
        self._losses: deque[float] = deque()
        self._flow_ids = itertools.count(1)
        self._picks = itertools.count()
        self._last_pick: dict[int, int] = {}
        self.send_interval(ROUTER_TICK, RouterTick())

    def on_stop(self, reason: StopReason) -> None:
        while self._pending:  # never handed over: answer, do not leak the fds
            _, d = self._pending.popleft()
            refuse_flow(d.fd, d.proto, "egress stopped")

    def _count(self, **add: int) -> None:
        self._front = self._front.model_copy(update={k: getattr(self._front, k) + v for k, v in add.items()})

    def _refuse(self, d: Dispatch, text: str) -> None:
        self._count(refused=1, bytes_out=refuse_flow(d.fd, d.proto, text))

    def _pick(self, client_ip: str) -> int | None:
        ready = [i for i, s in self._slots.items() if s.status.state == "ready"]
        if not ready:
            return None
        if self.cfg.affinity and client_ip:
            sticky = self._affinity.get(client_ip)
            if sticky in ready:
                self._affinity.move_to_end(client_ip)
                return sticky
        # Least loaded; among equals the one assigned to longest ago, so one-at-a-time flows take
        # turns instead of all landing on the lowest slot.
        choice = min(ready, key=lambda i: (len(self._slots[i].open), self._last_pick.get(i, -1)))
        self._last_pick[choice] = next(self._picks)
        if self.cfg.affinity and client_ip:
            self._affinity[client_ip] = choice
            self._affinity.move_to_end(client_ip)
            while len(self._affinity) > _AFFINITY_MAX:
                self._affinity.popitem(last=False)
        return choice

    def _route(self, d: Dispatch) -> bool:
        """Hand ``d`` to a ready worker; False if none is ready."""
        i = self._pick(d.client.rpartition(":")[0])
        if i is None:
            return False
        flow = next(self._flow_ids)
        assign = FlowAssign(flow=flow, proto=d.proto, host=d.host, port=d.port, early=d.early,
                            client=d.client)
        self._slots[i].open.add(flow)
        self._count(assigned=1)
        if not self.tell_named(self.slot_names[i], SlotFlow(assign=assign, fd=d.fd)):
            self._slots[i].open.discard(flow)
            self._refuse(d, "egress worker lost")
        return True

    def _may_wait(self) -> bool:
        return any(s.status.state in ("starting", "backoff") for s in self._slots.values())

    @handles(Dispatch)
    def on_dispatch(self, d: Dispatch) -> None:
        if self._state in ("escalated", "draining", "stopped"):
            text = f"egress escalated: {self._reason}" if self._state == "escalated" else "egress draining"
            self._refuse(d, text)
            return
        if self._route(d):
            return
        if self._may_wait() and len(self._pending) < self.cfg.max_pending:
            self._pending.append((time.monotonic() + self.cfg.ready_wait, d))
            return
        self._refuse(d, "no egress worker ready")

    def _flush(self) -> None:
        while self._pending:
            if not self._route(self._pending[0][1]):
                return
            self._pending.popleft()

    @handles(RouterTick)
    def on_tick(self, msg: RouterTick) -> None:
        now = time.monotonic()
        while self._pending and (self._pending[0][0] <= now or not self._may_wait()):
            _, d = self._pending.popleft()
            self._refuse(d, "no egress worker ready")

    @handles(FrontTally)
    def on_tally(self, msg: FrontTally) -> None:
        self._count(accepted=msg.accepted, refused=msg.refused, bytes_in=msg.bytes_in,
                    bytes_out=msg.bytes_out)

    @handles(SlotReport)
    def on_report(self, msg: SlotReport) -> None:
        slot = self._slots[msg.status.worker]
        slot.status = msg.status
        if msg.beat:
            slot.last_beat = time.monotonic()
        if msg.status.state == "ready":
            if self._state == "starting":
                self._state = "running"
            self._flush()

    @handles(SlotFlowDone)
    def on_flow_done(self, msg: SlotFlowDone) -> None:
        slot = self._slots[msg.worker]
        if msg.flow in slot.open:
            slot.open.discard(msg.flow)
            if msg.outcome == "refused" and msg.front_bytes:
                self._count(refused=1, bytes_out=msg.front_bytes)

    @handles(SlotLost)
    def on_lost(self, msg: SlotLost) -> None:
        slot = self._slots[msg.worker]
        self._count(flows_failed_by_worker_loss=len(slot.open))
        slot.open.clear()
        slot.last_beat = None
        if self._state in ("draining", "stopped", "escalated"):
            self.tell_named(self.slot_names[msg.worker], SlotDrain(deadline=0.0))
            return
        now = time.monotonic()
        budget, window = self.cfg.restart_budget
        while self._losses and self._losses[0] < now - window:
            self._losses.popleft()
        if len(self._losses) >= budget:
            self._escalate(f"restart budget spent ({budget} restarts in {window:g} s); "
                           f"worker {msg.worker}: {msg.reason}")
            return
        self._losses.append(now)
        self.tell_named(self.slot_names[msg.worker], SlotRestart(delay=msg.delay))

    def _escalate(self, reason: str) -> None:
        log.error("egress escalated: %s", reason)
        self._state, self._reason = "escalated", reason
        self._stop_all(self.cfg.drain_timeout, f"egress escalated: {reason}")

    def _stop_all(self, deadline: float, text: str) -> None:
        while self._pending:
            _, d = self._pending.popleft()
            self._refuse(d, text)
        for name in self.slot_names:
            self.tell_named(name, SlotDrain(deadline=deadline))

    @handles(SlotStopped)
    def on_stopped(self, msg: SlotStopped) -> None:
        slot = self._slots[msg.worker]
        slot.open.clear()
        if self._state == "draining" and all(s.status.state == "stopped" for s in self._slots.values()):
            self._state = "stopped"
            self._reason = self._reason or "drained"

    @handles(DrainRequest)
    def on_drain(self, msg: DrainRequest) -> None:
        if self._state in ("draining", "stopped", "escalated"):
            return
        self._state = "draining"
        self._stop_all(msg.deadline, "egress draining")

    @handles(StatusRequest)
    def on_status(self, msg: StatusRequest) -> EgressStatus:
        now = time.monotonic()
        workers = [s.status.model_copy(update={
            "flows_open": len(s.open) if s.status.state != "stopped" else 0,
            "heartbeat_age": None if s.last_beat is None or s.status.state == "stopped"
            else round(now - s.last_beat, 3),
            "flows_total": s.status.flows_total, "exit_node": s.status.exit_node or self.cfg.exit_node,
        }) for s in self._slots.values()]
        return EgressStatus(state=self._state, reason=self._reason, workers=workers, front=self._front)


# -- the listeners and handshakes ---------------------------------------------------------------------
class FrontListener(SocketServer):
    """One listener's accept loop; its handshakes are bounded by ``max_handshakes``."""

    def __init__(self, cfg: EgressConfig, listener: socket.socket, name: str, system: ActorSystem) -> None:
        super().__init__(listener, conns=f"{name}.conns", server=name, max_connections=cfg.max_handshakes,
                         log=log,
                         poll=ACCEPT_POLL)
        self.cfg = cfg
        self.system = system

    def accepted_message(self) -> FrontAccepted:
        return FrontAccepted()

    def spawn_conn(self, conn: socket.socket, name: str, parent: ActorRef) -> None:
        self.system.spawn(Handshake, self.cfg, conn, self._server_name, name=name, parent=parent,
                          restart=Restart.NEVER, dispatcher="pool")

    def count(self, kind: str, n: int = 1) -> None:
        super().count(kind, n)
        if kind == "connections":
            self.tell_named(ROUTER, FrontTally(accepted=n))
        elif kind == "busy":  # over the handshake bound: closed at once
            self.tell_named(ROUTER, FrontTally(accepted=n, refused=n))

    @handles(FrontAccepted)
    def on_accepted(self, msg: FrontAccepted) -> None:
        self.serve_queued()

    @handles(FrontEvent)
    def on_event(self, msg: FrontEvent) -> None:
        self.connection_event(msg.kind, msg.conn)


class _Stopped(Exception):
    pass


class _Refused(Exception):
    """The handshake was answered by the front (the answer is already written)."""


class Handshake(Actor):
    """One client's proxy handshake, on a thread of its own (bounded in time and bytes)."""

    def __init__(self, cfg: EgressConfig, sock: socket.socket, server: str) -> None:
        self.cfg = cfg
        self.sock = sock
        self.server = server

    def on_start(self) -> None:
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._handed = False
        self._in = self._out = 0
        threading.Thread(target=self._run, name=f"{self.name}-run", daemon=True).start()

    def on_stop(self, reason: StopReason) -> None:
        with self._lock:
            self._stop.set()
            if not self._handed:
                with contextlib.suppress(OSError):
                    self.sock.close()
        self.tell_named(self.server, FrontEvent(kind="closed", conn=self.name))

    @handles(HandshakeDone)
    def on_done(self, msg: HandshakeDone) -> None:
        self.stop()

    def _run(self) -> None:
        refused = 0
        try:
            self._serve()
        except (_Refused, TimeoutError):
            refused = 1
        except (_Stopped, OSError):
            refused = 0 if self._handed else 1
        except Exception as e:  # a bug: this client is cut, the front goes on
            log.warning("%s: %r", self.name, e)
            refused = 1
        if not self._handed:
            with contextlib.suppress(OSError):
                self.sock.close()
        self.tell_named(ROUTER, FrontTally(refused=refused, bytes_in=self._in, bytes_out=self._out))
        with contextlib.suppress(ActorStopped, MailboxFull):
            self.ref.tell(HandshakeDone())

    def _recv(self, deadline: float) -> bytes:
        while True:
            if self._stop.is_set():
                raise _Stopped
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("handshake timeout")
            ready, _, _ = select.select([self.sock], [], [], min(_SLICE, left))
            if ready:
                data = self.sock.recv(_READ)
                self._in += len(data)
                return data

    def _send(self, data: bytes) -> None:
        if data:
            self.sock.sendall(data)
            self._out += len(data)

    def _refuse(self, data: bytes) -> NoReturn:
        with contextlib.suppress(OSError):
            self._send(data)
            self.sock.shutdown(socket.SHUT_WR)
        raise _Refused

    def _hand_over(self, proto: Literal["socks5", "http"], host: str, port: int, early: bytes) -> None:
        try:
            peer = self.sock.getpeername()
            client = f"{peer[0]}:{peer[1]}"
        except (OSError, IndexError):
            client = ""
        with self._lock:
            if self._stop.is_set():
                raise _Stopped
            self.sock.setblocking(True)
            fd = self.sock.detach()
            self._handed = True
        if not self.tell_named(ROUTER, Dispatch(proto=proto, host=host, port=port, early=early, client=client,
                                                fd=fd)):
            refuse_flow(fd, proto, "egress stopped")

    def _serve(self) -> None:
        self.sock.settimeout(self.cfg.handshake_timeout)  # bounds our writes to a client that reads nothing
        deadline = time.monotonic() + self.cfg.handshake_timeout
        first = self._recv(deadline)
        if not first:
            raise _Refused
        if first[0] == 5:
            self._socks(first, deadline)
        else:
            self._http(first, deadline)

    def _socks(self, data: bytes, deadline: float) -> None:
        pw = self.cfg.proxy_password
        s = Socks5Server(PROXY_USER, pw) if pw else Socks5Server()
        while True:
            try:
                req = s.receive(data)
            except Socks5Error as e:
                self._refuse(s.data_to_send() + e.reply)
            self._send(s.data_to_send())
            if req is not None:
                break
            data = self._recv(deadline)
            if not data:
                raise _Refused
        if req.command != "connect":
            self._refuse(s.reply(Rep.COMMAND_NOT_SUPPORTED))
        self._hand_over("socks5", req.host, req.port, s.trailing())

    def _http(self, data: bytes, deadline: float) -> None:
        pw = self.cfg.proxy_password
        front = HttpFront(pw or "", self.cfg.max_head)
        raw = bytearray(data)
        try:
            req = front.receive(data)
            while req is None:
                data = self._recv(deadline)
                raw += data
                req = front.receive(data)
                if req is None and not data:
                    raise _Refused
            action = front.classify(req)
        except BadHttp as e:
            self._refuse(front.error(e.status, "bad request"))
        if isinstance(action, Local):
            self._refuse(front.error(404, "not found"))
        if not isinstance(action, Connect | Forward):
            self._refuse(front.error(action.status, action.reason))
        if pw and not front.authorized(req):
            challenge = [(b"proxy-authenticate", b'Basic realm="tsnet"')]
            self._refuse(front.error(407, "proxy authentication required", headers=challenge))
        self._hand_over("http", action.host, action.port, bytes(raw))
