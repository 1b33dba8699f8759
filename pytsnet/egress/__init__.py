"""Supervised egress worker processes (issue 23): a SOCKS5/HTTP proxy front end whose flows run in
worker processes, each an ephemeral tailnet node, restarted on crash.

    with Egress(EgressConfig(auth_key=..., control_url=..., workers=2, socks="127.0.0.1:1080")) as eg:
        eg.wait()          # until drained (``drain``/SIGTERM in the CLI) or escalated (raises)

The front process only does handshakes (``front``); the client's socket itself goes to a worker
(``SCM_RIGHTS``), so payload bytes never cross it. The workers are supervised across processes
(``supervisor``: heartbeats, restarts with backoff in a budget, escalation), and ``--status`` serves
what they do (``status``). The actors live in the egress's own ``ActorSystem``.
"""

from __future__ import annotations

import contextlib
import socket
import time
from types import TracebackType

from pytsnet.actors.connserver import server_tree
from pytsnet.actors.runtime import ActorStopped, ActorSystem, AskTimeout, ChildSpec, Restart
from pytsnet.egress.config import EgressConfig, EgressConfigError, EgressEscalated, parse_hostport
from pytsnet.egress.front import ROUTER, EgressRouter, FrontListener
from pytsnet.egress.status import StatusServer
from pytsnet.egress.supervisor import DRAIN_GRACE, WorkerSlot
from pytsnet.messages.egress import DrainRequest, EgressStatus, FrontCounters, StatusRequest, WorkerStatus

__all__ = ["Egress", "EgressConfig", "EgressConfigError", "EgressEscalated", "EgressStatus", "FrontCounters",
           "WorkerStatus"]

_BACKLOG = 512
_FINAL = ("stopped", "escalated")


def _listen(addr: str) -> socket.socket:
    host, port = parse_hostport(addr)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(_BACKLOG)
    except OSError as e:
        sock.close()
        raise EgressConfigError(f"cannot listen on {addr}: {e}") from None
    return sock


def _address(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class Egress:
    """The egress front end and its workers. ``start()`` (or ``with``) runs it; ``drain`` stops it."""

    def __init__(self, config: EgressConfig) -> None:
        self.config = config
        self.socks_address: str | None = None
        self.http_address: str | None = None
        self.status_address: str | None = None
        self._system: ActorSystem | None = None
        self._listeners: list[socket.socket] = []
        self._status_server: StatusServer | None = None
        self._last: EgressStatus = EgressStatus(state="starting")

    def start(self) -> Egress:
        """Check the config (``EgressConfigError``), bind the listeners, start the workers."""
        cfg = self.config
        cfg.check()
        try:
            named: list[tuple[str, socket.socket]] = []
            if cfg.socks is not None:
                named.append(("socks", sock := _listen(cfg.socks)))
                self._listeners.append(sock)
                self.socks_address = _address(sock)
            if cfg.http is not None:
                named.append(("http", sock := _listen(cfg.http)))
                self._listeners.append(sock)
                self.http_address = _address(sock)
            system = self._system = ActorSystem("egress")
            slots = tuple(f"egress.worker-{i}" for i in range(cfg.workers))
            system.spawn(EgressRouter, cfg, slots, name=ROUTER)
            for i, name in enumerate(slots):
                system.spawn(WorkerSlot, i, cfg, ROUTER, name=name)
            for kind, sock in named:
                name = f"egress.{kind}"
                system.spawn_spec(server_tree(ChildSpec(FrontListener, name, args=(cfg, sock, name, system),
                                                        dispatcher="thread"), f"{name}.conns",
                                              restart=Restart.PERMANENT))
            if cfg.status is not None:
                host, port = parse_hostport(cfg.status)
                try:
                    self._status_server = StatusServer(host, port, self.status)
                except OSError as e:
                    raise EgressConfigError(f"cannot serve status on {cfg.status}: {e}") from None
                self.status_address = self._status_server.address
        except BaseException:
            self.close()
            raise
        return self

    def status(self, timeout: float = 5.0) -> EgressStatus:
        """What the router knows now (the last known status once the egress is closed)."""
        system = self._system
        ref = system.lookup(ROUTER) if system is not None else None
        if ref is not None:
            with contextlib.suppress(ActorStopped, AskTimeout):
                self._last = ref.ask(StatusRequest(), timeout=timeout)
        return self._last

    def wait(self, timeout: float | None = None, poll: float = 0.1) -> EgressStatus:
        """Block until the egress stopped (drained) or ``timeout`` passed; the status then.
        ``EgressEscalated`` (with the reason) once the restart budget was spent."""
        end = None if timeout is None else time.monotonic() + timeout
        while True:
            st = self.status()
            if st.state == "escalated":
                raise EgressEscalated(st.reason or "unknown")
            if st.state == "stopped" or (end is not None and time.monotonic() >= end):
                return st
            time.sleep(poll)

    def _close_listeners(self) -> None:
        for sock in self._listeners:
            with contextlib.suppress(OSError):  # Linux: a shut-down listener stops listening at once
                sock.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                sock.close()

    def drain(self, deadline: float | None = None) -> EgressStatus:
        """Stop accepting (listeners closed), tell every worker ``WorkerDrain(deadline)``, wait until
        they drained and exited (bounded: a worker past ``deadline`` + grace is killed); the status."""
        deadline = self.config.drain_timeout if deadline is None else deadline
        self._close_listeners()
        system = self._system
        ref = system.lookup(ROUTER) if system is not None else None
        if ref is None:
            return self._last
        with contextlib.suppress(ActorStopped):
            ref.tell(DrainRequest(deadline=deadline))
        end = time.monotonic() + deadline + DRAIN_GRACE + 5.0
        while time.monotonic() < end:
            st = self.status()
            if st.state in _FINAL and all(w.state in ("stopped", "failed") for w in st.workers):
                return st
            time.sleep(0.05)
        return self.status()

    def close(self) -> None:
        """Stop everything now (workers still running are killed; ``drain`` first for a graceful end)."""
        self._close_listeners()
        if self._status_server is not None:
            self._status_server.close()
            self._status_server = None
        system, self._system = self._system, None
        if system is not None:
            ref = system.lookup(ROUTER)
            if ref is not None:
                with contextlib.suppress(ActorStopped, AskTimeout):
                    self._last = ref.ask(StatusRequest(), timeout=2.0)
            system.shutdown()

    def __enter__(self) -> Egress:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        try:
            if self._system is not None:
                self.drain()
        finally:
            self.close()
