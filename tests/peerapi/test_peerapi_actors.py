"""The peerAPI actors on in-memory connections: who is refused, bounds, and one connection's fault.

Connections are real ``FlowChannel``s (what the netstack hands the app) fed by hand, so each rule is
checked without a tailnet: an address that is no tailnet node's is closed unanswered (Go
``ServeConn``), a silent connection is closed after the idle timeout, connections past the bound are
closed at once, and a killed connection actor ends that connection only.
"""

from __future__ import annotations

import queue
import time
from collections.abc import Iterator
from typing import Any

import pytest

from pytsnet.actors.netstack.channel import FlowChannel
from pytsnet.actors.peerapi import peerapi_spec
from pytsnet.actors.runtime import Actor, ActorSystem, FaultInjector, handles
from pytsnet.messages.dataplane import DataplaneInfo, DataplaneNetmap, GetDataplaneInfo
from pytsnet.messages.dns import DnsQuery
from pytsnet.messages.peerapi import PeerApiSpawn, PeerApiStatus, PeerApiStatusRequest
from pytsnet.messages.peers import GetPeers, PeerInfo, PeerTable
from pytsnet.testing.peerapi import serve_stub_resolver
from pytsnet.testing.polling import wait_until
from pytsnet.wire.keys import NodePrivate

SELF = PeerInfo(node_id=1, user=7, addresses=["100.64.0.1/32"])
PEER = PeerInfo(node_id=2, user=7, addresses=["100.64.0.2/32"])
OTHER_USER = PeerInfo(node_id=3, user=8, addresses=["100.64.0.3/32"])
PORT = 41000
QUERY = b"AAABAAABAAAAAAAABGhvc3QHZXhhbXBsZQAAAQAB"  # base64url of an A query for host.example


class Peers(Actor):
    @handles(GetPeers)
    def on_get(self, msg: GetPeers) -> PeerTable:
        return PeerTable(peers=[PEER, OTHER_USER])


class Bridge(Actor):
    @handles(GetDataplaneInfo)
    def on_get(self, msg: GetDataplaneInfo) -> DataplaneInfo:
        nm = DataplaneNetmap(node_private=NodePrivate.generate().to_text(), self_node=SELF)
        return DataplaneInfo(netmap=nm)


class Acceptor:
    def __init__(self) -> None:
        self.q: queue.Queue[FlowChannel] = queue.Queue()

    def accept_blocking(self, timeout: float | None = None) -> FlowChannel:
        try:
            return self.q.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError("accept timed out") from None


class Rig:
    def __init__(self, system: ActorSystem, **spawn: object) -> None:
        self.system = system
        self.acceptor = Acceptor()
        self.seen: list[DnsQuery] = []
        system.spawn(Peers, name="peers")
        system.spawn(Bridge, name="dataplane")
        serve_stub_resolver(system, {"host.example": "100.64.9.9"}, self.seen)
        system.spawn_spec(peerapi_spec(system, PeerApiSpawn(port=PORT, **spawn), self.acceptor))  # type: ignore[arg-type]
        self._n = 0

    def connect(self, src: str, kind: type[FlowChannel] = FlowChannel) -> FlowChannel:
        self._n += 1
        ch = kind(f"c{self._n}", ("100.64.0.1", PORT), (src, 50000 + self._n), 1 << 20)
        ch.established = True
        self.acceptor.q.put(ch)
        return ch

    def status(self) -> PeerApiStatus:
        ref = self.system.lookup("peerapi")
        assert ref is not None
        return ref.ask(PeerApiStatusRequest(), timeout=5)


def send(ch: FlowChannel, data: bytes) -> None:
    ch.rx.push(data)  # what the flow's connection does with in-order payload
    ch.notify()


def wait_answer(ch: FlowChannel, marker: bytes = b"\r\n\r\n", timeout: float = 10) -> bytes:
    wait_until(lambda: marker in ch.tx.peek() or ch.app_closed, timeout, "an answer or a close")
    return ch.tx.peek()


@pytest.fixture(params=["thread", "pool"])
def system(request: pytest.FixtureRequest) -> Iterator[ActorSystem]:
    s = ActorSystem(f"peerapi-{request.param}", dispatcher=request.param)
    yield s
    assert s.shutdown(10)


def test_known_peer_is_served_and_unknown_address_closed_unanswered(system: ActorSystem) -> None:
    rig = Rig(system)
    ok = rig.connect("100.64.0.2")
    send(ok, b"GET /nope HTTP/1.1\r\nHost: peer\r\n\r\n")
    assert wait_answer(ok).startswith(b"HTTP/1.1 404 ")
    assert not ok.app_closed  # kept alive for the next request

    stranger = rig.connect("10.1.2.3")  # a subnet-routed source, say: no tailnet node has it
    send(stranger, b"GET /nope HTTP/1.1\r\nHost: peer\r\n\r\n")
    wait_until(lambda: stranger.app_closed, 10, "stranger's connection closed")
    assert stranger.tx.peek() == b""  # not even a 403: Go closes the connection
    wait_until(lambda: rig.status().counters.get("unknown_peer") == 1, 5, "counted")
    assert rig.seen == []


