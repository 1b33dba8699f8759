"""The message contract: every actor message is a frozen pydantic v2 model with a stable tag.

Why a tag: traces, replays and (later) cross-process transport name a message by a string that
survives renames of the Python class. ``class Ping(Message, tag="runtime.ping")`` registers the
model in a process-wide registry (``REGISTRY``: tag -> model); ``to_json``/``from_json`` round-trip
any registered message, bytes fields as base64.

A message answered by ``ask`` subclasses ``Request[ReplyT]`` (``class GetPeers(Request[PeerTable],
tag=...)``): the reply type is part of the message's type, so ``ActorRef.ask`` returns it typed.
"""

from __future__ import annotations

import json
from typing import Any, ClassVar, Generic, TypeVar

from pydantic import BaseModel, ConfigDict

__all__ = ["REGISTRY", "Message", "MessageTagError", "ReplyT", "Request", "from_json", "from_tagged",
           "to_json", "to_tagged"]

ReplyT = TypeVar("ReplyT")


class MessageTagError(LookupError):
    """A tag is unknown or a class was registered twice under one tag."""


REGISTRY: dict[str, type[Message]] = {}


class Message(BaseModel):
    """Base of all actor messages (and replies): immutable, validated, JSON-serialisable."""

    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        ser_json_bytes="base64",
        val_json_bytes="base64",
        arbitrary_types_allowed=False,
    )
    TAG: ClassVar[str] = ""

    def __init_subclass__(cls, tag: str | None = None, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if tag is None:
            return  # abstract intermediate base: not routable by tag
        existing = REGISTRY.get(tag)
        if existing is not None and existing.__qualname__ != cls.__qualname__:
            other = f"{existing.__module__}.{existing.__qualname__}"
            raise MessageTagError(f"tag {tag!r} already used by {other}")
        cls.TAG = tag
        REGISTRY[tag] = cls


class Request(Message, Generic[ReplyT]):
    """A message sent with ``ask``: ``ReplyT`` is what the handler returns and ``ask`` gives back.

    The parameter is for the type checker; at run time ``Request[X]`` is an untagged intermediate
    class (pydantic's generic model), so the message's tag, fields and JSON are unchanged.
    """


def to_tagged(msg: Message) -> dict[str, Any]:
    """JSON-ready dict ``{"tag": ..., "data": ...}`` (bytes become base64 strings)."""
    return {"tag": type(msg).TAG, "data": json.loads(msg.model_dump_json())}


def from_tagged(obj: dict[str, Any]) -> Message:
    """Inverse of ``to_tagged``; raises ``MessageTagError`` for an unknown tag."""
    try:
        model = REGISTRY[obj["tag"]]
    except KeyError as e:
        raise MessageTagError(f"unknown message tag {obj.get('tag')!r}") from e
    return model.model_validate_json(json.dumps(obj["data"]))


def to_json(msg: Message) -> str:
    return json.dumps(to_tagged(msg), sort_keys=True)


def from_json(text: str) -> Message:
    return from_tagged(json.loads(text))
