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

from typing import Annotated, Literal  # Literal: 21e

from pydantic import Field

from pytsnet.messages.base import Message, Request
from pytsnet.messages.redact import Payload, secret_field  # secret_field: 21e

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


class TkaSpawn(Message, tag="tka.spawn"):
    """The TKA actor's settings: whom it asks for ``/machine/tka/*`` (the ControlRunner), whom it
    tells each ``TkaAuthorityUpdate`` (the PeerTracker first), and where the chain lives (Go's
    ``<varRoot>/tka-profiles/<profile>``; empty ``chonk_dir``: in memory, as Go with no state dir)."""

    control: str = "control"
    subscribers: tuple[str, ...] = ()
    chonk_dir: str = ""
    call_timeout: float = 30.0
    """Per ``/machine/tka/*`` call (Go: one minute)."""


class TkaSyncStep(Message, tag="tka.sync_step"):
    """The TKA actor to itself: the next step of Go's tkaSyncIfNeeded for ``info`` (``bootstrap``:
    enable from control's genesis or disable on its secret; ``offer``: sync offer + inform; ``send``:
    tell control our head and the AUMs it lacks). One step per message, and control's answer to a
    step's call comes back carrying the step (``TkaCallDone``), so a kill lands between steps and the
    next incarnation resumes from the persisted chain."""

    info: TkaNetmapInfo
    stage: Literal["bootstrap", "offer", "send"]
    just_enabled: bool = False
    send_aums: tuple[bytes, ...] = ()
    """``send``: the serialized AUMs control lacks (computed before we informed, as Go)."""
    run: int = 0
    """Which sync run this step belongs to (21i): one run at a time; a step of another run is dropped
    while one is under way."""


class TkaCallDone(Message, tag="tka.call_done"):
    """Control's answer to the TKA actor's ``TkaControlCall`` ``token``, told back to it by the reply's
    callback (21i: the actor never blocks on control, so status answers at once during a slow call).
    ``step``: the sync step that made the call (a new incarnation can carry on with it); None for a
    facade operation's call, whose continuation lives only in the incarnation that made it."""

    token: int
    status: int = 0
    body: TkaBody = b""
    error: str = ""
    step: TkaSyncStep | None = None


class TkaCallTimeout(Message, tag="tka.call_timeout"):
    """The TKA actor to itself ``call_timeout`` after a control call: no answer → the call failed."""

    token: int


class TkaRetry(Message, tag="tka.retry"):
    """The TKA actor to itself, a while after a failed sync: run it again with the last netmap info."""


class TkaKeyInfo(Message, tag="tka.key_info"):
    """A trusted key (Go ``ipnstate.TKAKey``): ``key`` in ``tlpub:`` text."""

    key: str
    votes: int = 1
    meta: tuple[tuple[str, str], ...] = ()


class TkaStatus(Message, tag="tka.status"):
    """Go ``ipnstate.NetworkLockStatus`` as far as the TKA actor knows it (the facade adds the peers
    the PeerTracker filtered). ``node_key_signed``: our own key verifies under the authority."""

    enabled: bool = False
    head: str = ""
    public_key: str = ""
    """Our network-lock key, ``tlpub:…`` ("" before the node record exists)."""
    node_key: str = ""
    node_key_signed: bool = False
    trusted_keys: tuple[TkaKeyInfo, ...] = ()
    state_id: int = 0
    syncing: bool = False
    last_error: str = ""


class TkaStatusAsk(Request[TkaStatus], tag="tka.status_ask"):
    pass


TkaFailure = Literal["", "not_enabled", "not_trusted", "no_node_key", "bad_secret", "invalid", "control"]
"""Why a lock operation failed: the lock is off here, our key is not trusted by the authority, we are
not logged in, the disablement secret does not match, bad input, or control refused / did not answer."""


