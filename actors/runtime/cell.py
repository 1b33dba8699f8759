"""The cell: one actor identity (name, mailbox, links, ref) across its incarnations.

States: RUNNING (an incarnation handles messages), SUSPENDED (the incarnation ended; the
supervisor decides: restart keeps mailbox and ref, finalize stops for good) and STOPPED.
``run_lock`` serialises everything an incarnation does (``on_start``, handlers, ``on_stop``), so a
stop or kill from another thread waits for the current message to finish and never interleaves.
"""

from __future__ import annotations

import enum
import itertools
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pytsnet.actors.runtime import logs
from pytsnet.actors.runtime.actor import Actor, PanicAction, StopReason, handler_for
from pytsnet.actors.runtime.clock import TimerHandle
from pytsnet.actors.runtime.errors import ActorStopped, HandlerError, UnhandledMessage
from pytsnet.actors.runtime.io import IoLoop
from pytsnet.actors.runtime.mailbox import payload_size
from pytsnet.actors.runtime.ref import ActorRef, Reply, current

if TYPE_CHECKING:
    from pytsnet.actors.runtime.clock import Clock
    from pytsnet.actors.runtime.mailbox import Mailbox
    from pytsnet.actors.runtime.supervisor import ChildSpec
    from pytsnet.actors.runtime.system import ActorSystem
    from pytsnet.messages.base import Message

log = logs.subsystem_logger("runtime")
_seq = itertools.count(1)

__all__ = ["Cell", "Envelope", "Status"]


class Status(enum.Enum):
    RUNNING = "running"
    SUSPENDED = "suspended"
    STOPPED = "stopped"


@dataclass(slots=True)
class Envelope:
    msg: Message
    reply: Reply | None
    sender: str | None
    seq: int


@dataclass(slots=True)
class _Control:
    """Runtime work run inside the actor's context (link deaths, IO errors, supervisor events)."""

    fn: Callable[[], None]
    incarnation: int | None = None  # only for this incarnation (None: whichever runs)


