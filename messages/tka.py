"""Messages of Tailnet Lock (TKA) on the node: the ``/machine/tka/*`` calls through the ControlRunner,
what each netmap says about the lock, and the verified authority the PeerTracker enforces.

Flow: the ControlRunner tells the TKA authority actor ``TkaNetmapInfo`` on every netmap (Go's
``tkaSyncIfNeeded`` input); that actor asks the runner ``TkaControlCall`` for bootstrap/sync (Go sends
them as GET with a JSON body to ``https://unused/machine/tka/...`` over Noise), verifies what comes
back, and tells the PeerTracker ``TkaAuthorityUpdate`` (the verified ``State``, CBOR) to filter peers
with (Go's ``tkaFilterNetmapLocked``). Nothing here is trusted for being a message: the tracker
re-parses the State and re-verifies every peer signature against it.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from pytsnet.messages.base import Message, Request
from pytsnet.messages.redact import Payload

__all__ = ["IoTkaControlAnswer", "TkaAuthorityUpdate", "TkaAuthorityWanted", "TkaControlAnswer",
           "TkaControlCall", "TkaNetmapInfo", "TkaNetmapInfoWanted"]

TkaBody = Annotated[Payload, Field(repr=False)]
"""A TKA call's JSON: a disablement request carries the disablement secret, so never in a repr, and
a trace keeps only its length and hash (as application payloads)."""


class TkaControlAnswer(Message, tag="tka.control_answer"):
    """Control's answer to a ``TkaControlCall`` as it came (HTTP ``status``, ``body``), or ``error`` when
    no answer: ``status`` 503 "no netmap" when no session is up (as the ID-token call), 0 when the
    connection failed."""

    status: int = 0
    body: TkaBody = b""
    error: str = ""


class TkaControlCall(Request[TkaControlAnswer], tag="tka.control_call"):
    """One ``/machine/tka/...`` call over the current Noise connection (Go: ``GET`` with a JSON body,
    URL ``https://unused/machine/tka/...``; answered when control answers, never blocking the runner)."""

    path: str
    """``/machine/tka/bootstrap``, ``/machine/tka/sync/offer``, ``/machine/tka/sync/send``, … (must
    start with ``/machine/tka/``: the runner refuses anything else)."""
    body: TkaBody = b""
    """The request JSON (a ``tailcfg.TKA*Request``)."""


class IoTkaControlAnswer(Message, tag="tka.io_control_answer"):
    """The ControlRunner's I/O thread to itself: TKA call ``token`` got ``status``/``body``, or ``error``."""

    token: int
    status: int = 0
    body: TkaBody = b""
    error: str = ""


class TkaNetmapInfo(Message, tag="tka.netmap_info"):
    """What a netmap says about the lock (Go ``NetworkMap.TKAEnabled``/``TKAHead`` from ``TKAInfo``),
    and our own node key and its signature: told by the ControlRunner to the TKA actor after each
    netmap, so it syncs when the head moves and can tell whether we are locked out."""

    enabled: bool = False
    """``TKAInfo`` present and not ``Disabled``."""
    head: str = ""
    """Control's head AUM hash (base32 text as Go's ``AUMHash.MarshalText``; "" if none)."""
    disabled: bool = False
    """``TKAInfo.Disabled``: control says the lock was disabled (the actor must verify the secret)."""
    self_node_key: str = ""
    self_key_signature: bytes = b""
    """Our node's ``KeySignature`` (a serialized ``NodeKeySignature``; empty: unsigned)."""


class TkaAuthorityUpdate(Message, tag="tka.authority_update"):
    """The TKA actor's verified authority, told to the PeerTracker (and other subscribers) whenever it
    changes and on request. ``enabled=False``: the lock is off locally (never bootstrapped, or
    disabled with a verified disablement secret)."""

    enabled: bool = False
    head: str = ""
    """The authority's head (base32 text); the PeerTracker compares it with the netmap's ``tka_head``."""
    state: bytes = b""
    """The verified ``State`` as CBOR (``State.to_cbor()``): the trusted keys signatures are checked with."""
    seq: int = 0
    """Increases with every update of one actor incarnation (a subscriber can drop a reordered one)."""
    ancestors: list[str] = []
    """Recent heads this authority has passed through (base32 text, newest first): a netmap naming one
    of them is older than this authority, so the authority may be used for it (21d addition; empty
    means only a netmap with exactly ``head`` is served)."""


class TkaAuthorityWanted(Message, tag="tka.authority_wanted"):
    """Told by a restarted PeerTracker to the TKA actor: it keeps nothing across a restart, so tell it
    the current ``TkaAuthorityUpdate`` again (until then it admits no peer that needs a signature)."""

    reply_to: str = ""
    """Who to tell (the tracker's name)."""


class TkaNetmapInfoWanted(Message, tag="tka.netmap_info_wanted"):
    """Told by a restarted TKA actor to the ControlRunner: tell me the last ``TkaNetmapInfo`` again
    (a quiet tailnet may send no netmap for a long time)."""


# -- facade asks (21e) --
