"""The UDP reader's own pongs (``actors/magicsock/disco_reply.py``), with real sockets on loopback:
who gets one, what it says, and what is left to the DiscoPinger."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterator

import pytest

from pytsnet.actors.magicsock import disco_reply, udp_lane
from pytsnet.actors.magicsock.disco_reply import ANSWERS_PER_SECOND, PingAnswerer, PongKeys
from pytsnet.wire import disco
from pytsnet.wire.keys import DiscoPrivate


class Owner:
    """Stands for the UDP router's ``ActorRef`` (the registries' key)."""


@pytest.fixture
def rig() -> Iterator[tuple[Owner, socket.socket, socket.socket, DiscoPrivate, DiscoPrivate]]:
    """The router's socket (published as ``udp_lane`` has it) and a peer's, both on loopback."""
    owner = Owner()
    router, peer = (socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(2))
    for s in (router, peer):
        s.bind(("127.0.0.1", 0))
        s.settimeout(0.3)
    me, them = DiscoPrivate.generate(), DiscoPrivate.generate()
    udp_lane.publish(owner, router)  # type: ignore[arg-type]
    disco_reply.publish(owner, PongKeys(me, {them.public(): disco.DiscoShared(me, them.public())}))  # type: ignore[arg-type]
    try:
        yield owner, router, peer, me, them
    finally:
        disco_reply.withdraw(owner)  # type: ignore[arg-type]
        udp_lane.withdraw(owner, router)  # type: ignore[arg-type]
        router.close()
        peer.close()


def src_of(peer: socket.socket) -> str:
    ip, port = peer.getsockname()
    return f"{ip}:{port}"


def pong_at(peer: socket.socket, them: DiscoPrivate) -> disco.Pong | None:
    try:
        data = peer.recv(2048)
    except TimeoutError:
        return None
    _, msg = disco.open_packet(them, data)
    assert isinstance(msg, disco.Pong)
    return msg


def test_a_known_peers_ping_is_answered_once_per_tx_id(rig: tuple) -> None:  # type: ignore[type-arg]
    owner, _router, peer, me, them = rig
    answerer = PingAnswerer(owner)
    ping = disco.seal_packet(them, me.public(), disco.Ping(b"t" * 12))
    assert answerer.answer(ping, src_of(peer), 1.0)
    pong = pong_at(peer, them)
    assert pong is not None and pong.tx_id == b"t" * 12
    assert (str(pong.src[0]), pong.src[1]) == peer.getsockname()  # where the ping came from
    assert answerer.answer(ping, src_of(peer), 1.1)  # the same TxID again: answered, no second pong
    assert pong_at(peer, them) is None and answerer.answered == 1
    assert answerer.answer(disco.seal_packet(them, me.public(), disco.Ping(b"u" * 12)), src_of(peer), 1.2)
    assert pong_at(peer, them) is not None and answerer.answered == 2


def test_what_the_reader_leaves_to_the_pinger(rig: tuple) -> None:  # type: ignore[type-arg]
    """An unknown key, a box that does not open, a pong, garbage, and no keys published: no pong
    from the reader (False: the DiscoPinger judges and counts it, as before)."""
    owner, _router, peer, me, them = rig
    answerer = PingAnswerer(owner)
    stranger = DiscoPrivate.generate()
    forged = bytearray(disco.seal_packet(them, me.public(), disco.Ping(b"f" * 12)))
    forged[-1] ^= 1
    a_pong = disco.Pong(b"p" * 12, (ipaddress.ip_address("127.0.0.1"), 9))
    for data in (disco.seal_packet(stranger, me.public(), disco.Ping(b"s" * 12)), bytes(forged),
                 disco.seal_packet(them, me.public(), a_pong),
                 disco.MAGIC + b"\x00" * 10, b"not disco"):
        assert not answerer.answer(data, src_of(peer), 1.0)
    assert not answerer.answer(disco.seal_packet(them, me.public(), disco.Ping(b"g" * 12)), "no address", 1.0)
    assert pong_at(peer, them) is None and answerer.answered == 0
    disco_reply.withdraw(owner)
    assert not answerer.answer(disco.seal_packet(them, me.public(), disco.Ping(b"w" * 12)), src_of(peer), 1.0)
    assert pong_at(peer, them) is None


def test_the_reader_opens_a_bounded_number_of_boxes(rig: tuple) -> None:  # type: ignore[type-arg]
    """Past its budget the reader leaves pings to the pinger (forged boxes under a known key then cost
    the pinger's thread, not the data plane's); the budget comes back with time."""
    owner, _router, peer, me, them = rig
    answerer = PingAnswerer(owner)
    burst = int(ANSWERS_PER_SECOND / 4)
    got = [answerer.answer(disco.seal_packet(them, me.public(), disco.Ping(i.to_bytes(12, "big"))),
                           src_of(peer), 5.0) for i in range(burst + 10)]
    assert got == [True] * burst + [False] * 10
    later = disco.seal_packet(them, me.public(), disco.Ping(b"later" + bytes(7)))
    assert answerer.answer(later, src_of(peer), 6.0)
