"""Chaos: the TKA authority actor killed during a sync, with the real PeerTracker enforcing the lock.

Control's chain moves on (a new trusted key that signed a new peer); the netmap naming the new head
reaches the tracker before the TKA actor has verified it. The TKA actor is killed (a) before it asks
control for the AUMs and (b) while control is answering that ask. Whatever the interleaving, a
sampler that reads the tracker's table all along never sees the unsigned peer admitted; the restarted
incarnation re-opens the chain from disk, finishes the sync and the newly signed peer gets in.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from pytsnet.actors.control.store import NODE
from pytsnet.actors.peers import PeerTracker
from pytsnet.actors.runtime import ActorSystem, ChildSpec, FaultInjector, Restart
from pytsnet.actors.tka.authority_actor import TKA, TkaAuthorityActor
from pytsnet.messages.peers import GetPeers, NetmapUpdate, PeerInfo, PeerTrackerSpawn
from pytsnet.messages.tka import TkaNetmapInfo, TkaSpawn, TkaStatusAsk, TkaSyncStep
from pytsnet.state import MemoryStore
from pytsnet.testing.tka_control import FakeTkaControl, TkaControlSide
from pytsnet.wire.control.record import NodeRecord
from pytsnet.wire.keys import DiscoPrivate, NLPrivate, NodePrivate
from pytsnet.wire.tka import Key, KeyKind, State, disablement_kdf, sign_direct
from pytsnet.wire.tka.authority import Authority
from pytsnet.wire.tka.chonk import MemChonk

NOW = 1_700_000_000.0


def _wait(pred: Callable[[], bool], timeout: float = 15.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not met within {timeout}s")
        time.sleep(0.01)


def _peer(node_id: int, node: NodePrivate, sig: bytes) -> PeerInfo:
    return PeerInfo(node_id=node_id, hostname=f"n{node_id}", node_key=node.public().to_text(),
                    disco_key=DiscoPrivate.generate().public().to_text(),
                    addresses=[f"100.64.0.{node_id}/32"],
                    key_signature=sig, machine_authorized=True)


@pytest.mark.parametrize("when", ["before_offer", "during_offer"])
def test_killing_tka_during_sync_never_admits_an_unsigned_peer(tmp_path: Path, when: str) -> None:
    nl, other = NLPrivate.generate(), NLPrivate.generate()
    me, signed, unsigned, late = (NodePrivate.generate() for _ in range(4))
    store = MemoryStore()
    store.write_state(NODE, NodeRecord(me, logged_in=True, nl=nl).to_blob("http://c"))
    side = TkaControlSide()
    state = State(last_aum_hash=None, disablement_secrets=(disablement_kdf(b"s" * 32),),
                  keys=(Key(kind=KeyKind.KEY25519, votes=1, public=nl.public().raw),),
                  state_id1=3, state_id2=4)
    side.chonk = MemChonk()
    side.authority, side.genesis = Authority.create(side.chonk, state, nl, NOW)

    system = ActorSystem(f"tka-chaos-{when}")
    faults = FaultInjector(seed=7).install(system)
    try:
        system.spawn_spec(ChildSpec(FakeTkaControl, "control", args=(side,)))
        system.spawn_spec(ChildSpec(PeerTracker, "peers",
                                    args=(PeerTrackerSpawn(control="control", tka=TKA),),
                                    restart=Restart.PERMANENT))
        spawn = TkaSpawn(control="control", subscribers=("peers", "control"),
                         chonk_dir=str(tmp_path / "tka-profiles" / "default"))
        tka = system.spawn_spec(ChildSpec(TkaAuthorityActor, TKA, args=(spawn, store),
                                          restart=Restart.PERMANENT))
        peers = system.lookup("peers")
        assert peers is not None

        me_sig = sign_direct(me.public(), nl).serialize()
        self_node = _peer(1, me, me_sig)
        p_signed = _peer(2, signed, sign_direct(signed.public(), nl).serialize())
        p_unsigned = _peer(3, unsigned, b"")

        def netmap(*ps: PeerInfo) -> None:
            peers.tell(NetmapUpdate(self_node=self_node, peers=list(ps), tka_enabled=True,
                                    tka_head=side.head()))
            tka.tell(TkaNetmapInfo(enabled=True, head=side.head(), self_node_key=me.public().to_text(),
                                   self_key_signature=me_sig))

        def admitted() -> set[int]:
            return {p.node_id for p in peers.ask(GetPeers()).peers}

        netmap(p_signed, p_unsigned)
        _wait(lambda: admitted() == {2}, what="the signed peer admitted once the authority is verified")

        # control's chain moves on: `other` is trusted, and it signs a new peer
        a = side.authority
        b = a.new_updater(nl)
        b.add_key(Key(kind=KeyKind.KEY25519, votes=1, public=other.public().raw))
        side.authority = a.inform_idempotent(side.chonk, b.finalize(side.chonk), NOW)
        p_late = _peer(4, late, sign_direct(late.public(), other).serialize())

        seen: list[set[int]] = []
        stop = threading.Event()

        def sample() -> None:
            while not stop.is_set():
                seen.append(admitted())
                time.sleep(0.002)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        first, old_head = tka.incarnation, tka.ask(TkaStatusAsk()).head
        if when == "before_offer":
            # the netmap info goes through and the kill lands before the sync step it queues (the
            # step waits in the mailbox for the next incarnation)
            faults.kill_before(TkaSyncStep, name=TKA)
            netmap(p_signed, p_unsigned, p_late)
        else:
            gate = threading.Event()
            side.gates["/machine/tka/sync/offer"] = gate
            netmap(p_signed, p_unsigned, p_late)
            _wait(lambda: "/machine/tka/sync/offer" in side.held, what="the sync reached control")
            killer = threading.Thread(target=FaultInjector.kill_now, args=(tka,))
            killer.start()
            time.sleep(0.05)
            assert 4 not in admitted() and 3 not in admitted()
            gate.set()
            killer.join(10)
        _wait(lambda: tka.incarnation > first and tka.is_alive, what="the TKA actor restarted")
        assert when != "before_offer" or [k[0] for k in faults.kills] == [TKA]
        _wait(lambda: admitted() == {2, 4}, what="the newly signed peer admitted after the restart")
        stop.set()
        sampler.join(5)
        assert seen, "the sampler ran"
        assert all(3 not in s for s in seen), "the unsigned peer was never admitted"
        if when == "before_offer":  # the new incarnation re-opened the chain on disk and published it first
            restarted = [u for u in side.updates if u.seq >> 32 > first]
            assert restarted[0].head == old_head != side.head(), (
                [u.head for u in restarted], [(u.seq >> 32, u.head) for u in side.updates], faults.kills,
                side.paths())
        st = tka.ask(TkaStatusAsk())
        assert st.enabled and st.head == side.head()
        assert (tmp_path / "tka-profiles" / "default").is_dir(), "the chain the new incarnation re-opened"
    finally:
        assert system.shutdown(10)
