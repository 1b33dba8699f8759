"""The ``Actor`` base: state, one handler per message type, lifecycle hooks.

An actor file reads as: its state (set in ``__init__``), handlers marked ``@handles(MsgType)``
(returning a reply ``Message`` or None), and hooks. Runtime services (``ref``, ``clock``,
``send_after``, ``start_io_loop``, ``lookup``...) are reached through ``self.ctx``, which the
runtime (or the replayer) attaches before ``on_start``; do not touch them in ``__init__``.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, TypeVar

from pytsnet.actors.runtime.errors import ActorStopped, LinkDied
from pytsnet.messages.base import Message

if TYPE_CHECKING:
    from pytsnet.actors.runtime.clock import Clock, TimerHandle
    from pytsnet.actors.runtime.io import IoLoop
    from pytsnet.actors.runtime.ref import ActorRef, Reply

__all__ = ["Actor", "ActorContext", "PanicAction", "StopKind", "StopReason", "handler_for", "handles"]

F = TypeVar("F", bound=Callable[..., Any])


class PanicAction(enum.Enum):
    CONTINUE = "continue"  # swallow the error, keep this incarnation running
    STOP = "stop"  # end this incarnation; the supervisor decides what happens next


class StopKind(enum.Enum):
    NORMAL = "normal"  # stop()/ref.stop()/shutdown, or its supervisor stopping it for good
    KILLED = "killed"  # ended from outside between two messages (fault injection, Cell.kill)
    PANICKED = "panicked"  # a handler, hook, timer or IO loop raised, or on_start failed
    RESTART = "restart"  # suspended by its supervisor: a group restart, or the supervisor's own


@dataclass(frozen=True, slots=True)
class StopReason:
    """Why an incarnation ends, handed to ``on_stop`` (kameo's ``ActorStopReason``).

    ``error`` is the exception of a kill or a panic (a ``LinkDied`` when a linked actor's death
    took this one down), None for a normal stop or a restart.
    """

    kind: StopKind
    error: BaseException | None = None

    @classmethod
    def normal(cls) -> StopReason:
        return cls(StopKind.NORMAL)

    @classmethod
    def restart(cls) -> StopReason:
        return cls(StopKind.RESTART)

    @classmethod
    def killed(cls, error: BaseException) -> StopReason:
        return cls(StopKind.KILLED, error)

    @classmethod
    def panicked(cls, error: BaseException) -> StopReason:
        return cls(StopKind.PANICKED, error)

    @property
    def abnormal(self) -> bool:
        """Killed or panicked: state may be half-updated, peers may need a reset."""
        return self.kind in (StopKind.KILLED, StopKind.PANICKED)

    def __str__(self) -> str:
        return self.kind.value if self.error is None else f"{self.kind.value}: {self.error!r}"


def handles(*types: type[Message]) -> Callable[[F], F]:
    """Mark a method as the handler of these message types (exactly one handler per type)."""

    def mark(fn: F) -> F:
        fn.__handles__ = types  # type: ignore[attr-defined]
        return fn

    return mark


class ActorContext(Protocol):
    """What an actor may ask of its runtime; implemented by the live cell and by the replayer."""

    name: str
    incarnation: int

    @property
    def ref(self) -> ActorRef: ...
    @property
    def clock(self) -> Clock: ...
    def lookup(self, name: str) -> ActorRef | None: ...
    def send_after(self, delay: float, msg: Message) -> TimerHandle: ...
    def send_interval(self, period: float, msg: Message) -> TimerHandle: ...
    def start_io_loop(self, fn: Callable[[], Message | None], close: Callable[[], None] | None) -> IoLoop: ...
    def link(self, other: ActorRef) -> None: ...
    def stop_self(self) -> None: ...
    def defer_reply(self) -> Reply | None: ...


class Actor:
    """Subclass, add ``@handles`` methods. Hooks run one at a time with the handlers."""

    _handlers: ClassVar[dict[type[Message], str]] = {}
    ctx: ActorContext

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        table = dict(cls._handlers)
        own: dict[type[Message], str] = {}
        for attr, fn in vars(cls).items():
            for t in getattr(fn, "__handles__", ()):
                if t in own:
                    raise TypeError(f"{cls.__name__}: two handlers for {t.__name__}: {own[t]} and {attr}")
                own[t] = attr
        table.update(own)
        cls._handlers = table

    # -- conveniences over ctx -------------------------------------------------------------
    @property
    def ref(self) -> ActorRef:
        return self.ctx.ref

    @property
    def name(self) -> str:
        return self.ctx.name

    @property
    def incarnation(self) -> int:
        return self.ctx.incarnation

    @property
    def clock(self) -> Clock:
        return self.ctx.clock

    def send_after(self, delay: float, msg: Message) -> TimerHandle:
        """Tell ``msg`` to myself after ``delay`` seconds of the system clock; cancelled on stop."""
        return self.ctx.send_after(delay, msg)

    def send_interval(self, period: float, msg: Message) -> TimerHandle:
        """Tell ``msg`` to myself every ``period`` seconds; cancelled on stop."""
        return self.ctx.send_interval(period, msg)

    def start_io_loop(
        self, fn: Callable[[], Message | None], close: Callable[[], None] | None = None
    ) -> IoLoop:
        """Run blocking ``fn`` repeatedly on a daemon thread; each non-None result is told to me.

        ``fn`` should block with a timeout (e.g. a socket timeout) or ``close`` should unblock it
        (e.g. close the socket); the loop is stopped with this incarnation. An exception in ``fn``
        is a panic of this actor.
        """
        return self.ctx.start_io_loop(fn, close)

    def lookup(self, name: str) -> ActorRef | None:
        return self.ctx.lookup(name)

    def tell_named(self, name: str, msg: Message) -> bool:
        """Tell ``msg`` to the actor registered as ``name`` in this system, if it is there and
        running; False otherwise. For fire-and-forget fan-out to siblings that may be restarting
        or not spawned yet (a sibling that is gone is not this actor's failure)."""
        ref = self.ctx.lookup(name)
        if ref is None:
            return False
        try:
            ref.tell(msg)
        except ActorStopped:
            return False
        return True

    def link(self, other: ActorRef) -> None:
        """Bidirectional link: an abnormal death of either calls the other's ``on_link_died``.

        A link lasts for the current incarnations of both (a restart is a new incarnation, like a new
        Erlang process): re-link in ``on_start``. Otherwise two linked actors would kill each other
        forever.
        """
        self.ctx.link(other)

    def stop(self) -> None:
        """Exit normally after the current message (a permanent child is restarted)."""
        self.ctx.stop_self()

    def defer_reply(self) -> Reply | None:
        """Answer the ask being handled later: the handler's return value is not sent; the actor
        sets the returned slot itself once the work it started (e.g. on its I/O thread) is done.
        None when the message was told, not asked (or under replay, which records no slots)."""
        return self.ctx.defer_reply()

    # -- hooks -------------------------------------------------------------------------------
    def on_start(self) -> None:
        """Runs before the first message of each incarnation; raising fails the start."""

    def on_stop(self, reason: StopReason) -> None:
        """Runs when an incarnation ends, told why; release sockets and files here."""

    def on_panic(self, error: Exception) -> PanicAction:
        """A handler of a tell (or a timer/IO loop) raised. Default: stop, let the supervisor decide."""
        return PanicAction.STOP

    def on_link_died(self, ref: ActorRef, reason: BaseException | None) -> None:
        """A linked actor died abnormally. Default: die too (raise ``LinkDied``)."""
        raise LinkDied(ref.name, reason)

    def _before_stop(self, final: bool) -> None:
        """Runtime hook (supervisors stop their children here, in reverse order)."""


def handler_for(actor_cls: type[Actor], msg_type: type) -> str | None:
    """Name of the method handling ``msg_type`` (or its nearest registered base), or None."""
    for t in msg_type.__mro__:
        name = actor_cls._handlers.get(t)
        if name is not None:
            return name
    return None