class Cell:
    # Slots: one cell per actor, and every TCP flow is an actor (10,000 idle flows, issue 14).
    __slots__ = (
        "_deferred", "_handling", "actor", "children", "children_lock", "dispatcher", "handled",
        "incarnation", "io_loops", "links", "mailbox", "name", "parent", "preempt", "ref", "run_lock",
        "sched_lock", "scheduled", "spec", "status", "system", "timers",
    )

    def __init__(self, system: ActorSystem, spec: ChildSpec, parent: Cell | None, mailbox: Mailbox) -> None:
        self.system = system
        self.spec = spec
        self.name = spec.name
        self.parent = parent
        self.mailbox = mailbox
        self.run_lock = threading.RLock()
        self.actor: Actor | None = None
        self.incarnation = 0
        self.status = Status.SUSPENDED
        self.links: set[Cell] = set()
        self.children: list[Cell] = []  # a supervisor's children, in start order; kept across restarts
        self.children_lock = threading.Lock()
        self.timers: set[TimerHandle] = set()
        self.io_loops: list[IoLoop] = []
        self._handling: Envelope | None = None  # the envelope a handler is running for
        self._deferred = False  # that handler took its reply slot (``defer_reply``)
        self.handled = 0  # messages handled across incarnations (the fault injector counts these)
        self.ref = ActorRef(self)
        self.dispatcher = system._dispatcher_for(spec.dispatcher)
        self.sched_lock = threading.Lock()
        self.scheduled = False
        self.preempt = 0  # stops/kills waiting for run_lock: they go before the next message

    # -- ActorContext ----------------------------------------------------------------------------
    @property
    def clock(self) -> Clock:
        return self.system.clock

    @property
    def is_stopped(self) -> bool:
        return self.status is Status.STOPPED

    def lookup(self, name: str) -> ActorRef | None:
        return self.system.lookup(name)

    def send_after(self, delay: float, msg: Message) -> TimerHandle:
        return self._timer(self.clock.monotonic() + delay, None, msg)

    def send_interval(self, period: float, msg: Message) -> TimerHandle:
        if period <= 0:
            raise ValueError("period must be > 0")
        return self._timer(self.clock.monotonic() + period, period, msg)

    def _timer(self, deadline: float, period: float | None, msg: Message) -> TimerHandle:
        """The handle returned is the cell's own, made before the scheduler can fire: a due deadline
        may fire on the timer thread before ``call_at`` returns, and ``fire`` needs only this handle.
        Cancelling it cancels the scheduled entry once that exists; before then ``fire`` sees the flag."""
        inc = self.incarnation
        handle = TimerHandle(deadline)

        def fire() -> None:
            if handle.cancelled or self.incarnation != inc or self.status is not Status.RUNNING:
                return
            try:
                self._send_from("timer", msg, None, urgent=True)
            except Exception as e:  # full or stopped: a timer tick is not worth a crash
                log.debug("timer tick to %s dropped: %r", self.name, e)
            if period is not None and not handle.cancelled:
                nh = self.system.scheduler.call_at(handle.deadline + period, fire)
                handle.deadline = nh.deadline
                handle.on_cancel = nh.cancel
            else:
                self.timers.discard(handle)

        self.timers.add(handle)  # before fire can run, so its discard finds it
        scheduled = self.system.scheduler.call_at(deadline, fire)
        if handle.on_cancel is None:  # (an interval that already fired once set its next entry)
            handle.on_cancel = scheduled.cancel
        return handle

    def start_io_loop(self, fn: Callable[[], Message | None], close: Callable[[], None] | None) -> IoLoop:
        loop = IoLoop(self, self.incarnation, fn, close)
        self.io_loops = [lp for lp in self.io_loops if not lp.finished]  # one per connection: churn adds up
        self.io_loops.append(loop)
        loop.start()
        return loop

    def link(self, other: ActorRef) -> None:
        o = other._cell
        if o.status is Status.STOPPED or o is self:
            return
        self.links.add(o)
        o.links.add(self)

    def stop_self(self) -> None:
        inc = self.incarnation
        self.mailbox.put_control(_Control(lambda: self._end(None, report=True), inc))
        self.dispatcher.notify(self)

    # -- sending -----------------------------------------------------------------------------------
    def send(self, msg: Message, reply: Reply | None) -> bool:
        return self._send_from(current.name, msg, reply)

    def _send_from(self, sender: str | None, msg: Message, reply: Reply | None, *,
                   urgent: bool = False) -> bool:
        """Enqueue; False when a DROP_NEWEST mailbox dropped it (counted there). ``urgent``: a timer
        tick, which the pool runs before cells that have only data (the mailbox order is kept)."""
        if handler_for(self.spec.actor_cls, type(msg)) is None:
            raise UnhandledMessage(f"{self.spec.actor_cls.__name__} ({self.name}) has no handler for "
                                   f"{type(msg).__name__}")
        if self.status is Status.STOPPED:
            raise ActorStopped(f"{self.name} is stopped")
        env = Envelope(msg, reply, sender, next(_seq))
        tracer = self.system.tracer
        if tracer is not None and current.name is not None and sender == current.name:
            tracer.send(self.system, current.name, current.seq, self.name, env)
        if self.mailbox.put(env, is_ask=reply is not None, size=payload_size(msg)):
            self.dispatcher.notify(self, urgent)
            return True
        return False

    # -- running ---------------------------------------------------------------------------------
    def start_incarnation(self) -> None:
        """Build a fresh actor from the spec and run ``on_start``; raises what ``on_start`` raises."""
        with self.run_lock:
            if self.status is Status.STOPPED:
                raise ActorStopped(f"{self.name} is stopped")
            spec = self.spec
            actor = spec.actor_cls(*spec.args, **spec.kwargs)
            self.incarnation += 1
            actor.ctx = self
            self.actor = actor
            self.status = Status.RUNNING
            tracer = self.system.tracer
            if tracer is not None:
                tracer.spawn(self.system, self)
            prev = (current.name, current.seq)
            current.name, current.seq = self.name, None
            route = logs.enter(self.system.log_route)
            try:
                actor.on_start()
                log.debug("%s#%d started", self.name, self.incarnation)
            except BaseException as e:
                self._end(None, report=False, why=StopReason.panicked(e))
                raise
            finally:
                current.name, current.seq = prev
                logs.leave(route)
        self.dispatcher.attach(self)

    def process_one(self, incarnation: int | None) -> bool:
        """Handle the next item if this incarnation is running; False when there is nothing to do."""
        with self.run_lock:
            stale = incarnation is not None and incarnation != self.incarnation
            if self.status is not Status.RUNNING or stale or self.preempt:
                return False
            faults = self.system.faults
            if faults is not None and len(self.mailbox) and faults.should_kill(self, self.mailbox.peek()):
                from pytsnet.actors.runtime.errors import Killed

                killed = Killed(f"fault injector killed {self.name}")
                self._end(killed, report=True, why=StopReason.killed(killed))
                return False
            item = self.mailbox.pop()
            if item is None:
                return False
            prev = (current.name, current.seq)
            route = logs.enter(self.system.log_route)
            try:
                if isinstance(item, _Control):
                    current.name, current.seq = self.name, None
                    if item.incarnation in (None, self.incarnation):
                        self._guard(item.fn, None)
                else:
                    current.name, current.seq = self.name, item.seq
                    self.handled += 1
                    self._deliver(item)
            finally:
                current.name, current.seq = prev
                logs.leave(route)
            return True

    def _deliver(self, env: Envelope) -> None:
        actor = self.actor
        assert actor is not None
        method = getattr(actor, handler_for(type(actor), type(env.msg)) or "")
        t_mono, t_wall = self.clock.monotonic(), self.clock.time()
        reply: Any = None
        error: Exception | None = None
        self._handling, self._deferred = env, False
        try:
            reply = method(env.msg)
        except Exception as e:
            error = e
        finally:
            self._handling = None
        tracer = self.system.tracer
        if tracer is not None:
            tracer.recv(self.system, self, env, t_mono, t_wall, reply, error)
        if env.reply is not None:
            if error is None:
                if not self._deferred:
                    env.reply.set(reply)
            else:
                env.reply.set_exception(HandlerError(self.name, error))
        elif error is not None:
            self._panic(error)

    def defer_reply(self) -> Reply | None:
        """The reply slot of the ask being handled, taken over by the actor (None for a tell)."""
        env = self._handling
        if env is None or env.reply is None:
            return None
        self._deferred = True
        return env.reply

    def _guard(self, fn: Callable[[], None], _unused: None) -> None:
        try:
            fn()
        except Exception as e:
            self._panic(e)

    def _panic(self, error: Exception) -> None:
        actor = self.actor
        if actor is None:
            return
        try:
            action = actor.on_panic(error)
        except Exception as e:
            action, error = PanicAction.STOP, e
        if action is PanicAction.CONTINUE:
            log.info("%s continued after %r", self.name, error)
            return
        log.info("%s#%d panicked: %r", self.name, self.incarnation, error)
        self._end(error, report=True)

    def _end(self, reason: BaseException | None, *, report: bool, final: bool = False,
             why: StopReason | None = None) -> None:
        """End the current incarnation (caller holds run_lock). ``reason`` None means normal exit
        (for links, the supervisor and the tracer); ``why`` is what ``on_stop`` is told (default:
        normal, or a panic with ``reason``)."""
        with self.run_lock:
            actor = self.actor
            if actor is None:
                if final:
                    self._finalize()
                return
            self.status = Status.STOPPED if final else Status.SUSPENDED
            for h in list(self.timers):
                h.cancel()
            self.timers.clear()
            loops, self.io_loops = self.io_loops, []
            for loop in loops:
                loop.stop()
            prev = (current.name, current.seq)
            current.name, current.seq = self.name, None
            route = logs.enter(self.system.log_route)
            try:
                if why is None:
                    why = StopReason.normal() if reason is None else StopReason.panicked(reason)
                actor._before_stop(final)
                actor.on_stop(why)
                log.debug("%s#%d stopped (%s)", self.name, self.incarnation,
                          "normal" if reason is None else repr(reason))
            except Exception:
                log.exception("%s on_stop failed", self.name)
            finally:
                current.name, current.seq = prev
                logs.leave(route)
            self.actor = None
            tracer = self.system.tracer
            if tracer is not None:
                tracer.exit(self.system, self, reason)
            if final:
                self._finalize()
        linked, self.links = list(self.links), set()  # links last one incarnation: re-link in on_start
        for other in linked:
            other.links.discard(self)
        if reason is not None:
            for other in linked:
                other._notify_link_died(self, reason)
        if report:
            if self.parent is not None:
                parent = self.parent
                parent.mailbox.put_control(_Control(lambda: parent._child_exited(self, reason)))
                parent.dispatcher.notify(parent)
            else:
                self.system._root_exited(reason)

    def _notify_link_died(self, dead: Cell, reason: BaseException) -> None:
        def run() -> None:
            if self.actor is not None:
                self.actor.on_link_died(dead.ref, reason)

        if self.status is not Status.STOPPED:
            self.mailbox.put_control(_Control(run, self.incarnation))
            self.dispatcher.notify(self)

    def _child_exited(self, child: Cell, reason: BaseException | None) -> None:
        from pytsnet.actors.runtime.supervisor import Supervisor

        actor = self.actor
        if isinstance(actor, Supervisor):
            actor._child_exited(child, reason)
        else:  # not a supervisor: nobody restarts the child
            child.finalize()

    def _preempting(self, fn: Callable[[], None]) -> None:
        with self.sched_lock:
            self.preempt += 1
        try:
            fn()
        finally:
            with self.sched_lock:
                self.preempt -= 1
            self.dispatcher.resume(self)

    def kill(self, reason: BaseException) -> None:
        """Abnormal end from outside (fault injection): after the current message, before the next."""

        def run() -> None:
            with self.run_lock:
                if self.status is Status.RUNNING:
                    self._end(reason, report=True, why=StopReason.killed(reason))

        self._preempting(run)

    def suspend(self) -> None:
        """Stop the incarnation without reporting (a supervisor restarting siblings)."""
        self._preempting(lambda: self._end(None, report=False, why=StopReason.restart()))

    def finalize(self) -> None:
        """Stop for good: end any incarnation, fail queued asks, forget the name."""
        self._preempting(lambda: self._end(None, report=False, final=True))

    def _finalize(self) -> None:
        self.status = Status.STOPPED
        with self.children_lock:
            children, self.children = self.children, []
        for child in reversed(children):  # a suspended supervisor's children
            child.finalize()
        self.dispatcher.detach(self)
        for item in self.mailbox.drain(close=True):
            if isinstance(item, Envelope) and item.reply is not None:
                item.reply.set_exception(ActorStopped(f"{self.name} stopped before handling the message"))
        for other in list(self.links):
            other.links.discard(self)
        self.links.clear()
        self.system._forget(self)