class TkaAnswer(Message, tag="tka.answer"):
    """The outcome of a lock operation: ``failure`` "" is success; ``error`` says what to do."""

    failure: TkaFailure = ""
    error: str = ""
    head: str = ""
    """The head after the operation (modify: control's head, which equals our last AUM's)."""


DisablementSecretText = Annotated[str, secret_field("process:DisablementSecret"), Field(repr=False)]
"""A disablement secret, hex (never in a repr, redacted in a trace; no state store holds it, so a replay
that needs it says so: ``actors.runtime.replay.EPHEMERAL``)."""


class TkaInit(Request[TkaAnswer], tag="tka.init"):
    """Go ``NetworkLockInit``: a genesis AUM trusting ``keys`` with ``disablement_values`` (the KDF of
    each secret: public values), init/begin, sign every node control names, init/finish."""

    keys: tuple[TkaKeyInfo, ...]
    disablement_values: tuple[bytes, ...]
    support_disablement_hex: DisablementSecretText = ""
    """Go's ``--gen-disablement-for-support``: a real disablement secret (hex) handed to control, so it
    is redacted like ``TkaDisable``'s (r1 finding)."""


class TkaSign(Request[TkaAnswer], tag="tka.sign"):
    """Go ``NetworkLockSign``: a SigDirect over ``node_key`` (``nodekey:…``) by our key, with
    ``rotation_key`` (Ed25519 public, 32 bytes, or empty) as WrappingPubkey, to ``/machine/tka/sign``."""

    node_key: str
    rotation_key: bytes = b""


class TkaModify(Request[TkaAnswer], tag="tka.modify"):
    """Go ``NetworkLockModify``: AddKey / RemoveKey AUMs signed by our key, sent with sync/send."""

    add: tuple[TkaKeyInfo, ...] = ()
    remove: tuple[str, ...] = ()
    """Keys to remove, ``tlpub:``/``nlpub:`` text."""



class TkaDisable(Request[TkaAnswer], tag="tka.disable"):
    """Go ``NetworkLockDisable``: checked against the authority's disablement values first (a wrong
    secret never leaves the node), then ``/machine/tka/disable``."""

    secret_hex: DisablementSecretText


class TkaLogEntry(Message, tag="tka.log_entry"):
    """Go ``ipnstate.NetworkLockUpdate``: an AUM's hash (base32 text), kind and CBOR."""

    hash: str
    change: str
    raw: bytes


class TkaLogAnswer(Message, tag="tka.log_answer"):
    entries: tuple[TkaLogEntry, ...] = ()
    failure: TkaFailure = ""
    error: str = ""


class TkaLog(Request[TkaLogAnswer], tag="tka.log"):
    """The newest ``limit`` AUMs from the head back (Go ``NetworkLockLog``)."""

    limit: int = 50


__all__ += ["DisablementSecretText", "TkaAnswer", "TkaDisable", "TkaFailure", "TkaInit", "TkaKeyInfo",
            "TkaLog", "TkaLogAnswer", "TkaLogEntry", "TkaModify", "TkaRetry", "TkaSign", "TkaSpawn",
            "TkaStatus", "TkaStatusAsk", "TkaSyncStep"]  # 21e's own line


class TkaAffectedSigsAnswer(Message, tag="tka.affected_sigs_answer"):
    """The signatures control holds that rest on the key asked about, each verified against our
    authority (``failure`` "" is success)."""

    signatures: tuple[bytes, ...] = ()
    failure: TkaFailure = ""
    error: str = ""


class TkaAffectedSigs(Request[TkaAffectedSigsAnswer], tag="tka.affected_sigs"):
    """Go ``NetworkLockAffectedSigs`` (21i): ``/machine/tka/affected-sigs`` for ``key_id`` (a trusted
    key's ID, its 32-byte public key), then Go's checks: each signature decodes, rests on that key and
    authorizes its node key under our authority (else the whole answer fails)."""

    key_id: bytes


__all__ += ["TkaAffectedSigs", "TkaAffectedSigsAnswer", "TkaCallDone", "TkaCallTimeout"]  # 21i