def test_dns_only_for_our_own_users_nodes(system: ActorSystem) -> None:
    rig = Rig(system)
    for src, status in (("100.64.0.2", b"200"), ("100.64.0.3", b"403")):
        ch = rig.connect(src)
        send(ch, b"GET /dns-query?dns=" + QUERY + b" HTTP/1.1\r\nHost: peer\r\n\r\n")
        assert wait_answer(ch).startswith(b"HTTP/1.1 " + status + b" ")
    assert [(q.transport, q.src) for q in rig.seen] == [("doh", "100.64.0.2:50001")]


def test_idle_connection_is_closed(system: ActorSystem) -> None:
    rig = Rig(system, idle_timeout=0.3)
    ch = rig.connect("100.64.0.2")
    send(ch, b"GET /nope HTTP/1.1\r\nHost: pe")  # half a request, then silence
    wait_until(lambda: ch.app_closed, 10, "idle connection closed")
    wait_until(lambda: rig.status().counters.get("idle_timeout") == 1, 5, "counted")


def test_a_trickled_request_is_cut_off(system: ActorSystem) -> None:
    rig = Rig(system, idle_timeout=0.5)
    ch = rig.connect("100.64.0.2")
    sent = 0
    while not ch.app_closed and sent < 200:  # one byte every 0.1 s: never silent for idle_timeout
        send(ch, b"GET /nope HTTP/1.1\r\nX: "[sent:sent + 1] or b"a")
        sent += 1
        time.sleep(0.1)
    assert ch.app_closed and sent < 20, sent
    assert ch.tx.peek() == b""
    wait_until(lambda: rig.status().counters.get("idle_timeout") == 1, 5, "counted")


def test_connections_past_the_bound_are_closed_at_once(system: ActorSystem) -> None:
    rig = Rig(system, max_connections=2)
    held = [rig.connect("100.64.0.2") for _ in range(2)]
    wait_until(lambda: rig.status().open == 2, 5, "two served")
    extra = rig.connect("100.64.0.2")
    wait_until(lambda: extra.app_closed, 5, "the third closed")
    assert rig.status().counters["busy"] == 1
    held[0].rx_eof = True
    held[0].notify()
    wait_until(lambda: rig.status().open == 1, 5, "a slot freed by the client's close")
    later = rig.connect("100.64.0.2")
    send(later, b"GET / HTTP/1.1\r\nHost: peer\r\n\r\n")
    assert wait_answer(later).startswith(b"HTTP/1.1 404 ")


def test_a_killed_connection_ends_only_that_connection(system: ActorSystem) -> None:
    rig = Rig(system)
    a, b = rig.connect("100.64.0.2"), rig.connect("100.64.0.2")
    wait_until(lambda: rig.status().open == 2, 5, "two served")
    conns = [n for n in (f"peerapi-c1-{i}" for i in (1, 2)) if system.lookup(n) is not None]
    assert len(conns) == 2
    victim = system.lookup(conns[0])
    assert victim is not None
    FaultInjector.kill_now(victim, "chaos: one peerAPI connection")
    wait_until(lambda: a.app_closed, 5, "the killed connection's flow closed")
    send(b, b"GET / HTTP/1.1\r\nHost: peer\r\n\r\n")
    assert wait_answer(b).startswith(b"HTTP/1.1 404 ") and not b.app_closed


def test_bad_request_gets_400_and_its_connection_closes(system: ActorSystem) -> None:
    rig = Rig(system)
    ch = rig.connect("100.64.0.2")
    send(ch, b"\x00\x01garbage\r\n\r\n")
    assert wait_answer(ch).startswith(b"HTTP/1.1 400 ")
    wait_until(lambda: ch.app_closed, 5, "closed after the 400")
    big = rig.connect("100.64.0.2")
    send(big, b"GET / HTTP/1.1\r\nHost: peer\r\nX: " + b"a" * 20000)
    assert wait_answer(big).startswith(b"HTTP/1.1 400 ")
    wait_until(lambda: big.app_closed, 5, "closed after the 400")




class RecordingChannel(FlowChannel):
    """A ``FlowChannel`` that notes when the app shut its write side and when it closed."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.calls: list[tuple[str, float]] = []

    def send_eof(self) -> None:
        self.calls.append(("send_eof", time.monotonic()))
        super().send_eof()

    def close(self) -> None:
        self.calls.append(("close", time.monotonic()))
        super().close()


def test_a_closing_answer_is_followed_by_a_fin_and_the_close_only_later(system: ActorSystem) -> None:
    """The 400 ends the connection while the caller may still be sending: a FIN after the answer, the
    close (a reset, with bytes unread) ``LINGER`` later, so that reset cannot overtake the answer;
    what arrives meanwhile is dropped (Go net/http ``closeWriteAndWait``)."""
    from pytsnet.actors.peerapi.conn import LINGER

    rig = Rig(system)
    ch = rig.connect("100.64.0.2", RecordingChannel)
    assert isinstance(ch, RecordingChannel)
    send(ch, b"\x00\x01garbage\r\n\r\n")
    assert wait_answer(ch).startswith(b"HTTP/1.1 400 ")
    wait_until(lambda: ch.tx_eof, 5, "the FIN after the answer")
    send(ch, b"more of a body the caller was still sending" * 100)
    wait_until(lambda: ch.app_closed, 5, "closed after the linger")
    calls = ch.calls
    assert [c[0] for c in calls][:2] == ["send_eof", "close"], calls
    assert calls[1][1] - calls[0][1] >= LINGER * 0.9, calls  # the timer never fires early
