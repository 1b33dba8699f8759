"""The engine's half of the fast path: ``FlowRoutes`` from the netstack decide which TCP packets go
straight to a flow actor (``FlowPacketsIn``) and which to the sink (this rig's fake magicsock
delivers one datagram per message, so bursts are one packet here); a route to
a flow that ended falls back to the sink; a restarted engine asks for the table again."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator

import pytest
from wgengine_helpers import TCP, packet, udp
from wgengine_rig import Node, make_pair

from pytsnet.actors.runtime import Actor, FaultInjector, handles
from pytsnet.messages.netstack import FlowPacketsIn, FlowRoutes, FlowRoutesRequest, RouteKey
from pytsnet.messages.wgengine import GetWgStatus, IpPacketIn, IpPacketOut, IpPacketsOut
from pytsnet.testing.polling import wait_until


class FakeFlow(Actor):
    def __init__(self, got: list[tuple[bytes, ...]]) -> None:
        self.got = got

    @handles(FlowPacketsIn)
    def on_packets(self, msg: FlowPacketsIn) -> None:
        self.got.append(msg.packets)


class RouteAsker(Actor):
    """Stands in for the netstack: records the engine's route requests and the packets it gets."""

    def __init__(self, asked: list[str]) -> None:
        self.asked = asked

    @handles(FlowRoutesRequest)
    def on_request(self, msg: FlowRoutesRequest) -> None:
        self.asked.append("asked")

    @handles(IpPacketIn)
    def on_packet(self, msg: IpPacketIn) -> None:
        self.asked.append("packet")


def _key(b: Node, a: Node, rport: int, lport: int) -> RouteKey:
    """b's route for packets a:rport -> b:lport."""
    return (4, int(ipaddress.ip_address(a.addr)), rport, int(ipaddress.ip_address(b.addr)), lport)


@pytest.fixture
def pair() -> Iterator[tuple[Node, Node]]:
    a, b, _ = make_pair()
    yield a, b
    a.system.shutdown()
    b.system.shutdown()


def test_routed_tcp_goes_to_its_flow_in_one_message_the_rest_to_the_sink(pair: tuple[Node, Node]) -> None:
    a, b = pair
    flow_got: list[tuple[bytes, ...]] = []
    b.system.spawn(FakeFlow, flow_got, name="flow-1")
    b.engine.tell(FlowRoutes(reset=True, add=((_key(b, a, 5000, 22), "flow-1"),)))
    assert b.engine.ask(GetWgStatus()).flow_routes == 1
    routed = [packet(TCP, a.addr, b.addr, 5000, 22, flags=0x10, payload=bytes([i])) for i in range(5)]
    other_port = packet(TCP, a.addr, b.addr, 5001, 22, flags=0x10)
    a.engine.tell(IpPacketOut(data=udp(a.addr, b.addr)))  # the handshake happens on this one
    wait_until(lambda: len(b.got) == 1)
    a.engine.tell(IpPacketsOut(packets=(*routed[:2], other_port, *routed[2:])))
    wait_until(lambda: sum(map(len, flow_got)) == 5 and len(b.got) == 2)
    assert [p for burst in flow_got for p in burst] == routed  # in order
    assert b.got[1] == other_port
    st = b.engine.ask(GetWgStatus())
    assert st.packets_in == 7 and st.packets_to_flows == 5


def test_removed_or_dead_routes_fall_back_to_the_sink(pair: tuple[Node, Node]) -> None:
    a, b = pair
    flow_got: list[tuple[bytes, ...]] = []
    flow = b.system.spawn(FakeFlow, flow_got, name="flow-2")
    b.engine.tell(FlowRoutes(add=((_key(b, a, 6000, 22), "flow-2"), (_key(b, a, 6001, 22), "flow-2"))))
    b.engine.tell(FlowRoutes(remove=(_key(b, a, 6001, 22),)))
    assert b.engine.ask(GetWgStatus()).flow_routes == 1
    a.engine.tell(IpPacketOut(data=packet(TCP, a.addr, b.addr, 6001, 22, flags=0x10)))
    wait_until(lambda: len(b.got) == 1)  # removed: to the sink
    flow.stop()
    a.engine.tell(IpPacketOut(data=packet(TCP, a.addr, b.addr, 6000, 22, flags=0x10)))
    wait_until(lambda: len(b.got) == 2)  # the flow ended, its route not yet withdrawn: to the sink
    assert flow_got == []
    assert b.engine.ask(GetWgStatus()).flow_routes == 0  # and the stale route is forgotten
    b.engine.tell(FlowRoutes(add=((_key(b, a, 6002, 22), "no-such-flow"),)))
    assert b.engine.ask(GetWgStatus()).flow_routes == 0  # a name that resolves to nothing is skipped


def test_a_reset_replaces_the_table_and_a_restarted_engine_asks_for_it(pair: tuple[Node, Node]) -> None:
    a, b = pair
    b.system.spawn(FakeFlow, [], name="flow-3")
    b.engine.tell(FlowRoutes(add=((_key(b, a, 7000, 22), "flow-3"), (_key(b, a, 7001, 22), "flow-3"))))
    b.engine.tell(FlowRoutes(reset=True, add=((_key(b, a, 7002, 22), "flow-3"),)))
    assert b.engine.ask(GetWgStatus()).flow_routes == 1
    asked: list[str] = []
    b.system.lookup("netstack").stop()  # type: ignore[union-attr]
    b.system.spawn(RouteAsker, asked, name="netstack")
    FaultInjector.kill_now(b.engine)
    wait_until(lambda: b.engine.incarnation == 2 and b.engine.is_alive)
    wait_until(lambda: asked == ["asked"])
    assert b.engine.ask(GetWgStatus()).flow_routes == 0  # the table died with the incarnation


def test_an_engine_that_found_no_netstack_asks_on_its_first_packet_for_it(pair: tuple[Node, Node]) -> None:
    """The engine starts before the netstack (or could not reach it): it asks again, once, when it
    first has a packet for the netstack."""
    a, b = pair
    b.system.lookup("netstack").stop()  # type: ignore[union-attr]
    FaultInjector.kill_now(b.engine)
    wait_until(lambda: b.engine.incarnation == 2 and b.engine.is_alive)
    asked: list[str] = []
    b.system.spawn(RouteAsker, asked, name="netstack")
    a.engine.tell(IpPacketOut(data=udp(a.addr, b.addr)))
    a.engine.tell(IpPacketOut(data=udp(a.addr, b.addr)))
    wait_until(lambda: asked.count("packet") == 2)
    assert asked.count("asked") == 1 and asked.index("asked") < asked.index("packet")
