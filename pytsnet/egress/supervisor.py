"""``WorkerSlot``: one actor per worker slot — it owns the worker process, its channel and its reader.

A slot starts its process (``Popen(worker_command(fd), pass_fds=[fd])``, then ``WorkerSetup`` on the
channel: the auth key travels in the frame, never in argv or the environment), reads the channel on a
thread of its own (one per process incarnation; frames come back as ``SlotFrame`` messages tagged with
the incarnation, so a dead process's late frames are ignored) and checks on a timer that the process
lives and beats. A process that exits, closes its channel or stays silent past the heartbeat timeout
(hung: ``SIGKILL``) is reaped and reported ``SlotLost`` to the router, which owns the restart budget
(counted across all slots) and either answers ``SlotRestart`` (after an exponential backoff the slot
computes: it doubles per loss since its worker was last ready) or escalates. The restarts are the
slot's own, not the actor runtime's: a worker process is not an actor, and a lost worker is not a bug
of the slot. ``SlotDrain`` sends ``WorkerDrain`` and waits (bounded) for the process to exit.

A ``SlotFlow`` carries the client's fd: sent to the worker with ``SCM_RIGHTS`` and closed here at once
(the front keeps no copy: if the worker dies, the kernel closes the client's socket). A flow that
cannot be handed over is refused on the spot (``refuse_flow``: SOCKS5 REP 01 / HTTP 503).
"""

from __future__ import annotations

import contextlib
import importlib
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from pytsnet.actors.runtime import Actor, ActorStopped, MailboxFull, StopReason, handles
from pytsnet.actors.runtime.logs import subsystem_logger
from pytsnet.egress.channel import ChannelClosed, ChannelError, ChannelFull, WorkerChannel
from pytsnet.messages.egress import (
    EgressProto,
    FlowDone,
    SlotDrain,
    SlotEof,
    SlotFlow,
    SlotFlowDone,
    SlotFrame,
    SlotLost,
    SlotReport,
    SlotRestart,
    SlotSpawn,
    SlotStopped,
    SlotTick,
    WorkerDrain,
    WorkerDrained,
    WorkerHeartbeat,
    WorkerReady,
    WorkerSetup,
    WorkerStatus,
)
from pytsnet.wire.socks5 import Rep, encode_reply

if TYPE_CHECKING:
    from pytsnet.egress.config import EgressConfig

__all__ = ["WorkerSlot", "refusal", "refuse_flow"]

log = subsystem_logger("egress")

TICK = 0.1
"""How often a slot checks its process (exit, heartbeat age, drain deadline)."""
REAP_WAIT = 5.0
"""After an EOF, how long the process may take to exit before it is killed."""
DRAIN_GRACE = 3.0
"""Past the drain deadline, how long a worker may take to log out and exit before ``SIGKILL``."""
_READ_POLL = 0.5


def refusal(proto: EgressProto, text: str) -> bytes:
    """The front's own answer to a flow it cannot serve: SOCKS5 REP 01, or HTTP 503 with ``text``."""
    if proto == "socks5":
        return encode_reply(Rep.GENERAL_FAILURE)
    body = (text + "\n").encode()
    return (b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain; charset=utf-8\r\n"
            b"content-length: " + str(len(body)).encode() + b"\r\nconnection: close\r\n\r\n" + body)


def refuse_flow(fd: int, proto: EgressProto, text: str) -> int:
    """Write ``refusal`` to the client's fd without blocking (the handshake left its send buffer
    empty), close it; the bytes written."""
    sock = socket.socket(fileno=fd)
    n = 0
    try:
        sock.setblocking(False)
        n = sock.send(refusal(proto, text))
        sock.shutdown(socket.SHUT_WR)
    except OSError:
        pass
    finally:
        sock.close()
    return n


_SECRET_ENV = ("TS_AUTHKEY", "TS_AUTH_KEY", "TS_CLIENT_SECRET", "TS_ID_TOKEN", "PYTSNET_EGRESS_PASSWORD")
"""Secrets the front may have been started with: a worker gets its key in ``WorkerSetup`` only, so it
does not inherit them (``/proc/<pid>/environ``; nor do its ``Config`` fallbacks pick them up)."""


def _worker_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in _SECRET_ENV}


def _exit_text(code: int | None) -> str:
    if code is None:
        return "running"
    return f"signal {-code}" if code < 0 else f"exit {code}"


