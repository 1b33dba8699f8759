"""The egress worker process: one ephemeral tailnet node whose flows the front hands over.

``python -m pytsnet.egress.worker --fd N`` (``worker_command``): N is the worker's end of the front's
``WorkerChannel``. The worker reads ``WorkerSetup`` (within ``SETUP_TIMEOUT``, else exit 2), sends a
``WorkerHeartbeat`` every ``heartbeat_interval`` from then on (a slow login is not a hang), brings its
ephemeral ``ActorDevice`` up within ``up_timeout`` (else exit 3) and sends ``WorkerReady``. Then each
``FlowAssign`` + client socket becomes an ``EgressFlow`` actor (dial, answer, splice); each flow's end is
one ``FlowDone``. A frame that is not what the protocol allows is counted (``dropped``) and its fds
closed, never a crash.

Ends: ``WorkerDrain`` (or SIGTERM, with ``DEFAULT_DRAIN``) refuses new flows, lets open ones finish
until the deadline, cuts the rest, logs the node out (it leaves control's node list at once), sends
``WorkerDrained`` and exits 0. The channel's EOF (the front is gone) cuts every flow, logs out (best
effort, bounded) and exits 1: no orphan worker, no orphan node.

``exit_ok``: with an exit node configured, whether ``dev.active_exit_node()`` resolves it now (the
selected node is in the peer table, online and offers exit routes — the same selection the dial's
fail-closed check uses, so a heartbeat saying ``exit_ok=False`` means flows beyond the tailnet are being
refused with ``ExitNodeUnavailable``); without one, always True (tailnet destinations only). Once it
has been false for ``EXIT_GONE_CUT``, the open flows that ride the exit node are reset: the device
routes nothing beyond the tailnet any more, and their clients should hear it now, not when TCP gives
up (~15 min).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from types import FrameType

from pytsnet.actors.runtime import ActorRef, ActorSystem, Restart, Supervisor, SupervisorConfig
from pytsnet.actors.runtime.errors import NameTaken
from pytsnet.actors.runtime.supervisor import Strategy
from pytsnet.config import Config
from pytsnet.device import ActorDevice
from pytsnet.egress.channel import ChannelClosed, ChannelError, WorkerChannel
from pytsnet.egress.flow import EgressFlow, FlowSettings, refusal
from pytsnet.errors import NeedsLogin, NetworkUnreachable, RegistrationTimeout
from pytsnet.loopback.conn import close_gracefully
from pytsnet.messages.egress import (
    FlowAssign,
    FlowDone,
    WorkerDrain,
    WorkerDrained,
    WorkerHeartbeat,
    WorkerReady,
    WorkerSetup,
)
from pytsnet.wire.socks5 import Rep

__all__ = ["DEFAULT_DRAIN", "EXIT_EOF", "EXIT_SETUP", "EXIT_UP", "SETUP_TIMEOUT", "main", "worker_command"]

log = logging.getLogger("pytsnet.egress.worker")

SETUP_TIMEOUT = 30.0
"""The front sends ``WorkerSetup`` right after starting us; nothing by then: exit ``EXIT_SETUP``."""
DEFAULT_DRAIN = 30.0
"""The drain deadline on SIGTERM (the front's ``WorkerDrain`` brings its own)."""
LOGOUT_TIMEOUT = 5.0
EXIT_GONE_CUT = 5.0
"""How long the exit node may be unavailable before the flows riding it are reset (``watch_exit``)."""
EXIT_EOF, EXIT_SETUP, EXIT_UP = 1, 2, 3
_SLICE = 0.25
"""How often the reader loop looks at the SIGTERM flag and the drain's progress."""


def worker_command(fd: int) -> list[str]:
    """The argv that runs a worker on channel fd ``fd`` (pass it with ``Popen(pass_fds=[fd])``)."""
    return [sys.executable, "-m", "pytsnet.egress.worker", "--fd", str(fd)]


def _rss() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


@dataclass
class _Counters:
    flows_open: int = 0
    flows_total: int = 0
    bytes_up: int = 0
    bytes_down: int = 0
    dropped: int = 0
    finished_in_drain: int = 0
    flows: dict[int, tuple[ActorRef, threading.Event, threading.Event]] = field(default_factory=dict)
    """flow id → (its actor, its ``cut`` flag, its ``beyond`` flag: the stream rides the exit node)."""


class Worker:
    def __init__(self, setup: WorkerSetup, ch: WorkerChannel) -> None:
        self.setup = setup
        self.ch = ch
        self.settings = FlowSettings.from_setup(setup)  # ValueError: a bad upstream URL
        self.c = _Counters()
        self.cond = threading.Condition()
        self.done = threading.Event()
        self.beat_now = threading.Event()
        """Set to send the next heartbeat at once (right after ``WorkerReady``: the front's status then
        shows ``exit_ok`` as the node that is up sees it, not as it was while it logged in)."""
        self.draining = False
        self._exit_gone_since: float | None = None
        self.sigterm = threading.Event()
        self.dev: ActorDevice | None = None
        self.system: ActorSystem | None = None
        self.flows_sup: ActorRef | None = None

    # -- heartbeats ------------------------------------------------------------------------------------
    def exit_ok(self) -> bool:
        if self.setup.exit_node is None:
            return True
        dev = self.dev
        return dev is not None and dev.system is not None and dev.active_exit_node() is not None

    def heartbeat(self, seq: int) -> WorkerHeartbeat:
        with self.cond:
            c = self.c
            hb = WorkerHeartbeat(worker=self.setup.worker, seq=seq, flows_open=c.flows_open,
                                 flows_total=c.flows_total, bytes_up=c.bytes_up, bytes_down=c.bytes_down,
                                 dropped=c.dropped, exit_node=self.setup.exit_node, rss=_rss())
        ok = self.exit_ok()
        self.watch_exit(ok, time.monotonic())
        return hb.model_copy(update={"exit_ok": ok})

    def _heartbeats(self) -> None:
        seq = 0
        while not self.done.is_set():
            self.beat_now.clear()  # before the beat: a ``set`` while it is built is not lost
            try:
                self.ch.send(self.heartbeat(seq))
            except ChannelClosed:
                return  # the reader sees the EOF too
            except Exception as e:  # a bug must not silence the heartbeat for good
                log.warning("heartbeat: %r", e)
            seq += 1
            self.beat_now.wait(self.setup.heartbeat_interval)

    # -- flows -----------------------------------------------------------------------------------------
    def count(self, key: str, n: int) -> None:
        with self.cond:
            if key == "up":
                self.c.bytes_up += n
            else:
                self.c.bytes_down += n

    def flow_done(self, done: FlowDone) -> None:
        with self.cond:
            if self.c.flows.pop(done.flow, None) is not None:
                self.c.flows_open -= 1
                if self.draining and done.outcome != "cut":
                    self.c.finished_in_drain += 1
            self.cond.notify_all()
        self._send(done)

    def _send(self, msg: FlowDone | WorkerReady | WorkerDrained) -> None:
        with contextlib.suppress(ChannelClosed, ChannelError):
            self.ch.send(msg)

    def _drop(self, fds: list[int], why: str) -> None:
        for fd in fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        with self.cond:
            self.c.dropped += 1
        log.info("dropped a frame: %s", why)

    def _refuse(self, assign: FlowAssign, sock: socket.socket, rep: Rep, status: int, reason: str) -> None:
        """Answer and close in a thread of its own (a graceful close waits a moment for the client)."""
        answer = refusal(assign, rep, status, reason, self.setup.max_head)

        def run() -> None:
            with contextlib.suppress(OSError):
                sock.settimeout(5.0)
                sock.sendall(answer)
            close_gracefully(sock)

        threading.Thread(target=run, name=f"refuse-{assign.flow}", daemon=True).start()
        self._send(FlowDone(flow=assign.flow, outcome="refused", error=reason))

    def assign(self, msg: FlowAssign, fds: list[int]) -> None:
        if len(fds) != 1:
            self._drop(fds, f"flow {msg.flow}: {len(fds)} fds (want 1)")
            self._send(FlowDone(flow=msg.flow, outcome="error", error="no client socket"))
            return
        try:
            sock = socket.socket(fileno=fds[0])
            if sock.type != socket.SOCK_STREAM:
                sock.detach()  # ``_drop`` closes the fd, once (a second close could hit a reused number)
                raise OSError("not a stream socket")
        except OSError as e:
            self._drop(fds, f"flow {msg.flow}: {e}")
            self._send(FlowDone(flow=msg.flow, outcome="error", error="not a client socket"))
            return
        with self.cond:
            refuse = ("draining" if self.draining else
                      "busy" if self.c.flows_open >= self.setup.max_flows else
                      "duplicate flow id" if msg.flow in self.c.flows else None)
            if refuse is None:
                cut, beyond = threading.Event(), threading.Event()
                try:
                    assert self.system is not None and self.dev is not None
                    ref = self.system.spawn(EgressFlow, msg, sock, self.dev, self.settings, self.flow_done,
                                            self.count, cut, beyond, name=f"flow-{msg.flow}",
                                            parent=self.flows_sup, restart=Restart.NEVER, dispatcher="pool")
                except NameTaken:
                    refuse = "duplicate flow id"
                else:
                    self.c.flows[msg.flow] = (ref, cut, beyond)
                    self.c.flows_open += 1
                    self.c.flows_total += 1
        if refuse is not None:
            self._refuse(msg, sock, Rep.GENERAL_FAILURE, 503, refuse)

    def cut_all(self, beyond_only: bool = False) -> int:
        """Reset every open flow (each reports its ``FlowDone`` with outcome ``cut``), or only those
        riding the exit node; how many."""
        with self.cond:
            flows = [(ref, cut) for ref, cut, beyond in self.c.flows.values()
                     if not beyond_only or beyond.is_set()]
        for ref, cut in flows:
            cut.set()
            with contextlib.suppress(Exception):
                ref.stop()
        return len(flows)

    def watch_exit(self, ok: bool, now: float) -> None:
        """From the heartbeat thread, with this beat's ``exit_ok``: once the exit node has been
        unavailable for ``EXIT_GONE_CUT`` (the device already refuses new dials beyond the tailnet and
        routes nothing there), reset the open flows that ride it, so their clients hear it now rather
        than when TCP gives up minutes later; a short blip leaves them be."""
        if ok or self.setup.exit_node is None or self.dev is None or self.draining:
            self._exit_gone_since = None
            return
        if self._exit_gone_since is None:
            self._exit_gone_since = now
        elif now - self._exit_gone_since >= EXIT_GONE_CUT and (n := self.cut_all(beyond_only=True)):
            log.warning("worker %d: exit node unavailable for %.0f s: %d flows through it reset",
                        self.setup.worker, now - self._exit_gone_since, n)

    # -- lifetime --------------------------------------------------------------------------------------
    def up(self) -> bool:
        s = self.setup
        self.system = ActorSystem(f"egress-worker-{s.worker}")
        self.flows_sup = self.system.spawn(Supervisor, SupervisorConfig(Strategy.ONE_FOR_ONE, 0, 1.0),
                                           name="egress.flows", dispatcher="thread")
        self.dev = dev = ActorDevice(Config(hostname=s.hostname, auth_key=s.auth_key,
                                            control_url=s.control_url, ephemeral=True,
                                            exit_node=s.exit_node, bind_host=s.bind_host))
        deadline = time.monotonic() + s.up_timeout
        try:
            dev.start()
            while True:  # in slices: the front's death (EOF) or SIGTERM ends a slow login early
                try:
                    dev.wait_until_running_blocking(min(_SLICE * 2, max(0.01, deadline - time.monotonic())))
                    break
                except (NeedsLogin, NetworkUnreachable, RegistrationTimeout):
                    if time.monotonic() >= deadline or self.sigterm.is_set() or self._front_gone():
                        raise
        except Exception as e:
            log.error("worker %d: node not up: %s", s.worker, type(e).__name__)  # never the key
            return False
        st = dev.state
        self._send(WorkerReady(worker=s.worker, pid=os.getpid(), node_id=str(st.node_id),
                               ip=dev.tailscale_ips()[0] if st.addresses else "", exit_node=s.exit_node))
        self.beat_now.set()
        log.info("worker %d up as %s", s.worker, st.name)
        return True

    def _front_gone(self) -> bool:
        try:
            data = self.ch.sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        except BlockingIOError:
            return False
        except OSError:
            return True
        return not data

    def serve(self) -> int:
        """The reader loop; the process's exit code."""
        drain_end: float | None = None
        while True:
            if self.sigterm.is_set() and drain_end is None:
                drain_end = self._start_drain(DEFAULT_DRAIN)
            if drain_end is not None:
                with self.cond:
                    idle = self.c.flows_open == 0
                if idle or time.monotonic() >= drain_end:
                    return self._finish_drain()
            try:
                got = self.ch.recv(timeout=_SLICE)
            except ChannelClosed:
                log.warning("worker %d: the front is gone: cutting flows, logging out", self.setup.worker)
                self.cut_all()
                self._logout()
                return EXIT_EOF
            except ChannelError as e:
                self._drop([], str(e))
                continue
            if got is None:
                continue
            msg, fds = got
            if isinstance(msg, FlowAssign):
                self.assign(msg, fds)
            elif isinstance(msg, WorkerDrain) and not fds:
                if drain_end is None:
                    drain_end = self._start_drain(msg.deadline)
            else:
                self._drop(fds, f"unexpected {type(msg).__name__}")

    def _start_drain(self, deadline: float) -> float:
        with self.cond:
            self.draining = True
            log.info("worker %d: draining %d flows (deadline %.1fs)", self.setup.worker, self.c.flows_open,
                     deadline)
        return time.monotonic() + max(0.0, deadline)

    def _finish_drain(self) -> int:
        cut = self.cut_all()
        with self.cond:
            finished = self.c.finished_in_drain
        logged_out = self._logout()
        self._send(WorkerDrained(worker=self.setup.worker, finished=finished, cut=cut, logged_out=logged_out))
        return 0

    def _logout(self) -> bool:
        dev = self.dev
        if dev is None or dev.system is None:
            return False
        try:
            dev.logout_blocking(LOGOUT_TIMEOUT)
            return True
        except Exception as e:
            log.warning("worker %d: logout: %s", self.setup.worker, type(e).__name__)
            return False

    def close(self) -> None:
        self.done.set()
        self.beat_now.set()
        if self.system is not None:
            self.system.shutdown(5.0)
        if self.dev is not None:
            self.dev.close()
        self.ch.close()


def _read_setup(ch: WorkerChannel, timeout: float) -> WorkerSetup | None:
    end = time.monotonic() + timeout
    while (left := end - time.monotonic()) > 0:
        try:
            got = ch.recv(timeout=left)
        except ChannelError:
            continue  # counted nowhere yet: the setup is what we wait for
        except ChannelClosed:
            return None
        if got is None:
            return None
        msg, fds = got
        for fd in fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        if isinstance(msg, WorkerSetup):
            return msg
    return None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="pytsnet.egress.worker", description=__doc__.split("\n")[0])
    p.add_argument("--fd", type=int, required=True, help="the worker's end of the front's channel")
    p.add_argument("--setup-timeout", type=float, default=SETUP_TIMEOUT)
    args = p.parse_args(argv)
    ch = WorkerChannel.from_fd(args.fd)
    setup = _read_setup(ch, args.setup_timeout)
    if setup is None:
        print("pytsnet.egress.worker: no WorkerSetup from the front", file=sys.stderr)
        ch.close()
        return EXIT_SETUP
    level = getattr(logging, setup.log_level.upper(), logging.WARNING)
    logging.basicConfig(level=level, stream=sys.stderr,
                        format=f"%(asctime)s egress-worker[{setup.worker}] %(levelname)s %(name)s: "
                        "%(message)s")
    try:
        worker = Worker(setup, ch)
    except ValueError as e:
        log.error("bad setup: %s", e)
        ch.close()
        return EXIT_SETUP
    sigterm = worker.sigterm

    def on_term(signum: int, frame: FrameType | None) -> None:
        sigterm.set()

    signal.signal(signal.SIGTERM, on_term)
    threading.Thread(target=worker._heartbeats, name="egress-heartbeat", daemon=True).start()
    try:
        if not worker.up():
            return EXIT_UP
        return worker.serve()
    finally:
        worker.close()


if __name__ == "__main__":
    sys.exit(main())
