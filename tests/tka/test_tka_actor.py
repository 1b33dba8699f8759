"""The TKA authority actor against a stand-in control (``pytsnet.testing.tka_control``): Go's
tkaSyncIfNeeded (enable from genesis, sync, disable only on a valid secret), verification before
adoption, persistence across a restart, and the facade's lock operations (init/sign/modify/disable/log).

Control's side is built with the same ``wire.tka`` Authority, so every AUM and signature here is real."""

from __future__ import annotations

import base64
import dataclasses
import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import ClassVar

import pytest

from pytsnet.actors.control.store import NODE
from pytsnet.actors.runtime import Actor, ActorSystem, ChildSpec, FaultInjector, Restart, Tracer, handles
from pytsnet.actors.runtime.ref import Reply
from pytsnet.actors.runtime.trace import read_trace
from pytsnet.actors.tka.authority_actor import TKA, TkaAuthorityActor
from pytsnet.messages.peers import ResendNetmap
from pytsnet.messages.tka import (
    TkaAffectedSigs,
    TkaAuthorityUpdate,
    TkaAuthorityWanted,
    TkaControlAnswer,
    TkaControlCall,
    TkaDisable,
    TkaInit,
    TkaKeyInfo,
    TkaLog,
    TkaModify,
    TkaNetmapInfo,
    TkaNetmapInfoWanted,
    TkaSign,
    TkaSpawn,
    TkaStatusAsk,
)
from pytsnet.state import MemoryStore
from pytsnet.testing.tka_control import FakeTkaControl, TkaControlSide
from pytsnet.wire.control.record import NodeRecord
from pytsnet.wire.keys import NLPrivate, NodePrivate, NodePublic
from pytsnet.wire.tka import AUM, AUMKind, Key, KeyKind, NodeKeySignature, State, disablement_kdf, sign_direct
from pytsnet.wire.tka.authority import Authority
from pytsnet.wire.tka.chonk import MemChonk

SECRET = b"\x07" * 32
NOW = 1_700_000_000.0


class Recorder(Actor):
    """Stands for the PeerTracker: keeps every update it is told."""

    def __init__(self, got: list[TkaAuthorityUpdate]) -> None:
        self.got = got

    @handles(TkaAuthorityUpdate)
    def on_update(self, msg: TkaAuthorityUpdate) -> None:
        self.got.append(msg)


