"""Chaos: killing the PeerTracker loses no peer and admits nothing unchecked (issue 15, "Done when").

The tracker's table is derived from the last netmap, so a restarted tracker asks the netmap's sender
(the ControlRunner) to re-send it and admits it afresh. Two tests:

* actor level, simulated time: while the restarted tracker waits for the re-sent netmap it admits
  no one and publishes nothing (the data plane keeps the last published peers); a peer whose key
  expired during the outage and a peer with no valid key, both in the re-sent netmap, stay out;
* device level, two nodes on a local tailnet: the tracker of the sending node is killed part-way
  through a TCP transfer; the transfer completes byte-exact (SHA-256) and the peer is back in the
  restarted tracker's table at once (the runner re-sent the netmap; no map change was needed).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable

import anyio
import pytest

from pytsnet import ActorDevice, Config
from pytsnet.actors.peers import PeerTracker
from pytsnet.actors.runtime import Actor, ActorRef, ActorSystem, FaultInjector, ManualClock, handles
from pytsnet.messages.base import Message
from pytsnet.messages.peers import (
    GetPeers,
    NetmapUpdate,
    PeerInfo,
    PeersChanged,
    PeerTrackerSpawn,
    ResendNetmap,
)
from pytsnet.testing.events import PeerEvents, settled
from pytsnet.testing.polling import wait_until
from pytsnet.wire.keys import DiscoPrivate, NodePrivate


class StubControl(Actor):
    """Stands in for the ControlRunner: records the tracker's re-send requests (the test answers)."""

    def __init__(self, asked: list[int]) -> None:
        self.asked = asked

    @handles(ResendNetmap)
    def on_resend(self, msg: ResendNetmap) -> None:
        self.asked.append(1)


def _peer(node_id: int, **kw: object) -> PeerInfo:
    return PeerInfo(node_id=node_id, node_key=NodePrivate.generate().public().to_text(),  # type: ignore[arg-type]
                    disco_key=DiscoPrivate.generate().public().to_text(),
                    addresses=[f"100.64.0.{node_id}/32"], **kw)


def _table(ref: ActorRef) -> tuple[list[int], dict[int, str]]:
    t = ref.ask(GetPeers(), timeout=5)
    return [p.node_id for p in t.peers], {r.node_id: r.reason for r in t.rejected}


@pytest.mark.parametrize("dispatcher", ["thread", "pool"])
def test_restarted_tracker_fails_closed_until_the_netmap_is_resent(dispatcher: str) -> None:
    clock = ManualClock(wall=1_800_000_000.0)
    events: list[Message] = []
    asked: list[int] = []
    with ActorSystem("chaos-peers", clock=clock, dispatcher=dispatcher) as system:
        system.spawn(StubControl, asked, name="control")
        sub = system.spawn(PeerEvents, events, name="events")
        tracker = system.spawn(PeerTracker, PeerTrackerSpawn(subscribers=("events",), control="control"),
                               name="peers")
        me = _peer(1)
        unsigned = _peer(4).model_copy(update={"node_key": "nodekey:" + "00" * 32})
        expiring = _peer(3, key_expiry=clock.time() + 60)
        netmap = NetmapUpdate(self_node=me, peers=[_peer(2), expiring, unsigned])
        tracker.ask(netmap)  # control's last word before the crash
        assert _table(tracker) == ([2, 3], {4: "zero node key"})
        settled(sub)
        published = len(events)

        FaultInjector.kill_now(tracker, "chaos: peer tracker")
        wait_until(lambda: tracker.incarnation == 2 and tracker.is_alive)
        wait_until(lambda: asked == [1])  # the restarted tracker asked control for the netmap again
        # The outage: no state, so no one is admitted and nothing is published (the data plane keeps
        # peers 2 and 3 as last published: none is lost, none is added).
        assert _table(tracker) == ([], {})
        clock.advance(61)  # peer 3's key runs out while the tracker has no table (and no timer)
        assert _table(tracker) == ([], {})
        settled(sub)
        assert len(events) == published

        tracker.ask(netmap)  # control answers with the same netmap it sent before
        assert _table(tracker) == ([2], {3: "node key expired", 4: "zero node key"})
        settled(sub)
        after = [e for e in events[published:] if isinstance(e, PeersChanged)]
        assert after and [p.node_id for p in after[-1].peers] == [2]
        assert all(p.node_id == 2 for e in after for p in [*e.added, *e.changed, *e.peers])


# -- device level --------------------------------------------------------------------------------------
SIZE, PORT = 4 * 1024 * 1024, 7400


def test_killing_the_peer_tracker_mid_transfer_loses_no_peer(device_config: Callable[[str], Config]) -> None:
    cfg = device_config

    blob = hashlib.shake_256(b"tracker chaos").digest(SIZE)
    result: dict[str, object] = {}

    async def main() -> None:
        async with ActorDevice(cfg("src")) as a, ActorDevice(cfg("dst")) as b:
            await a.up(30)
            await b.up(30)
            with anyio.fail_after(20):
                while not any(p.hostname == "dst" for p in a.peers()):
                    await anyio.sleep(0.05)
            before = a.peers()
            assert a.system is not None
            tracker = a.system.lookup("peers")
            assert tracker is not None
            listener = await b.listen(PORT)
            sent = {"n": 0}

            async def serve() -> None:
                conn = await listener.accept()
                h, total = hashlib.sha256(), 0
                while True:
                    try:
                        chunk = await conn.receive()
                    except anyio.EndOfStream:
                        break
                    h.update(chunk)
                    total += len(chunk)
                result["digest"], result["total"] = h.hexdigest(), total
                await conn.aclose()

            async def kill_mid_transfer() -> None:
                while sent["n"] < SIZE // 3:
                    await anyio.sleep(0.005)
                FaultInjector.kill_now(tracker, "chaos: peer tracker mid-transfer")
                t0 = time.monotonic()
                while not (tracker.incarnation == 2 and tracker.is_alive):
                    await anyio.sleep(0.005)
                # Back from the re-sent netmap, not from a change on control: at once.
                while [p.node_id for p in a.peers()] != [p.node_id for p in before]:
                    assert time.monotonic() - t0 < 5, "the restarted tracker lost its peers"
                    await anyio.sleep(0.01)
                result["peers_after"] = a.peers()

            with anyio.fail_after(90):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(serve)
                    tg.start_soon(kill_mid_transfer)
                    stream = await a.tcp_connect("dst", PORT, timeout=20)
                    for i in range(0, SIZE, 64 * 1024):
                        await stream.send(blob[i:i + 64 * 1024])
                        sent["n"] = i + 64 * 1024
                    await stream.send_eof()
                    await stream.drain()
                    await stream.aclose()
            result["before"] = before

    anyio.run(main)
    assert result["total"] == SIZE and result["digest"] == hashlib.sha256(blob).hexdigest()
    # The same admitted peer (its endpoints may have moved meanwhile: that is control's news, not ours).
    assert [_identity(p) for p in result["peers_after"]] == [_identity(p) for p in result["before"]]  # type: ignore[attr-defined]


def _identity(p: PeerInfo) -> tuple[object, ...]:
    return p.node_id, p.node_key, p.disco_key, tuple(p.addresses), p.key_expiry
