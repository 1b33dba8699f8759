"""The engine hands a flow a burst that carries data with ``tell_now`` (handled on the engine's
thread when the flow is idle) and a burst of pure ACKs with ``tell`` (issue 14: the receiver's bulk
path loses its pool hop; a sender's ACK-triggered pump stays on the flow's worker)."""

from __future__ import annotations

from test_wgengine_filter import go_filter
from wgengine_helpers import TCP, packet

from pytsnet.actors.wgengine.engine import WgEngine
from pytsnet.messages.netstack import FlowPacketsIn
from pytsnet.netstack.filter import summarize
from pytsnet.wire.keys import NodePrivate

ACK, PSH = 0x10, 0x08
SRC, DST, SPORT, DPORT = "203.0.113.68", "100.122.98.50", 7, 999  # local, allowed by go_filter


class _Flow:
    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []

    def tell(self, msg: FlowPacketsIn) -> bool:
        self.calls.append(("tell", len(msg.packets)))
        return True

    def tell_now(self, msg: FlowPacketsIn) -> bool:
        self.calls.append(("tell_now", len(msg.packets)))
        return True


def _engine_with(flow: _Flow) -> WgEngine:
    eng = WgEngine(NodePrivate.generate())
    eng.filter = go_filter()
    p = summarize(packet(TCP, SRC, DST, SPORT, DPORT, flags=ACK))
    eng._routes[(4, p.src, p.sport, p.dst, p.dport)] = flow  # type: ignore[assignment]
    return eng


def test_a_data_burst_is_handed_over_now_an_ack_burst_is_queued() -> None:
    flow = _Flow()
    eng = _engine_with(flow)
    data = [packet(TCP, SRC, DST, SPORT, DPORT, flags=ACK | PSH, payload=b"d" * 1200) for _ in range(3)]
    acks = [packet(TCP, SRC, DST, SPORT, DPORT, flags=ACK) for _ in range(2)]
    eng._receive_plain([(None, p) for p in data])  # type: ignore[misc]
    eng._receive_plain([(None, p) for p in acks])  # type: ignore[misc]
    eng._receive_plain([(None, p) for p in (data[0], *acks)])  # type: ignore[misc]  # the ACK step after data
    eng._receive_plain([(None, p) for p in (*acks, data[0])])  # type: ignore[misc]  # ends with data
    assert flow.calls == [("tell_now", 3), ("tell", 2), ("tell", 3), ("tell_now", 3)]
    assert eng.packets_to_flows == 11
