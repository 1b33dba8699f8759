"""``TkaAuthorityActor`` ("tka"): the node's tailnet key authority (Go ``ipn/ipnlocal/network-lock.go``).

It keeps the verified AUM chain and publishes what the PeerTracker filters with. Control tells it
nothing directly: the ControlRunner tells it ``TkaNetmapInfo`` on each netmap with TKA info, and it
runs Go's ``tkaSyncIfNeeded`` by asking the runner ``TkaControlCall`` for ``/machine/tka/*``. It never
waits for control in a handler (21i): a call is sent with ``ask_then`` and its answer comes back as
``TkaCallDone`` (or ``TkaCallTimeout``), so status and log answer at once while control is slow:

- enablement (netmap enabled, no local authority): ``bootstrap`` → the genesis AUM → ``Authority.bootstrap``;
- disablement (netmap not enabled, a local authority): ``bootstrap`` → the disablement secret, checked
  with ``valid_disablement``; a wrong one leaves the lock ON (logged, as Go) and nothing is removed;
- sync (our head differs from the netmap's, or just enabled): ``sync/offer`` → every AUM control sends
  goes through the authority's ``inform`` (signatures, parents, votes verified) before adoption →
  ``sync/send`` with the AUMs control lacks.

Each step is its own message (``TkaSyncStep``, one sync run at a time; control's answer carries the
step, so a new incarnation carries on with it), so a kill lands between steps; the chain is persisted
(21b's ``FsChonk`` under ``tka-profiles/<profile>`` of the state dir; a ``MemChonk`` without one, as
Go) and a new incarnation re-opens it (``Authority.open``) and publishes again in ``on_start``. After
every adoption it tells ``TkaAuthorityUpdate`` (the verified State's CBOR) to its subscribers. It
never admits anything itself: the PeerTracker fails closed until an update with the netmap's head
arrives.

The facade's lock operations (Go ``NetworkLockInit``/``Sign``/``Modify``/``Disable``/``Log``/
``Status``) are asks of this actor; they sign with the node's network-lock key, read from the node
record in the state store when needed (never kept in a message). One that calls control defers its
reply until control answers (a stop answers it with a ``control`` failure).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import itertools
import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from pytsnet.actors.control.store import NODE, StateStore
from pytsnet.actors.runtime import Actor, ActorStopped, MailboxFull, StopReason, TimerHandle, handles
from pytsnet.actors.runtime.ref import Reply
from pytsnet.actors.tka.storage import FsChonk
from pytsnet.messages.tka import (
    TkaAffectedSigs,
    TkaAffectedSigsAnswer,
    TkaAnswer,
    TkaAuthorityUpdate,
    TkaAuthorityWanted,
    TkaCallDone,
    TkaCallTimeout,
    TkaControlAnswer,
    TkaControlCall,
    TkaDisable,
    TkaFailure,
    TkaInit,
    TkaKeyInfo,
    TkaLog,
    TkaLogAnswer,
    TkaLogEntry,
    TkaModify,
    TkaNetmapInfo,
    TkaNetmapInfoWanted,
    TkaRetry,
    TkaSign,
    TkaSpawn,
    TkaStatus,
    TkaStatusAsk,
    TkaSyncStep,
)
from pytsnet.wire.control.record import NodeRecord
from pytsnet.wire.errors import WireError
from pytsnet.wire.keys import KeyParseError, NLPrivate, NLPublic, NodePublic
from pytsnet.wire.tka import (
    AUM,
    Key,
    KeyKind,
    NodeKeySignature,
    State,
    TkaError,
    aum_hash_text,
    sign_direct,
)
from pytsnet.wire.tka.authority import Authority
from pytsnet.wire.tka.chonk import Chonk, CompactionOptions, MemChonk
from pytsnet.wire.tka.sig import node_public_from_binary
from pytsnet.wire.tka.sync import sync_offer_from_text, sync_offer_to_text

__all__ = ["CAPABILITY_VERSION", "TKA", "TkaAuthorityActor"]

TKA = "tka"
log = logging.getLogger("pytsnet.tka")

CAPABILITY_VERSION = 106
"""``Version`` in every TKA request (tailcfg.CurrentCapabilityVersion of the Go we track)."""

ANCESTORS = 32
"""How many past heads a ``TkaAuthorityUpdate`` names."""

RETRY = 5.0
"""Seconds before a failed sync is tried again with the last netmap's info (the runner tells an
unchanged info only once)."""

NOT_TRUSTED = "this node is not trusted by network lock"
"""Go ``tsconst.TailnetLockNotTrustedMsg``."""

_ZERO_NODE = "nodekey:" + "00" * 32
"""Go's zero ``key.NodePublic`` in JSON (sent when we have no node key, as Go's prefs would)."""


class _Failed(Exception):
    """A lock operation's typed failure, turned into a ``TkaAnswer`` at the handler's edge."""

    def __init__(self, failure: TkaFailure, error: str) -> None:
        super().__init__(error)
        self.failure = failure


COMPACTION_DEFAULTS = CompactionOptions(min_chain=24, min_age=14 * 24 * 3600.0)
"""Go ``tkaCompactionDefaults``: keep at least 24 AUMs back from the head, and two weeks of AUMs."""

_Answer = TkaAnswer | TkaAffectedSigsAnswer
_A = TypeVar("_A", TkaAnswer, TkaAffectedSigsAnswer)


def _narrow(kind: type[_A], answer: _Answer | None) -> _A | None:
    """The answer an operation of one ask gives, typed as that ask's reply (an op's ``failed`` builds
    the same kind, so anything else is a bug)."""
    assert answer is None or isinstance(answer, kind), answer
    return answer
"""What a deferred lock operation answers."""


class _Op:
    """One facade lock operation in flight: its deferred reply slot (None under replay) and answer;
    ``failed`` builds the answer for a failure (a ``TkaAnswer`` unless told otherwise)."""

    def __init__(self, reply: Reply | None,
                 failed: Callable[[TkaFailure, str], _Answer] = (
                     lambda f, e: TkaAnswer(failure=f, error=e))) -> None:
        self.reply = reply
        self.failed = failed
        self.answer: _Answer | None = None

    def ok(self, head: str) -> None:
        self.settle(TkaAnswer(head=head))

    def fail(self, e: Exception) -> None:
        if isinstance(e, _Failed):
            self.settle(self.failed(e.failure, str(e)))
        else:
            self.settle(self.failed("invalid", f"{type(e).__name__}: {e}"))

    def settle(self, answer: _Answer) -> None:
        if self.answer is not None:
            return
        self.answer = answer
        if self.reply is not None:
            self.reply.set(answer)


@dataclass
class _Pending:
    """A control call awaiting its ``TkaCallDone``: a sync step's, or an operation's continuation."""

    path: str
    step: TkaSyncStep | None
    then: Callable[[dict[str, Any]], None] | None
    fail: Callable[[Exception], None] | None
    timer: TimerHandle


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(v: object, what: str) -> bytes:
    if v is None or v == "":
        return b""
    if not isinstance(v, str):
        raise _Failed("control", f"{what}: not base64 text")
    try:
        return base64.b64decode(v, validate=True)
    except (binascii.Error, ValueError):
        raise _Failed("control", f"{what}: bad base64") from None


def _key_from_info(k: TkaKeyInfo) -> Key:
    try:
        pub = NLPublic.from_text(k.key)
    except KeyParseError as e:
        raise _Failed("invalid", f"key {k.key[:80]!r}: {e}") from None
    if k.votes < 1 or k.votes > 4096:
        raise _Failed("invalid", f"key {k.key[:80]!r}: votes {k.votes} out of range")
    return Key(kind=KeyKind.KEY25519, votes=k.votes, public=pub.raw, meta=dict(k.meta) or None)


def _meta(meta: dict[str, str] | None) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(meta.items())) if meta else ()


def _tlpub(public: bytes) -> str:
    return NLPublic(public).cli_string()


class TkaAuthorityActor(Actor):
    def __init__(self, spawn: TkaSpawn, store: StateStore) -> None:
        self.spawn = spawn
        self.store = store
        self.authority: Authority | None = None
        self.chonk: Chonk | None = None
        self.info: TkaNetmapInfo | None = None
        """The newest netmap TKA info (steps for an older one are skipped)."""
        self.seq = 0
        self.syncing = False
        self.last_error = ""
        self._retry_armed = False
        self._tokens = itertools.count(1)
        self._calls: dict[int, _Pending] = {}
        """Control calls in flight (21i: never waited for in a handler), by token."""
        self._run: int | None = None
        """The sync run under way (its steps carry it), or None."""
        self._unusable = False
        """A stored chain was there but could not be opened (until a bootstrap replaces it)."""
        self._ops: set[_Op] = set()
        """Facade operations waiting on control (answered on stop)."""

    # -- lifecycle ------------------------------------------------------------------------------------
    def on_start(self) -> None:
        """Re-open a persisted chain (Go initTKALocked) and publish it: a restart loses nothing verified."""
        self.seq = self.incarnation << 32
        d = self._dir()
        if d is not None and d.is_dir() and any(d.iterdir()):
            try:
                chonk = FsChonk(str(d))
                self.authority = Authority.open(chonk)
                self.chonk = chonk
                log.info("tka initialized at head %s", aum_hash_text(self.authority.head()))
                try:  # as Go's initTKALocked: keep the chain a later open walks short
                    self.authority.compact(chonk, COMPACTION_DEFAULTS, self.clock.time())
                except (TkaError, OSError) as e:
                    log.warning("tka compaction failed: %s", e)
            except (TkaError, OSError) as e:
                self._unusable = True
                self.last_error = f"opening the stored chain: {e}"
                log.warning("tka: %s (the lock stays unverified: peers needing a signature are refused)",
                            self.last_error)
        if self._may_publish():  # also "none" (r1): a tracker holds every peer back until it heard us
            self._publish()
        control = self.lookup(self.spawn.control)
        if control is not None:  # a quiet tailnet may send no netmap for long: ask for the last info
            with contextlib.suppress(ActorStopped, MailboxFull):
                control.tell(TkaNetmapInfoWanted())

    def _dir(self) -> Path | None:
        return Path(self.spawn.chonk_dir) if self.spawn.chonk_dir else None

    def _new_chonk(self) -> Chonk:
        d = self._dir()
        if d is None:
            log.info("network-lock using in-memory storage; no state directory")
            return MemChonk()
        d.parent.mkdir(parents=True, exist_ok=True, mode=0o700)  # tka-profiles/: 0700 as the state dir
        d.mkdir(exist_ok=True, mode=0o700)
        chonk = FsChonk(str(d))
        try:
            stale = bool(chonk.heads())
        except TkaError:
            stale = True
        if stale:  # a chain we could not open (on_start said why): bootstrapping needs an empty store
            log.warning("tka: discarding the unusable stored chain in %s before bootstrapping", d)
            chonk.remove_all()
            d.mkdir(exist_ok=True, mode=0o700)
            chonk = FsChonk(str(d))
        return chonk

    # -- publishing -----------------------------------------------------------------------------------
    def _update(self) -> TkaAuthorityUpdate:
        a = self.authority
        if a is None:
            return TkaAuthorityUpdate(enabled=False, head="", state=b"", seq=self.seq)
        return TkaAuthorityUpdate(enabled=True, head=aum_hash_text(a.head()), state=a.state.to_cbor(),
                                  seq=self.seq, ancestors=self._ancestors())

    def _ancestors(self) -> list[str]:
        """Heads this authority passed through (newest first, up to ``ANCESTORS``): a netmap naming one
        is older than us, so the tracker may filter it with this authority."""
        out: list[str] = []
        if self.authority is None or self.chonk is None:
            return out
        cursor = self.authority.head()
        while len(out) < ANCESTORS:
            try:
                parent = self.chonk.aum(cursor).parent()
            except TkaError:
                break
            if parent is None:
                break
            out.append(aum_hash_text(parent))
            cursor = parent
        return out

    def _publish(self, only: str = "") -> None:
        self.seq += 1
        msg = self._update()
        for name in (only,) if only else self.spawn.subscribers:
            ref = self.lookup(name)
            if ref is None:
                continue
            with contextlib.suppress(ActorStopped, MailboxFull):
                ref.tell(msg)  # a restarted subscriber asks again (TkaAuthorityWanted)

    @handles(TkaAuthorityWanted)
    def on_wanted(self, msg: TkaAuthorityWanted) -> None:
        """A restarted PeerTracker: tell it what we have — also that we hold no authority (r1: until it
        has heard from us it admits no one; the netmap alone cannot say the lock is off)."""
        if self._may_publish():
            self._publish(only=msg.reply_to or self.spawn.subscribers[0])

    def _may_publish(self) -> bool:
        """Whether to tell subscribers what we hold: not while a stored chain we could not open is all
        we have (we do not know the lock is off, so the trackers stay closed until we bootstrap)."""
        return self.authority is not None or not self._unusable

    # -- control calls --------------------------------------------------------------------------------
    def _call(self, path: str, body: dict[str, Any], *, step: TkaSyncStep | None = None,
              then: Callable[[dict[str, Any]], None] | None = None,
              fail: Callable[[Exception], None] | None = None) -> None:
        """Send one ``/machine/tka/*`` call through the ControlRunner without waiting (21i): its answer
        comes back as ``TkaCallDone`` (carrying ``step`` for a sync step, else ``then``/``fail`` run in
        this incarnation), or ``TkaCallTimeout`` after ``call_timeout``. Raises ``_Failed`` if it cannot
        be sent."""
        ref = self.lookup(self.spawn.control)
        if ref is None:
            raise _Failed("control", "no control client")
        token = (self.incarnation << 32) | next(self._tokens)
        me = self.ref

        def answered(reply: Reply) -> None:  # on the answering thread: only tell, never work
            try:
                ans = reply.result()
                if isinstance(ans, TkaControlAnswer):
                    done = TkaCallDone(token=token, step=step, status=ans.status, body=ans.body,
                                       error=ans.error)
                else:
                    done = TkaCallDone(token=token, step=step, error="not a TkaControlAnswer")
            except Exception as e:
                done = TkaCallDone(token=token, step=step, error=f"{type(e).__name__}: {e}")
            with contextlib.suppress(ActorStopped, MailboxFull):
                me.tell(done)

        try:
            ref.ask_then(TkaControlCall(path=path, body=json.dumps(body).encode()), answered)
        except (ActorStopped, MailboxFull) as e:
            raise _Failed("control", f"{path}: {type(e).__name__}: {e}") from None
        timer = self.send_after(self.spawn.call_timeout, TkaCallTimeout(token=token))
        self._calls[token] = _Pending(path, step, then, fail, timer)

    @staticmethod
    def _doc(path: str, ans: TkaCallDone) -> dict[str, Any]:
        """Control's answer as a JSON object; non-200 or garbage → ``_Failed("control")``."""
        if ans.error or ans.status != 200:
            detail = ans.error or ans.body[:200].decode(errors="replace")
            raise _Failed("control", f"{path}: request returned ({ans.status}): {detail}")
        try:
            doc = json.loads(ans.body or b"{}")
        except (ValueError, RecursionError):  # deeply nested JSON: a bad answer, never a crash (r1)
            raise _Failed("control", f"{path}: answer is not JSON") from None
        if not isinstance(doc, dict):
            raise _Failed("control", f"{path}: answer is not a JSON object")
        return doc

    @handles(TkaCallDone)
    def on_call_done(self, msg: TkaCallDone) -> None:
        pending = self._calls.pop(msg.token, None)
        if pending is not None:
            pending.timer.cancel()
        elif msg.token >> 32 == self.incarnation or msg.step is None:
            return  # timed out already, or a facade call of a previous incarnation (its asker gave up)
        step = pending.step if pending is not None else msg.step
        if step is not None:
            if pending is None and not self._adopt(step):
                return  # a previous incarnation's step while this one runs its own sync
            self._sync_answer(step, msg)
            return
        assert pending is not None
        try:
            doc = self._doc(pending.path, msg)
            if pending.then is not None:
                pending.then(doc)
        except (_Failed, TkaError, WireError) as e:
            if pending.fail is not None:
                pending.fail(e)

    @handles(TkaCallTimeout)
    def on_call_timeout(self, msg: TkaCallTimeout) -> None:
        pending = self._calls.pop(msg.token, None)
        if pending is None:
            return
        e = _Failed("control", f"{pending.path}: AskTimeout: no answer within {self.spawn.call_timeout}s")
        if pending.step is not None:
            self._sync_failed("tka sync", e)
        elif pending.fail is not None:
            pending.fail(e)

    def _node_key(self) -> str:
        if self.info is None or not self.info.self_node_key:
            raise _Failed("no_node_key", "no node-key: is tailscale logged in?")
        return self.info.self_node_key

    def _nl_private(self) -> NLPrivate:
        rec = NodeRecord.from_blob(self.store.read_state(NODE))
        if rec is None or rec.nl is None:
            raise _Failed("no_node_key", "missing netmap: verify that you are logged in")
        return rec.nl

    # -- sync (Go tkaSyncIfNeeded) ------------------------------------------------------------------
    @handles(TkaNetmapInfo)
    def on_netmap_info(self, msg: TkaNetmapInfo) -> None:
        self.info = msg
        if self._run is None:  # else: the running sync re-checks the newest info when it ends
            self._start_sync()

    def _start_sync(self) -> None:
        """Go tkaSyncIfNeeded for ``self.info``: a transition first (bootstrap), then offer/send."""
        info = self.info
        if info is None:
            return
        want = info.enabled and not info.disabled
        transition = want != (self.authority is not None)
        if not transition and (self.authority is None or aum_hash_text(self.authority.head()) == info.head):
            return
        self._run = (self.incarnation << 32) | next(self._tokens)
        self.syncing = True
        stage = "bootstrap" if transition else "offer"
        self.ref.tell(TkaSyncStep(info=info, stage=stage, run=self._run))

    def _adopt(self, step: TkaSyncStep) -> bool:
        """A step (or its answer) this incarnation did not start: carry on with it if no run is under
        way (a kill landed between steps), else drop it."""
        if self._run is not None:
            return step.run == self._run
        if self.info is not None and step.info != self.info:
            return False
        self.info, self._run, self.syncing = step.info, step.run, True
        return True

    def _sync_done(self, ran_for: TkaNetmapInfo) -> None:
        """The run for ``ran_for`` ended: run again if a newer netmap info arrived meanwhile."""
        self._run, self.syncing = None, False
        if self.info is not None and self.info != ran_for:
            self._start_sync()

    def _sync_failed(self, what: str, e: Exception) -> None:
        self._failed(what, e)  # the retry runs with the newest info
        self._run, self.syncing = None, False

    @handles(TkaSyncStep)
    def on_sync_step(self, msg: TkaSyncStep) -> None:
        if not self._adopt(msg):
            return
        if self.info is not None and msg.info != self.info:
            self._sync_done(msg.info)  # a newer netmap's info: start over with it
            return
        try:
            if msg.stage == "bootstrap":
                head = aum_hash_text(self.authority.head()) if self.authority is not None else ""
                self._call("/machine/tka/bootstrap", {"Version": CAPABILITY_VERSION,
                                                      "NodeKey": self._node_key(), "Head": head}, step=msg)
                return
            a, chonk = self.authority, self.chonk
            if a is None or chonk is None:
                self._sync_done(msg.info)
                return
            if msg.stage == "offer":
                head, ancestors = sync_offer_to_text(a.sync_offer(chonk))
                self._call("/machine/tka/sync/offer", {"Version": CAPABILITY_VERSION,
                                                       "NodeKey": self._node_key(), "Head": head,
                                                       "Ancestors": list(ancestors)}, step=msg)
            else:
                self._call("/machine/tka/sync/send",
                           {"Version": CAPABILITY_VERSION, "NodeKey": self._node_key(),
                            "Head": aum_hash_text(a.head()),
                            "MissingAUMs": [_b64(x) for x in msg.send_aums], "Interactive": False}, step=msg)
        except (_Failed, TkaError, WireError) as e:
            self._sync_failed("tka sync" if msg.stage != "bootstrap" else "tkaSyncIfNeeded", e)

    def _sync_answer(self, step: TkaSyncStep, ans: TkaCallDone) -> None:
        try:
            if step.stage == "bootstrap":
                self._after_bootstrap(step, self._doc("/machine/tka/bootstrap", ans))
            elif step.stage == "offer":
                self._after_offer(step, self._doc("/machine/tka/sync/offer", ans))
            else:
                self._after_send(step, self._doc("/machine/tka/sync/send", ans))
        except (_Failed, TkaError, WireError) as e:
            self._sync_failed("tka sync" if step.stage != "bootstrap" else "tkaSyncIfNeeded", e)

    def _after_bootstrap(self, step: TkaSyncStep, bs: dict[str, Any]) -> None:
        """Enable from control's genesis, or disable on a valid secret; then sync if enabled."""
        want = step.info.enabled and not step.info.disabled
        if want == (self.authority is not None):  # someone else made the transition meanwhile
            self._sync_done(step.info)
            return
        if want:
            genesis = AUM.unserialize(_unb64(bs.get("GenesisAUM"), "GenesisAUM"))
            chonk = self._new_chonk()
            self.authority = Authority.bootstrap(chonk, genesis, self.clock.time())
            self.chonk, self._unusable = chonk, False
            log.info("tka bootstrapped at head %s", aum_hash_text(self.authority.head()))
            self._publish()
            self.ref.tell(TkaSyncStep(info=step.info, stage="offer", just_enabled=True, run=step.run))
            return
        assert self.authority is not None
        secret = _unb64(bs.get("DisablementSecret"), "DisablementSecret")
        if not self.authority.valid_disablement(secret):
            self.last_error = "incorrect disablement secret"
            log.warning("Disablement failed, leaving TKA enabled. Error: incorrect disablement secret")
            self._sync_done(step.info)
            return
        if self.chonk is not None:
            self.chonk.remove_all()
        self.authority, self.chonk = None, None
        log.info("tka disabled by a valid disablement secret")
        self._publish()
        self._sync_done(step.info)

    def _after_offer(self, msg: TkaSyncStep, resp: dict[str, Any]) -> None:
        a, chonk = self.authority, self.chonk
        if a is None or chonk is None:
            self._sync_done(msg.info)
            return
        remote_anc = resp.get("Ancestors") or []
        if not isinstance(remote_anc, list) or not all(isinstance(x, str) for x in remote_anc):
            raise _Failed("control", "sync/offer: Ancestors is not a list of text")
        remote = sync_offer_from_text(str(resp.get("Head", "")), remote_anc)
        if remote.head == a.head() and not msg.just_enabled:
            self._sync_done(msg.info)
            return
        to_send = a.missing_aums(chonk, remote) if remote.head != a.head() else []
        missing = resp.get("MissingAUMs") or []
        if not isinstance(missing, list):
            raise _Failed("control", "sync/offer: MissingAUMs is not a list")
        if missing:
            aums = [AUM.unserialize(_unb64(x, f"MissingAUMs[{i}]")) for i, x in enumerate(missing)]
            before = a.head()
            self.authority = a.inform_idempotent(chonk, aums, self.clock.time())
            if self.authority.head() != before:
                log.info("tka: adopted %d AUM(s), head %s", len(aums), aum_hash_text(self.authority.head()))
                self._publish()
        self.ref.tell(TkaSyncStep(info=msg.info, stage="send", run=msg.run,
                                  send_aums=tuple(x.serialize() for x in to_send)))

    def _after_send(self, step: TkaSyncStep, resp: dict[str, Any]) -> None:
        head = aum_hash_text(self.authority.head()) if self.authority is not None else ""
        if str(resp.get("Head", "")) != head:
            log.warning("TKA desync: expected consensus after sync but our head is %s and the control "
                        "plane's is %s", head, str(resp.get("Head", ""))[:80])
        self.last_error = ""
        self._sync_done(step.info)

    def _failed(self, what: str, e: Exception) -> None:
        """Log, keep what was verified, and try again later (Go tries again at the next netmap)."""
        self.last_error = f"{what}: {e}"
        log.warning("tka: %s", self.last_error)
        if not self._retry_armed:
            self._retry_armed = True
            self.send_after(RETRY, TkaRetry())

    @handles(TkaRetry)
    def on_retry(self, msg: TkaRetry) -> None:
        self._retry_armed = False
        if self.info is not None and self._run is None:
            self._start_sync()

    # -- the facade's asks ----------------------------------------------------------------------------
    def _begin(self, start: Callable[[_Op], None], op: _Op) -> _Answer | None:
        """Run a lock operation whose control calls answer later: the ask's reply is deferred and set
        when the operation ends (an error before any call answers at once)."""
        try:
            start(op)
        except (_Failed, TkaError, WireError) as e:
            op.fail(e)
        if op.answer is not None:
            self._ops.discard(op)
            return op.answer  # also the return value, for a replay (which has no reply slots)
        self._ops.add(op)
        return None

    def _op_call(self, op: _Op, path: str, body: dict[str, Any],
                 then: Callable[[dict[str, Any]], None]) -> None:
        def step(doc: dict[str, Any]) -> None:
            try:
                then(doc)
            except (_Failed, TkaError, WireError) as e:
                op.fail(e)
            if op.answer is not None:
                self._ops.discard(op)

        def failed(e: Exception) -> None:
            op.fail(e)
            self._ops.discard(op)

        self._call(path, body, then=step, fail=failed)

    @handles(TkaStatusAsk)
    def on_status(self, msg: TkaStatusAsk) -> TkaStatus:
        try:
            public = _tlpub(self._nl_private().public().raw)
        except _Failed:
            public = ""
        node_key = self.info.self_node_key if self.info is not None else ""
        a = self.authority
        if a is None:
            return TkaStatus(enabled=False, public_key=public, node_key=node_key, syncing=self.syncing,
                             last_error=self.last_error)
        signed = False
        if self.info is not None and self.info.self_node_key and self.info.self_key_signature:
            try:
                a.node_key_authorized(NodePublic.from_text(self.info.self_node_key),
                                      self.info.self_key_signature)
                signed = True
            except (TkaError, WireError):
                signed = False
        trusted = a.keys()
        keys = tuple(TkaKeyInfo(key=_tlpub(k.public), votes=k.votes, meta=_meta(k.meta)) for k in trusted)
        return TkaStatus(enabled=True, head=aum_hash_text(a.head()), public_key=public, node_key=node_key,
                         node_key_signed=signed, trusted_keys=keys, state_id=a.state_ids()[0],
                         syncing=self.syncing, last_error=self.last_error)

    @handles(TkaInit)
    def on_init(self, msg: TkaInit) -> TkaAnswer | None:
        return _narrow(TkaAnswer, self._begin(lambda op: self._init(op, msg), _Op(self.defer_reply())))

    def _init(self, op: _Op, msg: TkaInit) -> None:
        node_key = self._node_key()
        priv = self._nl_private()
        if self.authority is not None:
            raise _Failed("invalid", "network-lock is already enabled")
        if not msg.keys:
            raise _Failed("invalid", "at least one key must be trusted")
        entropy = os.urandom(16)
        state = State(last_aum_hash=None, disablement_secrets=tuple(msg.disablement_values),
                      keys=tuple(_key_from_info(k) for k in msg.keys),
                      state_id1=int.from_bytes(entropy[:8], "little"),
                      state_id2=int.from_bytes(entropy[8:], "little"))
        _, genesis = Authority.create(MemChonk(), state, priv, self.clock.time())
        log.info("Generated genesis AUM to initialize network lock, trusting %d key(s)", len(state.keys))

        def begun(begin: dict[str, Any]) -> None:
            need = begin.get("NeedSignatures") or []
            if not isinstance(need, list):
                raise _Failed("control", "init/begin: NeedSignatures is not a list")
            sigs: dict[str, str] = {}
            for i, info in enumerate(need):
                if not isinstance(info, dict):
                    raise _Failed("control", f"init/begin: NeedSignatures[{i}] is not an object")
                try:
                    nk = NodePublic.from_text(str(info.get("NodePublic", "")))
                    node_id = int(info.get("NodeID", 0))
                except (KeyParseError, ValueError, TypeError):
                    raise _Failed("control", f"init/begin: NeedSignatures[{i}] has no valid node") from None
                wrapping = _unb64(info.get("RotationPubkey"), f"NeedSignatures[{i}].RotationPubkey") or None
                sigs[str(node_id)] = _b64(sign_direct(nk, priv, wrapping).serialize())
            body: dict[str, Any] = {"Version": CAPABILITY_VERSION, "NodeKey": node_key, "Signatures": sigs}
            if msg.support_disablement_hex:
                body["SupportDisablement"] = _b64(bytes.fromhex(msg.support_disablement_hex))
            done = aum_hash_text(genesis.hash())
            self._op_call(op, "/machine/tka/init/finish", body, lambda _: op.ok(done))

        self._op_call(op, "/machine/tka/init/begin", {"Version": CAPABILITY_VERSION, "NodeKey": node_key,
                                                      "GenesisAUM": _b64(genesis.serialize())}, begun)

    def _trusted(self) -> tuple[Authority, NLPrivate]:
        priv = self._nl_private()
        a = self.authority
        if a is None:
            raise _Failed("not_enabled", "network-lock is not active")
        if not a.key_trusted(priv.public().raw):
            raise _Failed("not_trusted", NOT_TRUSTED)
        return a, priv

    @handles(TkaSign)
    def on_sign(self, msg: TkaSign) -> TkaAnswer | None:
        return _narrow(TkaAnswer, self._begin(lambda op: self._sign(op, msg), _Op(self.defer_reply())))

    def _sign(self, op: _Op, msg: TkaSign) -> None:
        _, priv = self._trusted()
        try:
            nk = NodePublic.from_text(msg.node_key)
        except KeyParseError as e:
            raise _Failed("invalid", f"node key {msg.node_key[:80]!r}: {e}") from None
        if msg.rotation_key and len(msg.rotation_key) != 32:
            raise _Failed("invalid", "rotation key: want a 32-byte Ed25519 public key")
        sig = sign_direct(nk, priv, msg.rotation_key or None)
        log.info("Generated network-lock signature for %s, submitting to control plane", nk.to_text())
        self._op_call(op, "/machine/tka/sign", {"Version": CAPABILITY_VERSION, "NodeKey": self._node_key(),
                                                "Signature": _b64(sig.serialize())}, lambda _: op.ok(""))

    @handles(TkaModify)
    def on_modify(self, msg: TkaModify) -> TkaAnswer | None:
        return _narrow(TkaAnswer, self._begin(lambda op: self._modify(op, msg), _Op(self.defer_reply())))

    def _modify(self, op: _Op, msg: TkaModify) -> None:
        node_key = self._node_key()
        a, priv = self._trusted()
        assert self.chonk is not None
        updater = a.new_updater(priv)
        for k in msg.add:
            updater.add_key(_key_from_info(k))
        for text in msg.remove:
            try:
                updater.remove_key(NLPublic.from_text(text).raw)
            except KeyParseError as e:
                raise _Failed("invalid", f"key {text[:80]!r}: {e}") from None
        aums = updater.finalize(self.chonk)
        if not aums:
            op.ok(aum_hash_text(a.head()))
            return
        last = aum_hash_text(aums[-1].hash())

        def sent(resp: dict[str, Any]) -> None:
            if str(resp.get("Head", "")) != last:
                raise _Failed("control", "central tka head differs from submitted AUM, try again")
            op.ok(last)

        self._op_call(op, "/machine/tka/sync/send",
                      {"Version": CAPABILITY_VERSION, "NodeKey": node_key, "Head": aum_hash_text(a.head()),
                       "MissingAUMs": [_b64(x.serialize()) for x in aums], "Interactive": True}, sent)

    @handles(TkaDisable)
    def on_disable(self, msg: TkaDisable) -> TkaAnswer | None:
        return _narrow(TkaAnswer, self._begin(lambda op: self._disable(op, msg), _Op(self.defer_reply())))

    def _disable(self, op: _Op, msg: TkaDisable) -> None:
        a = self.authority
        if a is None:
            raise _Failed("not_enabled", "network-lock is not active")
        try:
            secret = bytes.fromhex(msg.secret_hex)
        except ValueError:
            raise _Failed("invalid", "disablement secret: want hex") from None
        if not a.valid_disablement(secret):
            raise _Failed("bad_secret", "incorrect disablement secret")
        head = aum_hash_text(a.head())
        self._op_call(op, "/machine/tka/disable", {"Version": CAPABILITY_VERSION, "NodeKey": self._node_key(),
                                                   "Head": head, "DisablementSecret": _b64(secret)},
                      lambda _: op.ok(head))

    @handles(TkaAffectedSigs)
    def on_affected_sigs(self, msg: TkaAffectedSigs) -> TkaAffectedSigsAnswer | None:
        op = _Op(self.defer_reply(), lambda f, e: TkaAffectedSigsAnswer(failure=f, error=e))
        return _narrow(TkaAffectedSigsAnswer, self._begin(lambda op: self._affected_sigs(op, msg.key_id), op))

    def _affected_sigs(self, op: _Op, key_id: bytes) -> None:
        """Go ``NetworkLockAffectedSigs``: ask control, then check every signature it names ourselves."""
        if self.authority is None:
            raise _Failed("not_enabled", "network-lock is not active")

        def got(resp: dict[str, Any]) -> None:
            a = self.authority
            if a is None:
                raise _Failed("not_enabled", "network-lock is not active")
            raw_list = resp.get("Signatures") or []
            if not isinstance(raw_list, list):
                raise _Failed("control", "affected-sigs: Signatures is not a list")
            sigs: list[bytes] = []
            for i, text in enumerate(raw_list):
                raw = _unb64(text, f"Signatures[{i}]")
                try:
                    sig = NodeKeySignature.unserialize(raw)
                except (TkaError, WireError) as e:
                    raise _Failed("control", f"failed decoding signature {i}: {e}") from None
                try:
                    sig_key_id = sig.authorizing_key_id()
                except TkaError as e:
                    raise _Failed("control", f"extracting SigID from signature {i}: {e}") from None
                if sig_key_id != key_id:
                    raise _Failed("control", f"got signature with keyID {sig_key_id.hex().upper()} from "
                                             f"request for {key_id.hex().upper()}")
                try:
                    node_key = node_public_from_binary(sig.pubkey)
                except (TkaError, WireError) as e:
                    raise _Failed("control", f"failed decoding pubkey for signature {i}: {e}") from None
                try:
                    a.node_key_authorized(node_key, raw)
                except (TkaError, WireError) as e:
                    raise _Failed("control", f"signature {i} is not valid: {e}") from None
                sigs.append(raw)
            op.settle(TkaAffectedSigsAnswer(signatures=tuple(sigs)))

        node_key = (self.info.self_node_key if self.info is not None else "") or _ZERO_NODE
        self._op_call(op, "/machine/tka/affected-sigs", {"Version": CAPABILITY_VERSION, "NodeKey": node_key,
                                                         "KeyID": _b64(key_id)}, got)

    @handles(TkaLog)
    def on_log(self, msg: TkaLog) -> TkaLogAnswer:
        a, chonk = self.authority, self.chonk
        if a is None or chonk is None:
            return TkaLogAnswer(failure="not_enabled", error="network-lock is not active")
        out: list[TkaLogEntry] = []
        cursor: bytes | None = a.head()
        while cursor is not None and len(out) < max(0, msg.limit):
            try:
                aum = chonk.aum(cursor)
            except TkaError:
                break
            out.append(TkaLogEntry(hash=aum_hash_text(cursor), change=_kind_name(int(aum.message_kind)),
                                   raw=aum.serialize()))
            cursor = aum.parent()
        return TkaLogAnswer(entries=tuple(out))

    def on_stop(self, reason: StopReason) -> None:
        """An operation waiting on control gets a typed answer now rather than its asker's timeout."""
        for op in list(self._ops):
            op.fail(_Failed("control", f"the tka actor stopped ({reason.kind.value}); try again"))
        self._ops.clear()


_KIND_NAMES = {0: "invalid", 1: "add-key", 2: "remove-key", 3: "no-op", 4: "update-key", 5: "checkpoint"}


def _kind_name(kind: int) -> str:
    """Go ``AUMKind.String``."""
    return _KIND_NAMES.get(kind, f"AUM?<{kind}>")
