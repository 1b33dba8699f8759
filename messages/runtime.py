"""Messages the actor runtime itself, its tests, the demo and the benchmark exchange."""

from __future__ import annotations

from pytsnet.messages.base import Message, Request


class Pong(Message, tag="runtime.pong"):
    seq: int = 0
    incarnation: int = 0


class Ping(Request[Pong], tag="runtime.ping"):
    """Asked for a ``Pong`` (the echo actors of tests and bench); told as a plain tick too."""

    seq: int = 0


class Work(Message, tag="runtime.work"):
    """A unit of work in a stream; ``payload`` exercises bytes fields through traces."""

    seq: int
    payload: bytes = b""


class Done(Message, tag="runtime.done"):
    seq: int
    by: str


class Crash(Message, tag="runtime.crash"):
    """Ask an actor to fail in its handler (tests and demo only)."""

    reason: str = "requested"


class Total(Message, tag="runtime.total"):
    value: int


class Count(Request[Total], tag="runtime.count"):
    pass


