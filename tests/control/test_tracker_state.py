"""PeerTracker's fail-closed admission, and the state stores."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from pytsnet.actors.peers import PeerTracker, admit
from pytsnet.actors.runtime import ActorSystem
from pytsnet.messages.base import Message
from pytsnet.messages.peers import GetPeers, NetmapUpdate, PeerInfo, PeersChanged, PeerTrackerSpawn
from pytsnet.state import FileStore, MemoryStore, StateStore, StateStoreError
from pytsnet.testing.events import PeerEvents, settled
from pytsnet.wire.keys import DiscoPrivate, NodePrivate


def peer(i: int, **kw: object) -> PeerInfo:
    base: dict[str, object] = dict(node_id=i, node_key=NodePrivate.generate().public().to_text(),
                                   disco_key=DiscoPrivate.generate().public().to_text(),
                                   addresses=[f"100.64.0.{i}/32"])
    return PeerInfo(**{**base, **kw})  # type: ignore[arg-type]


ME = peer(1)


@pytest.mark.parametrize(("kw", "reason"), [
    ({"node_key": ""}, "no valid node key"),
    ({"node_key": "nodekey:" + "00" * 32}, "zero node key"),
    ({"node_key": ME.node_key}, "claims our own node key"),
    ({"disco_key": ""}, "no valid disco key"),
    ({"disco_key": "discokey:" + "00" * 32}, "zero disco key"),
    ({"addresses": []}, "no addresses"),
    ({"addresses": ["not-an-ip"]}, "bad address 'not-an-ip'"),
    ({"expired": True}, "node key expired"),
    ({"node_id": 0}, "no node ID"),
])
def test_admission_fails_closed(kw: dict[str, object], reason: str) -> None:
    assert admit(peer(2, **kw), ME.node_key) == reason
    assert admit(peer(2), ME.node_key) is None


def test_tracker_publishes_diffs_and_keeps_only_admitted() -> None:
    events: list[Message] = []
    with ActorSystem("t") as system:
        sub = system.spawn(PeerEvents, events, name="events")
        ref = system.spawn(PeerTracker, PeerTrackerSpawn(subscribers=("events",)), name="peers")
        good, bad = peer(2), peer(3, disco_key="")
        ref.ask(NetmapUpdate(self_node=ME, peers=[good, bad]))  # ask: wait until handled
        table = ref.ask(GetPeers())
        assert [p.node_id for p in table.peers] == [2]
        assert [(r.node_id, r.reason) for r in table.rejected] == [(3, "no valid disco key")]
        moved = good.model_copy(update={"endpoints": ["192.0.2.1:1"]})
        ref.ask(NetmapUpdate(self_node=ME, peers=[moved]))
        ref.ask(NetmapUpdate(self_node=ME, peers=[moved]))  # no change: no event
        ref.ask(NetmapUpdate(self_node=ME, peers=[]))
        settled(sub)
    changes = [e for e in events if isinstance(e, PeersChanged)]
    assert [([p.node_id for p in c.added], [p.node_id for p in c.changed], c.removed) for c in changes] == [
        ([2], [], []), ([], [2], []), ([], [], [2])]


def test_file_store_is_go_shaped_0600_and_survives_reopen(tmp_path: Path) -> None:
    store = FileStore.in_dir(tmp_path / "d")
    assert isinstance(store, StateStore) and isinstance(MemoryStore(), StateStore)
    store.write_state("_machinekey", b"privkey:abc")
    store.write_state("gone", b"x")
    store.write_state("gone", b"")
    path = tmp_path / "d" / "tailscaled.state"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(tmp_path / "d").st_mode) == 0o700
    assert json.loads(path.read_text()) == {"_machinekey": "cHJpdmtleTphYmM="}  # key → base64, like Go
    assert FileStore(path).read_state("_machinekey") == b"privkey:abc"
    path.write_text("[1]")
    with pytest.raises(StateStoreError):
        FileStore(path)
