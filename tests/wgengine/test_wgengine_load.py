"""The engine actor under a handshake flood and its live-index publication, over a recording magicsock."""

from __future__ import annotations

import os
import struct
import time
from collections.abc import Iterator

import pytest
from wgengine_helpers import udp

from pytsnet.actors.runtime import Actor, ActorRef, ActorSystem, handles
from pytsnet.actors.wgengine import WgEngine
from pytsnet.actors.wgengine.engine import QUEUE_HANDSHAKE_SIZE
from pytsnet.messages.magicsock import UdpSend, WgHandshakeQueueFull, WgLiveIndexes, WgLiveIndexesRequest
from pytsnet.messages.wgengine import (
    GetWgStatus,
    IpPacketOut,
    WgConfig,
    WgDatagramOut,
    WgDatagramsIn,
    WgDatagramsOut,
    WgPeer,
    WgStatus,
)
from pytsnet.testing.polling import wait_until
from pytsnet.wire.keys import NodePrivate
from pytsnet.wire.wireguard.cookie import CookieGenerator
from pytsnet.wire.wireguard.handshake import create_initiation

SRC = "192.0.2.1:41641"


class Recorder(Actor):
    """A magicsock that records what the engine tells it, in order."""

    def __init__(self, log: list[object]) -> None:
        self.log = log

    @handles(WgDatagramOut, WgDatagramsOut, UdpSend, WgLiveIndexes, WgHandshakeQueueFull)
    def record(self, msg: object) -> None:
        self.log.append(msg)


@pytest.fixture
def engine() -> Iterator[tuple[ActorRef, NodePrivate, list[object]]]:
    system = ActorSystem("wg-load")
    log: list[object] = []
    system.spawn(Recorder, log, name="magicsock")
    key = NodePrivate.generate()
    ref = system.spawn(WgEngine, key, name="wgengine")
    yield ref, key, log
    system.shutdown()


def _initiations(victim: NodePrivate, n: int) -> list[bytes]:
    out = []
    for i in range(min(n, 64)):  # 64 strangers, replayed: the engine only sees bytes
        msg, _ = create_initiation(os.urandom(32), victim.public().raw, i, time.time(), os.urandom(32))
        raw = bytearray(msg.emit())
        CookieGenerator(victim.public().raw).add_macs(raw, 0.0)
        out.append(bytes(raw))
    return [out[i % len(out)] for i in range(n)]


def _flood(ref: ActorRef, datas: list[bytes]) -> None:
    """All at once, as one message: the queue is past 1/8 before the first slice is worked."""
    n = len(datas)
    ref.tell(WgDatagramsIn(via="udp", datas=tuple(datas), srcs=(SRC,) * n, peers=(None,) * n))


def _status(ref: ActorRef) -> WgStatus:
    st = ref.ask(GetWgStatus())
    assert isinstance(st, WgStatus)
    return st


def test_indexes_are_published_before_the_datagram_that_uses_them(engine) -> None:  # type: ignore[no-untyped-def]
    ref, _, log = engine
    peer = NodePrivate.generate().public().to_text()
    ref.tell(WgConfig(addresses=["100.64.0.1/32"],
                      peers=[WgPeer(node_key=peer, allowed_ips=["100.64.0.2/32"])]))
    ref.tell(IpPacketOut(data=udp("100.64.0.1", "100.64.0.2", payload=b"hi")))
    wait_until(lambda: any(isinstance(m, WgDatagramOut) for m in log), 5, "initiation sent")
    first_out = next(i for i, m in enumerate(log) if isinstance(m, WgDatagramOut))
    init = log[first_out].data  # type: ignore[attr-defined]
    sender = struct.unpack_from("<I", init, 4)[0]
    published = [m for m in log[:first_out] if isinstance(m, WgLiveIndexes)]
    assert published and sender in published[-1].indexes
    log.clear()
    ref.tell(WgLiveIndexesRequest())  # a restarted magicsock asks again
    wait_until(lambda: any(isinstance(m, WgLiveIndexes) for m in log), 5, "republished")
    assert sender in next(m for m in log if isinstance(m, WgLiveIndexes)).indexes  # type: ignore[attr-defined]


def test_handshake_flood_is_answered_with_cookies_not_dh(engine) -> None:  # type: ignore[no-untyped-def]
    ref, key, log = engine
    _flood(ref, _initiations(key, 640))
    wait_until(lambda: _status(ref).handshake_queue == 0 and len(log) >= 600, 20, "queue worked off")
    st = _status(ref)
    cookies, dh = st.work.get("cookie_replies", 0), st.work.get("handshake_dh", 0)
    assert cookies == 640 and dh == 0, st.work
    assert st.under_load
    replies = [m for m in log if isinstance(m, UdpSend)]
    assert len(replies) == cookies and all(m.dst == SRC and m.data[0] == 3 for m in replies)
    assert st.device_drops.get("unknown_peer", 0) == dh


def test_full_handshake_queue_drops_and_counts(engine) -> None:  # type: ignore[no-untyped-def]
    ref, key, _ = engine
    n = QUEUE_HANDSHAKE_SIZE + 200
    _flood(ref, _initiations(key, n))
    wait_until(lambda: _status(ref).handshake_queue == 0, 30, "queue worked off")
    st = _status(ref)
    assert st.device_drops["handshake_queue_full"] == 200
    assert st.work.get("cookie_replies", 0) + st.work.get("handshake_dh", 0) == QUEUE_HANDSHAKE_SIZE


def test_full_queue_is_told_to_magicsock_and_cleared(engine) -> None:  # type: ignore[no-untyped-def]
    ref, key, log = engine
    _flood(ref, _initiations(key, QUEUE_HANDSHAKE_SIZE + 10))
    wait_until(lambda: _status(ref).handshake_queue == 0, 30, "queue worked off")
    told = [m.full for m in log if isinstance(m, WgHandshakeQueueFull)]
    assert told[-2:] == [True, False]  # full while it was, room again once half empty