class WorkerSlot(Actor):
    def __init__(self, worker: int, cfg: EgressConfig, router: str) -> None:
        self.worker = worker
        self.cfg = cfg
        self.router = router

    def on_start(self) -> None:
        self._gen = 0
        self._ch: WorkerChannel | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._last_beat = 0.0
        self._heard = False  # a frame came from this process (until then the start bound applies)
        self._losses = 0  # since the worker was last ready: the backoff's exponent
        self._drain_until: float | None = None
        self._status = WorkerStatus(worker=self.worker, state="starting")
        self._killed_hung = False
        self._full = False  # the last hand-over found the channel full: do not wait for room again
        self.send_interval(TICK, SlotTick())
        self._spawn()

    def on_stop(self, reason: StopReason) -> None:
        """The tree is going: a worker still running is killed (a drain came first when it could)."""
        self._gen += 1
        proc, ch = self._proc, self._ch
        self._proc = self._ch = None
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(OSError):
                proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(REAP_WAIT)
        if ch is not None:
            ch.close()

    # -- the process -----------------------------------------------------------------------------------
    def _command(self, fd: int) -> list[str]:
        if self.cfg.worker_command is not None:
            return self.cfg.worker_command(fd)
        # 23a's module, imported only when a real worker is started (by name: it is written in parallel)
        command: Callable[[int], list[str]] = importlib.import_module("pytsnet.egress.worker").worker_command
        return command(fd)

    def _update(self, beat: bool = False, **fields: object) -> None:
        self._status = self._status.model_copy(update=fields)
        self.tell_named(self.router, SlotReport(status=self._status, beat=beat))

    def _spawn(self) -> None:
        ch, theirs = WorkerChannel.pair()
        try:
            # A session of its own: a terminal's Ctrl-C (SIGINT to the foreground process group) or
            # hang-up reaches the front only, which drains the workers; it must not kill them mid-flow.
            proc = subprocess.Popen(self._command(theirs.fileno()), pass_fds=[theirs.fileno()],
                                    stdin=subprocess.DEVNULL, env=_worker_env(),
                                    start_new_session=True)
        except (OSError, ValueError) as e:
            ch.close()
            self._lose(f"spawn failed: {e}")
            return
        finally:
            theirs.close()
        self._gen += 1
        gen = self._gen
        self._ch, self._proc = ch, proc
        self._last_beat = time.monotonic()
        self._heard = False
        self._killed_hung = False
        self._full = False
        cfg = self.cfg
        setup = WorkerSetup(worker=self.worker, incarnation=self._status.restarts,
                            hostname=f"{cfg.hostname_prefix}-{self.worker}", control_url=cfg.control_url,
                            auth_key=cfg.auth_key, exit_node=cfg.exit_node, upstream_proxy=cfg.upstream_proxy,
                            heartbeat_interval=cfg.heartbeat_interval, dial_timeout=cfg.dial_timeout,
                            idle_timeout=cfg.idle_timeout, max_head=cfg.max_head, up_timeout=cfg.up_timeout,
                            log_level=cfg.log_level, bind_host=cfg.bind_host,
                            max_flows=cfg.max_flows_per_worker)
        with contextlib.suppress(ChannelClosed, ChannelError):  # a dead child is seen as the EOF
            ch.send(setup)
        threading.Thread(target=self._read, args=(ch, gen), name=f"{self.name}-read-{gen}",
                         daemon=True).start()
        self._update(state="starting", pid=proc.pid, ip=None, heartbeat_age=None, flows_open=0)

    def _read(self, ch: WorkerChannel, gen: int) -> None:
        """The channel's reader (its own thread, one per process): frames to the actor, then the EOF."""
        ref = self.ref
        while True:
            try:
                got = ch.recv(_READ_POLL)
            except ChannelClosed as e:
                with contextlib.suppress(ActorStopped, MailboxFull):
                    ref.tell(SlotEof(gen=gen, error=str(e)))
                return
            except ChannelError as e:
                log.warning("%s: bad frame from the worker: %s", self.name, e)
                continue
            if got is None:
                if self._gen != gen:  # the slot moved on (reaped, stopped)
                    return
                continue
            msg, fds = got
            for fd in fds:  # a worker never sends fds: do not leak them
                with contextlib.suppress(OSError):
                    os.close(fd)
            if isinstance(msg, WorkerReady | WorkerHeartbeat | FlowDone | WorkerDrained):
                try:
                    ref.tell(SlotFrame(gen=gen, frame=msg))
                except (ActorStopped, MailboxFull):
                    return
            else:
                log.warning("%s: unexpected %s from the worker", self.name, type(msg).TAG)

    def _reap(self, why: str | None) -> None:
        """The process ended (or must): wait for it (bounded, then ``SIGKILL``), then lost or stopped."""
        proc, ch = self._proc, self._ch
        self._proc = self._ch = None
        if ch is not None:
            ch.close()
        code: int | None = None
        if proc is not None:
            try:
                code = proc.wait(REAP_WAIT)
            except subprocess.TimeoutExpired:
                proc.kill()
                code = proc.wait()
        reason = why or _exit_text(code)
        if self._drain_until is not None:
            self._drain_until = None
            self._update(state="stopped", pid=None, flows_open=0, last_exit=reason, heartbeat_age=None)
            self.tell_named(self.router, SlotStopped(worker=self.worker, reason=reason))
            return
        self._lose(reason)

    def _lose(self, reason: str) -> None:
        delay = min(self.cfg.backoff_initial * (2 ** self._losses), self.cfg.backoff_max)
        self._losses += 1
        log.warning("%s: worker lost (%s); restart in %.1f s unless the budget is spent", self.name, reason,
                    delay)
        self._update(state="backoff", pid=None, ip=None, flows_open=0, last_exit=reason, heartbeat_age=None)
        self.tell_named(self.router, SlotLost(worker=self.worker, reason=reason, delay=delay))

    # -- handlers ----------------------------------------------------------------------------------------
    @handles(SlotFrame)
    def on_frame(self, msg: SlotFrame) -> None:
        if msg.gen != self._gen or self._proc is None:
            return  # a frame of a process already reaped
        f = msg.frame
        self._heard = True
        if isinstance(f, WorkerHeartbeat):
            self._last_beat = time.monotonic()
            self._update(beat=True, flows_open=f.flows_open, flows_total=f.flows_total, bytes_up=f.bytes_up,
                         bytes_down=f.bytes_down, exit_node=f.exit_node, exit_ok=f.exit_ok, rss=f.rss)
        elif isinstance(f, WorkerReady):
            self._last_beat = time.monotonic()
            self._losses = 0
            if self._drain_until is None:
                self._update(beat=True, state="ready", pid=f.pid, ip=f.ip, exit_node=f.exit_node)
        elif isinstance(f, FlowDone):
            self.tell_named(self.router, SlotFlowDone(worker=self.worker, flow=f.flow, outcome=f.outcome))
        else:
            log.info("%s: drained: %d finished, %d cut, logged out: %s", self.name, f.finished, f.cut,
                     f.logged_out)

    @handles(SlotEof)
    def on_eof(self, msg: SlotEof) -> None:
        if msg.gen == self._gen and self._proc is not None:
            self._reap("hung" if self._killed_hung else None)

    @handles(SlotTick)
    def on_tick(self, msg: SlotTick) -> None:
        self._check()

    def _check(self) -> None:
        """Reap a process that exited, is past its drain deadline or stopped beating (hung: killed)."""
        proc = self._proc
        if proc is None:
            return
        now = time.monotonic()
        if proc.poll() is not None:
            self._reap("hung" if self._killed_hung else None)
        elif self._drain_until is not None and now > self._drain_until:
            log.warning("%s: worker did not exit after its drain: killed", self.name)
            self._signal(proc)
            self._reap("drain timeout")
        elif self._drain_until is None and now - self._last_beat > (
                self.cfg.hb_timeout if self._heard else self.cfg.start_timeout):
            log.warning("%s: no heartbeat for %.1f s: hung, killed", self.name, now - self._last_beat)
            self._killed_hung = True
            self._signal(proc)
            self._reap("hung")

    @staticmethod
    def _signal(proc: subprocess.Popen[bytes]) -> None:
        with contextlib.suppress(OSError):
            os.kill(proc.pid, signal.SIGKILL)

    @handles(SlotRestart)
    def on_restart(self, msg: SlotRestart) -> None:
        if self._drain_until is None and self._proc is None and self._status.state == "backoff":
            self.send_after(msg.delay, SlotSpawn())

    @handles(SlotSpawn)
    def on_spawn(self, msg: SlotSpawn) -> None:
        if self._drain_until is None and self._proc is None and self._status.state == "backoff":
            self._update(restarts=self._status.restarts + 1)
            self._spawn()

    @handles(SlotFlow)
    def on_flow(self, msg: SlotFlow) -> None:
        ch = self._ch
        if ch is not None and self._status.state == "ready":
            # A worker that stopped reading costs one ``SEND_TIMEOUT``: the flows queued behind are
            # refused at once until a hand-over finds room again (or the hang check replaces it).
            try:
                ch.send(msg.assign, [msg.fd], wait=not self._full)
            except (ChannelClosed, ChannelError) as e:
                log.debug("%s: flow %d not handed over: %s", self.name, msg.assign.flow, e)
                self._full = isinstance(e, ChannelFull)
                self._check()
            else:
                self._full = False
                os.close(msg.fd)  # the worker has it now; the front keeps no copy
                return
        n = refuse_flow(msg.fd, msg.assign.proto, "egress worker lost")
        self.tell_named(self.router, SlotFlowDone(worker=self.worker, flow=msg.assign.flow, outcome="refused",
                                                  front_bytes=n))

    @handles(SlotDrain)
    def on_drain(self, msg: SlotDrain) -> None:
        if self._status.state == "stopped":
            return
        ch = self._ch
        if ch is None or self._proc is None:  # between incarnations: nothing to drain
            self._drain_until = None
            self._update(state="stopped", pid=None, flows_open=0)
            self.tell_named(self.router, SlotStopped(worker=self.worker, reason="drained"))
            return
        self._drain_until = time.monotonic() + msg.deadline + DRAIN_GRACE
        self._update(state="draining")
        with contextlib.suppress(ChannelClosed, ChannelError):  # its EOF comes; reaped as stopped
            ch.send(WorkerDrain(deadline=msg.deadline))
