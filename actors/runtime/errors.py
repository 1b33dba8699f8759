"""Typed errors of the actor runtime: each names what went wrong for the caller."""

from __future__ import annotations


class ActorError(Exception):
    """Base of every runtime error."""


class ActorStopped(ActorError):
    """The actor is stopped for good (or stopped before handling this message)."""


class MailboxFull(ActorError):
    """The mailbox bound was hit and the policy (fail, or block past its timeout) refused the message."""


class AskTimeout(ActorError, TimeoutError):
    """No reply within the ask timeout; the actor may still handle the message later."""


class HandlerError(ActorError):
    """The handler raised; ``cause`` is the original exception. The actor keeps running."""

    def __init__(self, actor: str, cause: BaseException) -> None:
        super().__init__(f"handler of {actor} raised {type(cause).__name__}: {cause}")
        self.actor = actor
        self.cause = cause


class UnhandledMessage(ActorError, TypeError):
    """The actor class has no handler for this message type (raised at send time)."""


class NameTaken(ActorError):
    """An actor with this name already exists in this system."""


class ActorStartError(ActorError):
    """``on_start`` raised while spawning; the actor was not started."""


class RestartBudgetExceeded(ActorError):
    """A supervisor restarted children more than its budget allows; it escalates to its parent."""


class LinkDied(ActorError):
    """Default reaction to a linked actor's abnormal death: die too (links propagate)."""

    def __init__(self, name: str, reason: BaseException | None) -> None:
        super().__init__(f"linked actor {name} died: {reason!r}")
        self.name = name
        self.reason = reason


class Killed(ActorError):
    """Reason used by the fault injector when it kills an actor."""