def wait(pred: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not met within {timeout}s")
        time.sleep(0.01)


def key_of(priv: NLPrivate, votes: int = 1) -> Key:
    return Key(kind=KeyKind.KEY25519, votes=votes, public=priv.public().raw)


class Rig:
    def __init__(self, tmp: Path, chonk_dir: bool = True, call_timeout: float = 10.0) -> None:
        self.nl = NLPrivate.generate()
        self.node = NodePrivate.generate()
        self.store = MemoryStore()
        self.store.write_state(NODE, NodeRecord(self.node, logged_in=True, nl=self.nl).to_blob("http://c"))
        self.side = TkaControlSide(disablement_secret=SECRET)
        self.got: list[TkaAuthorityUpdate] = []
        self.dir = tmp / "tka-profiles" / "default"
        self.system = ActorSystem("tka-test")
        self.system.spawn_spec(ChildSpec(FakeTkaControl, "control", args=(self.side,)))
        self.system.spawn_spec(ChildSpec(Recorder, "peers", args=(self.got,)))
        spawn = TkaSpawn(control="control", subscribers=("peers",),
                         chonk_dir=str(self.dir) if chonk_dir else "", call_timeout=call_timeout)
        self.ref = self.system.spawn_spec(ChildSpec(TkaAuthorityActor, TKA, args=(spawn, self.store),
                                                    restart=Restart.PERMANENT))

    def control_genesis(self, *trusted: NLPrivate) -> AUM:
        """Control's chain, as if another node ran ``lock init`` trusting ``trusted``."""
        state = State(last_aum_hash=None, disablement_secrets=(disablement_kdf(SECRET),),
                      keys=tuple(key_of(k) for k in trusted), state_id1=1, state_id2=2)
        self.side.chonk = MemChonk()
        self.side.authority, genesis = Authority.create(self.side.chonk, state, trusted[0], NOW)
        self.side.genesis = genesis
        return genesis

    def control_add_key(self, signer: NLPrivate, new: Key) -> None:
        a = self.side.authority
        assert a is not None
        aums = _add(a, signer, new, self.side.chonk)
        self.side.authority = a.inform_idempotent(self.side.chonk, aums, NOW)

    def info(self, *, enabled: bool = True, disabled: bool = False, sig: bytes = b"") -> TkaNetmapInfo:
        return TkaNetmapInfo(enabled=enabled, head=self.side.head() if enabled else "", disabled=disabled,
                             self_node_key=self.node.public().to_text(), self_key_signature=sig)

    def last(self) -> TkaAuthorityUpdate | None:
        return self.got[-1] if self.got else None

    def close(self) -> None:
        assert self.system.shutdown(10)


def _add(a: Authority, signer: NLPrivate, new: Key, chonk: MemChonk) -> list[AUM]:
    b = a.new_updater(signer)
    b.add_key(new)
    return b.finalize(chonk)


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    r = Rig(tmp_path)
    yield r
    r.close()


def test_enable_bootstraps_from_control_genesis_persists_and_publishes(rig: Rig) -> None:
    rig.control_genesis(rig.nl)
    rig.ref.tell(rig.info())
    wait(lambda: rig.last() is not None and rig.last().enabled, what="an enabled update")  # type: ignore[union-attr]
    up = rig.last()
    assert up is not None and up.head == rig.side.head()
    assert State.from_cbor(up.state).keys[0].public == rig.nl.public().raw
    assert rig.dir.is_dir() and any(rig.dir.iterdir()), "the chain is on disk under tka-profiles/<profile>"
    wait(lambda: "/machine/tka/sync/send" in rig.side.paths(), what="sync after enabling (Go always syncs)")
    assert rig.side.paths()[:2] == ["/machine/tka/bootstrap", "/machine/tka/sync/offer"]


def test_sync_adopts_verified_aums_and_refuses_forged_ones(rig: Rig) -> None:
    rig.control_genesis(rig.nl)
    rig.ref.tell(rig.info())
    wait(lambda: rig.last() is not None and rig.last().enabled, what="enabled")  # type: ignore[union-attr]
    other = NLPrivate.generate()
    rig.control_add_key(rig.nl, key_of(other))
    rig.ref.tell(rig.info())
    wait(lambda: rig.last() is not None and rig.last().head == rig.side.head(), what="the new head")  # type: ignore[union-attr]
    got = {k.public for k in State.from_cbor(rig.got[-1].state).keys}
    assert got == {rig.nl.public().raw, other.public().raw}
    # control moves on, but also hands out an AUM signed by a key the authority does not trust: the
    # batch is refused whole (nothing adopted, whatever control says), and adopted once control is honest
    head_before = rig.side.head()
    rig.control_add_key(rig.nl, key_of(NLPrivate.generate()))
    assert rig.side.authority is not None
    forged = AUM(message_kind=AUMKind.ADD_KEY, prev_aum_hash=rig.side.authority.head(),
                 key=key_of(NLPrivate.generate())).signed(NLPrivate.generate())
    rig.side.forged.append(forged.serialize())
    n = len(rig.got)
    rig.ref.tell(rig.info())
    wait(lambda: rig.ref.ask(TkaStatusAsk()).last_error != "", what="the forged AUM refused")
    st = rig.ref.ask(TkaStatusAsk())
    assert st.enabled and st.head == head_before, st
    assert all(u.head == head_before for u in rig.got[n:])
    assert rig.side.paths()[-1] == "/machine/tka/sync/offer", "no send after a failed inform"
    rig.side.forged.clear()
    rig.ref.tell(rig.info(sig=b"x"))  # a new netmap (the runner tells only changes)
    wait(lambda: rig.ref.ask(TkaStatusAsk()).head == rig.side.head(), what="adopted once honest")
    assert rig.ref.ask(TkaStatusAsk()).last_error == ""


def test_disablement_needs_a_valid_secret(rig: Rig) -> None:
    rig.control_genesis(rig.nl)
    rig.ref.tell(rig.info())
    wait(lambda: rig.last() is not None and rig.last().enabled, what="enabled")  # type: ignore[union-attr]
    rig.side.disabled = True
    rig.side.disablement_secret = b"\x08" * 32  # wrong: the lock must stay on
    rig.ref.tell(rig.info(enabled=False, disabled=True))
    wait(lambda: "incorrect disablement secret" in rig.ref.ask(TkaStatusAsk()).last_error, what="refused")
    last = rig.last()
    assert rig.ref.ask(TkaStatusAsk()).enabled and last is not None and last.enabled
    assert any(rig.dir.iterdir()), "nothing removed on a wrong secret"
    rig.side.disablement_secret = SECRET
    rig.ref.tell(TkaNetmapInfo(enabled=False, disabled=True, self_node_key=rig.node.public().to_text(),
                               head="x"))
    wait(lambda: rig.last() is not None and not rig.last().enabled, what="disabled")  # type: ignore[union-attr]
    assert not rig.ref.ask(TkaStatusAsk()).enabled


def test_restart_reopens_the_chain_and_publishes_it_again(rig: Rig) -> None:
    rig.control_genesis(rig.nl)
    rig.ref.tell(rig.info())
    wait(lambda: rig.last() is not None and rig.last().enabled, what="enabled")  # type: ignore[union-attr]
    head, first = rig.side.head(), rig.ref.incarnation
    n = len(rig.got)
    FaultInjector.kill_now(rig.ref)
    wait(lambda: rig.ref.incarnation > first and rig.ref.is_alive, what="restarted")
    wait(lambda: len(rig.got) > n, what="republished")
    assert rig.got[-1].enabled and rig.got[-1].head == head and rig.got[-1].seq > rig.got[n - 1].seq
    # a restarted subscriber asks and is told again
    m = len(rig.got)
    rig.ref.tell(TkaAuthorityWanted(reply_to="peers"))
    wait(lambda: len(rig.got) > m, what="told again")
    assert rig.got[-1].head == head


def test_without_a_state_dir_the_chain_is_in_memory(tmp_path: Path) -> None:
    r = Rig(tmp_path, chonk_dir=False)
    try:
        r.control_genesis(r.nl)
        r.ref.tell(r.info())
        wait(lambda: r.last() is not None and r.last().enabled, what="enabled")  # type: ignore[union-attr]
        assert not (tmp_path / "tka-profiles").exists()
    finally:
        r.close()


def test_lock_init_signs_every_node_control_names(rig: Rig) -> None:
    others = [NodePrivate.generate().public() for _ in range(2)]
    rot = NLPrivate.generate().public().raw
    rig.side.need_signatures = [
        {"NodeID": 7, "NodePublic": others[0].to_text(), "RotationPubkey": None},
        {"NodeID": 8, "NodePublic": others[1].to_text(), "RotationPubkey": base64.b64encode(rot).decode()},
    ]
    rig.ref.tell(TkaNetmapInfo(enabled=False, self_node_key=rig.node.public().to_text()))
    tl = "tlpub:" + rig.nl.public().raw.hex()
    ans = rig.ref.ask(TkaInit(keys=(TkaKeyInfo(key=tl),), disablement_values=(disablement_kdf(SECRET),)),
                      timeout=20)
    assert ans.failure == "" and ans.head, ans
    assert rig.side.paths() == ["/machine/tka/init/begin", "/machine/tka/init/finish"]
    assert rig.side.genesis is not None and rig.side.genesis.state is not None
    assert rig.side.genesis.state.keys[0].public == rig.nl.public().raw
    assert rig.side.genesis.state.state_id1 or rig.side.genesis.state.state_id2, "StateID entropy"
    assert set(rig.side.signatures) == {"7", "8"}
    a = rig.side.authority
    assert a is not None
    a.node_key_authorized(others[0], rig.side.signatures["7"])
    a.node_key_authorized(others[1], rig.side.signatures["8"])
    sig8 = NodeKeySignature.unserialize(rig.side.signatures["8"])
    assert sig8.wrapping_pubkey == rot, "Go signNodeKey: WrappingPubkey = the node's RotationPubkey"
    with pytest.raises(Exception):  # noqa: B017 - any TkaVerifyError subclass: a signature is for its key only
        a.node_key_authorized(others[1], rig.side.signatures["7"])


def test_sign_modify_disable_and_log(rig: Rig) -> None:
    target = NodePrivate.generate().public()
    assert rig.ref.ask(TkaSign(node_key=target.to_text())).failure == "not_enabled"  # Go's order of checks
    assert rig.ref.ask(TkaInit(keys=(TkaKeyInfo(key=rig.nl.public().cli_string()),),
                               disablement_values=())).failure == "no_node_key", "no netmap yet"
    rig.ref.tell(TkaNetmapInfo(enabled=False, self_node_key=rig.node.public().to_text()))
    # a lock that does not trust us: we may not sign
    stranger = NLPrivate.generate()
    rig.control_genesis(stranger)
    rig.ref.tell(rig.info())
    wait(lambda: rig.last() is not None and rig.last().enabled, what="enabled")  # type: ignore[union-attr]
    assert rig.ref.ask(TkaSign(node_key=target.to_text())).failure == "not_trusted"
    # trusted: the signature control receives verifies for that node key
    rig.control_add_key(stranger, key_of(rig.nl))
    rig.ref.tell(rig.info())
    wait(lambda: rig.ref.ask(TkaStatusAsk()).head == rig.side.head(), what="synced the new key")
    assert rig.ref.ask(TkaSign(node_key=target.to_text())).failure == ""
    sig = rig.side.signatures[rig.node.public().to_text()]
    assert rig.side.authority is not None
    rig.side.authority.node_key_authorized(target, sig)
    # modify: an AddKey AUM signed by us, sent with Interactive; control's head is our AUM's
    new = NLPrivate.generate()
    ans = rig.ref.ask(TkaModify(add=(TkaKeyInfo(key=new.public().cli_string(), votes=2),)), timeout=10)
    assert ans.failure == "" and ans.head == rig.side.head(), ans
    send = [r for p, r in rig.side.calls if p == "/machine/tka/sync/send" and r.get("Interactive")]
    assert len(send) == 1 and len(send[0]["MissingAUMs"]) == 1
    assert rig.side.authority.key_trusted(new.public().raw)
    rig.ref.tell(rig.info())
    wait(lambda: rig.ref.ask(TkaStatusAsk()).head == rig.side.head(), what="synced the modify")
    gone = rig.ref.ask(TkaModify(remove=(new.public().cli_string(),)), timeout=10)
    assert gone.failure == "" and gone.head == rig.side.head(), gone
    assert not rig.side.authority.key_trusted(new.public().raw)
    bad = rig.ref.ask(TkaModify(remove=("tlpub:zz",)), timeout=10)
    assert bad.failure == "invalid"
    rig.ref.tell(rig.info())
    wait(lambda: rig.ref.ask(TkaStatusAsk()).head == rig.side.head(), what="synced the removal")
    log = rig.ref.ask(TkaLog(limit=10))
    assert [e.change for e in log.entries] == ["remove-key", "add-key", "add-key", "checkpoint"]
    assert log.entries[0].hash == rig.side.head()
    # disable: a wrong secret never reaches control
    n = len(rig.side.calls)
    bad = rig.ref.ask(TkaDisable(secret_hex=(b"\x09" * 32).hex()), timeout=20)
    assert bad.failure == "bad_secret" and len(rig.side.calls) == n
    ok = rig.ref.ask(TkaDisable(secret_hex=SECRET.hex()), timeout=20)
    assert ok.failure == "" and rig.side.disabled


def test_status_reports_whether_our_node_key_is_signed(rig: Rig) -> None:
    rig.control_genesis(rig.nl)
    rig.ref.tell(rig.info())
    wait(lambda: rig.last() is not None and rig.last().enabled, what="enabled")  # type: ignore[union-attr]
    st = rig.ref.ask(TkaStatusAsk())
    assert st.enabled and not st.node_key_signed and st.public_key == "tlpub:" + rig.nl.public().raw.hex()
    sig = sign_direct(NodePublic.from_text(rig.node.public().to_text()), rig.nl).serialize()
    rig.ref.tell(rig.info(sig=sig))
    wait(lambda: rig.ref.ask(TkaStatusAsk()).node_key_signed, what="signed")
    assert [k.key for k in rig.ref.ask(TkaStatusAsk()).trusted_keys] == ["tlpub:" + rig.nl.public().raw.hex()]


def test_an_unusable_stored_chain_fails_closed_then_is_replaced_by_control_genesis(tmp_path: Path) -> None:
    d = tmp_path / "tka-profiles" / "default"
    (d / "AB").mkdir(parents=True)
    (d / "AB" / ("AB" + "A" * 50)).write_bytes(b"\xff not an AUM record")
    r = Rig(tmp_path)
    try:
        wait(lambda: r.ref.ask(TkaStatusAsk()).last_error.startswith("opening the stored chain"),
             what="refused")
        assert not r.ref.ask(TkaStatusAsk()).enabled and r.got == [], "nothing published from a bad chain"
        r.control_genesis(r.nl)
        r.ref.tell(r.info())
        wait(lambda: r.last() is not None and r.last().enabled, what="bootstrapped")  # type: ignore[union-attr]
        assert not (d / "AB" / ("AB" + "A" * 50)).exists()
    finally:
        r.close()


@pytest.fixture
def slow_rig(tmp_path: Path) -> Iterator[Rig]:
    r = Rig(tmp_path, call_timeout=30.0)  # longer than control is held: no call times out here
    yield r
    r.close()


def test_a_hanging_control_call_never_delays_status(slow_rig: Rig) -> None:
    """21i: control calls are asks answered later (``TkaCallDone``), never waited for in a handler:
    while control holds a sync call and then a sign call for 10 s, status and log answer within 1 s
    each, and both held operations finish once control answers."""
    rig = slow_rig
    rig.control_genesis(rig.nl)
    rig.ref.tell(rig.info())
    wait(lambda: rig.ref.ask(TkaStatusAsk()).head == rig.side.head(), what="enabled")
    wait(lambda: not rig.ref.ask(TkaStatusAsk()).syncing, what="the first sync done")
    # control's chain moves on; its answer to our sync offer hangs
    rig.control_add_key(rig.nl, key_of(NLPrivate.generate()))
    offer = rig.side.gates["/machine/tka/sync/offer"] = threading.Event()
    rig.ref.tell(rig.info())
    wait(lambda: "/machine/tka/sync/offer" in rig.side.held, what="the sync offer held by control")
    held_since = time.monotonic()
    while time.monotonic() - held_since < 10:
        t0 = time.monotonic()
        st = rig.ref.ask(TkaStatusAsk(), timeout=1.0)
        assert time.monotonic() - t0 < 1.0
        assert st.enabled and st.syncing and st.head != rig.side.head(), "not adopted before control answers"
        assert rig.ref.ask(TkaLog(limit=5), timeout=1.0).entries
        time.sleep(0.5)
    offer.set()
    wait(lambda: rig.ref.ask(TkaStatusAsk(), timeout=1.0).head == rig.side.head(), what="synced")
    # a facade operation waiting on control holds up only its own asker
    target = NodePrivate.generate().public()
    sign_gate = rig.side.gates["/machine/tka/sign"] = threading.Event()
    result: list[object] = []
    asker = threading.Thread(target=lambda: result.append(rig.ref.ask(TkaSign(node_key=target.to_text()),
                                                                      timeout=30)))
    asker.start()
    wait(lambda: "/machine/tka/sign" in rig.side.held, what="the sign call held by control")
    t0 = time.monotonic()
    assert rig.ref.ask(TkaStatusAsk(), timeout=1.0).enabled
    assert time.monotonic() - t0 < 1.0
    assert not result, "sign answered before control did"
    sign_gate.set()
    asker.join(10)
    assert len(result) == 1 and getattr(result[0], "failure", None) == "", result
    assert target.to_text() not in rig.side.signatures  # keyed by the submitting node
    assert rig.node.public().to_text() in rig.side.signatures


def test_a_control_call_without_an_answer_fails_typed_after_call_timeout(tmp_path: Path) -> None:
    """No answer within ``call_timeout`` (a restarted runner forgets the call): the operation gets a
    typed ``control`` failure and a later sync still works."""
    r = Rig(tmp_path, call_timeout=1.0)
    try:
        r.control_genesis(r.nl)
        r.ref.tell(r.info())
        wait(lambda: r.ref.ask(TkaStatusAsk()).head == r.side.head(), what="enabled")
        gate = r.side.gates["/machine/tka/sign"] = threading.Event()
        t0 = time.monotonic()
        ans = r.ref.ask(TkaSign(node_key=NodePrivate.generate().public().to_text()), timeout=10)
        assert ans.failure == "control" and "no answer within" in ans.error, ans
        assert 0.9 < time.monotonic() - t0 < 5
        gate.set()  # the late answer is dropped; the actor goes on
        wait(lambda: r.ref.ask(TkaStatusAsk()).enabled, what="still answering")
    finally:
        r.close()


class AffectedSigsControl(FakeTkaControl):
    """The stand-in control plus ``/machine/tka/affected-sigs``: answers ``affected`` as they are."""

    affected: ClassVar[list[bytes]] = []

    @handles(TkaControlCall)
    def on_call(self, msg: TkaControlCall) -> TkaControlAnswer:
        if msg.path == "/machine/tka/affected-sigs":
            self.side.calls.append((msg.path, json.loads(msg.body)))
            doc = {"Signatures": [base64.b64encode(x).decode() for x in self.affected]}
            return TkaControlAnswer(status=200, body=json.dumps(doc).encode())
        return super().on_call(msg)


def test_affected_sigs_are_checked_as_go_does(tmp_path: Path) -> None:
    """21i, Go ``NetworkLockAffectedSigs``: what control names is returned only if every signature
    rests on the asked key and authorizes its node key under our authority."""
    r = Rig(tmp_path)
    try:
        r.system.lookup("control").stop()  # type: ignore[union-attr]
        r.system.spawn_spec(ChildSpec(AffectedSigsControl, "control", args=(r.side,)))
        key_id = r.nl.public().raw
        assert r.ref.ask(TkaAffectedSigs(key_id=key_id)).failure == "not_enabled"
        r.control_genesis(r.nl)
        r.ref.tell(r.info())
        wait(lambda: r.ref.ask(TkaStatusAsk()).head == r.side.head(), what="enabled")
        n1, n2 = NodePrivate.generate().public(), NodePrivate.generate().public()
        good = [sign_direct(n1, r.nl).serialize(), sign_direct(n2, r.nl, b"w" * 32).serialize()]
        AffectedSigsControl.affected = good
        ans = r.ref.ask(TkaAffectedSigs(key_id=key_id), timeout=10)
        assert ans.failure == "" and list(ans.signatures) == good
        [(_, req)] = [c for c in r.side.calls if c[0] == "/machine/tka/affected-sigs"]
        assert base64.b64decode(req["KeyID"]) == key_id and req["NodeKey"] == r.node.public().to_text()
        other = NLPrivate.generate()
        AffectedSigsControl.affected = [good[0], sign_direct(n2, other).serialize()]
        ans = r.ref.ask(TkaAffectedSigs(key_id=key_id), timeout=10)
        assert ans.failure == "control" and "got signature with keyID" in ans.error and not ans.signatures
        forged = NodeKeySignature.unserialize(good[0])
        forged = dataclasses.replace(forged, pubkey=NodeKeySignature.unserialize(good[1]).pubkey)
        AffectedSigsControl.affected = [forged.serialize()]
        ans = r.ref.ask(TkaAffectedSigs(key_id=key_id), timeout=10)
        assert ans.failure == "control" and "signature 0 is not valid" in ans.error
        AffectedSigsControl.affected = [b"\xff junk"]
        ans = r.ref.ask(TkaAffectedSigs(key_id=key_id), timeout=10)
        assert ans.failure == "control" and "failed decoding signature 0" in ans.error
    finally:
        AffectedSigsControl.affected = []
        r.close()


class DeferringControl(FakeTkaControl):
    """Answers like the ControlRunner: takes the reply slot (``defer_reply``) and sets it in a later
    handler of its own (the runner's ``IoTkaControlAnswer``; here a ``ResendNetmap`` it tells itself)."""

    def __init__(self, side: TkaControlSide) -> None:
        super().__init__(side)
        self.waiting: list[tuple[Reply, TkaControlAnswer]] = []

    @handles(TkaControlCall)
    def on_call(self, msg: TkaControlCall) -> TkaControlAnswer | None:
        slot = self.defer_reply()
        assert slot is not None
        status, doc = self.side.answer(msg.path, json.loads(msg.body or b"{}"))
        self.waiting.append((slot, TkaControlAnswer(status=status, body=json.dumps(doc).encode())))
        self.ref.tell(ResendNetmap())
        return None

    @handles(TkaNetmapInfoWanted, ResendNetmap)
    def on_wanted(self, msg: TkaNetmapInfoWanted | ResendNetmap) -> None:
        waiting, self.waiting = self.waiting, []
        for slot, answer in waiting:
            slot.set(answer)


def test_deferred_control_answers_come_back_as_messages_of_no_sender(tmp_path: Path) -> None:
    """``ask_then`` (21i): a reply the answering actor defers and sets from another thread reaches the
    TKA actor as ``TkaCallDone``; the trace shows the ask as the TKA actor's and the answer as sent by
    no actor (it is the runtime's hand-over, not a send of the answerer, whose replay has no slots)."""
    trace = tmp_path / "trace.jsonl"
    r = Rig(tmp_path)
    try:
        r.system.lookup("control").stop()  # type: ignore[union-attr]
        r.system.tracer = Tracer(trace)
        r.system.spawn_spec(ChildSpec(DeferringControl, "control", args=(r.side,)))
        r.control_genesis(r.nl)
        r.ref.tell(r.info())
        wait(lambda: r.ref.ask(TkaStatusAsk()).head == r.side.head(), what="enabled through deferred answers")
        wait(lambda: "/machine/tka/sync/send" in r.side.paths() and not r.ref.ask(TkaStatusAsk()).syncing,
             what="the whole sync")
    finally:
        r.close()
    recs = read_trace(trace)
    asks = [x for x in recs if x["ev"] == "send" and x["tag"] == "tka.control_call"]
    assert asks and all(x["sender"] == TKA and x["kind"] == "ask" for x in asks)
    assert not [x for x in recs if x["ev"] == "send" and x["tag"] == "tka.call_done"], "no actor sent it"
    got = [x for x in recs if x["ev"] == "recv" and x.get("tag") == "tka.call_done"]
    assert len(got) >= 3, "bootstrap, offer and send answers each arrived as a message"
    assert all(x["sender"] is None for x in got), "set in control's handler, yet not control's send"


def test_a_stored_chain_is_compacted_at_start_as_go_does(tmp_path: Path) -> None:
    """Go's initTKALocked compacts the stored chain after opening it (tkaCompactionDefaults: keep 24
    AUMs back from the head and anything younger than 14 days), so the chain a restart walks stays
    short (r1 finding: without it, >2000 AUMs would make the next open fail)."""
    from pytsnet.actors.tka.storage import FsChonk

    d = tmp_path / "tka-profiles" / "default"
    d.mkdir(parents=True)
    signer = NLPrivate.generate()
    old = time.time() - 30 * 86400
    chonk = FsChonk(str(d))
    state = State(last_aum_hash=None, disablement_secrets=(disablement_kdf(SECRET),),
                  keys=(key_of(signer),), state_id1=1, state_id2=2)
    a, _ = Authority.create(chonk, state, signer, old)
    for _ in range(120):  # the builder makes a checkpoint every 50 AUMs: compaction keeps back to one
        b = a.new_updater(signer)
        b.set_key_vote(key_of(signer).id(), 1 + _ % 3)
        a.inform(chonk, b.finalize(chonk), old)
    head = a.head()
    before = len(chonk.all_aums())
    assert before > 120
    r = Rig(tmp_path)
    try:
        wait(lambda: r.last() is not None and r.last().enabled, what="re-opened")  # type: ignore[union-attr]
        kept = FsChonk(str(d)).all_aums()
        assert head in kept and 24 <= len(kept) < before - 50, (len(kept), before)
    finally:
        r.close()
