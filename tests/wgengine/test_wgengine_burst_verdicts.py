"""The engine judges a burst once per distinct header (``_receive_plain`` reuses the verdict and
route of a packet whose addresses, ports and TCP flags equal the previous one's): what it passes,
drops (by reason) and routes is exactly what ``Filter.run_in`` per packet gives."""

from __future__ import annotations

import collections
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from test_wgengine_filter import go_filter
from wgengine_helpers import TCP, UDP, packet

from pytsnet.actors.wgengine.engine import WgEngine
from pytsnet.messages.netstack import FlowPacketsIn
from pytsnet.netstack.filter import summarize
from pytsnet.wire.keys import NodePrivate

ACK, SYN, RST, PSH = 0x10, 0x02, 0x04, 0x08
HEADERS = [  # (src, dst, sport, dport): local and not, allowed by a rule and not
    ("198.51.100.11", "192.0.2.4", 999, 22), ("198.51.100.33", "192.0.2.4", 999, 22),
    ("203.0.113.68", "203.0.113.51", 5, 443),
    ("198.51.100.11", "192.0.2.99", 999, 22), ("203.0.113.68", "100.122.98.50", 7, 999),
]


class _Flow:
    def __init__(self, got: list[bytes]) -> None:
        self.got = got

    def tell(self, msg: FlowPacketsIn) -> bool:
        self.got.extend(msg.packets)
        return True


def _fragment(pkt: bytes) -> bytes:
    return pkt[:6] + b"\x20\x00" + pkt[8:]  # MF set (the header checksum is not the filter's business)


@st.composite
def bursts(draw: Any) -> list[bytes]:
    out = []
    for _ in range(draw(st.integers(1, 40))):
        src, dst, sport, dport = draw(st.sampled_from(HEADERS))
        kind = draw(st.sampled_from(["ack", "ack", "ack", "psh", "syn", "synack", "rst", "udp", "frag",
                                     "short"]))
        if kind == "udp":
            out.append(packet(UDP, src, dst, sport, dport))
            continue
        flags = {"ack": ACK, "psh": ACK | PSH, "syn": SYN, "synack": SYN | ACK, "rst": RST,
                 "frag": ACK, "short": ACK}[kind]
        pkt = packet(TCP, src, dst, sport, dport, flags=flags, payload=b"x" * draw(st.integers(0, 3)))
        if kind == "frag":
            pkt = _fragment(pkt)
        elif kind == "short":
            pkt = pkt[:30]  # an IPv4 header claiming more than is there: junk for the filter
        out.append(pkt)
    return out


@settings(max_examples=200, deadline=None)
@given(bursts(), st.sets(st.sampled_from(range(len(HEADERS)))))
def test_a_burst_gets_the_per_packet_verdicts_and_routes(burst: list[bytes], routed: set[int]) -> None:
    eng = WgEngine(NodePrivate.generate())
    eng.filter = go_filter()
    flows: dict[tuple[int, ...], list[bytes]] = {}
    for i in routed:
        src, dst, sport, dport = HEADERS[i]
        p = summarize(packet(TCP, src, dst, sport, dport, flags=ACK))
        key = (4, p.src, p.sport, p.dst, p.dport)
        flows[key] = []
        eng._routes[key] = _Flow(flows[key])  # type: ignore[assignment]
    to_sink: list[bytes] = []
    eng._ref = lambda name: object()  # type: ignore[method-assign,assignment,return-value]
    eng._deliver = lambda sink, pkts: to_sink.extend(pkts)  # type: ignore[method-assign,assignment]
    eng._receive_plain([(None, pkt) for pkt in burst])  # type: ignore[misc]

    ref = go_filter()
    passed = [pkt for pkt in burst if ref.run_in(pkt)]
    assert {k: v for k, v in eng.filter.drops.items() if v} == {k: v for k, v in ref.drops.items() if v}
    want_flows: dict[tuple[int, ...], list[bytes]] = collections.defaultdict(list)
    want_sink = []
    for pkt in passed:
        p = summarize(pkt)
        key = (p.version, p.src, p.sport, p.dst, p.dport)
        if p.proto == TCP and key in flows:
            want_flows[key].append(pkt)
        else:
            want_sink.append(pkt)
    assert to_sink == want_sink
    assert {k: v for k, v in flows.items() if v} == dict(want_flows)
    assert eng.filter.accepted == ref.accepted == len(passed)
