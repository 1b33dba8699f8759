"""FlowRegistry hand-over: a dialed flow that ends before its dialer reads the reply is still handed over."""

from __future__ import annotations

import ipaddress
from typing import Any

from pytsnet.actors.netstack.channel import _MAX_UNCLAIMED, FlowChannel, FlowRecord, FlowRegistry


def _channel(name: str) -> FlowChannel:
    return FlowChannel(name, ("100.64.0.1", 40000), ("100.64.0.2", 80), 65536)


def _record(ch: FlowChannel) -> FlowRecord:
    local, remote = ipaddress.ip_address(ch.local[0]), ipaddress.ip_address(ch.remote[0])
    key = (6, local, ch.local[1], remote, ch.remote[1])
    ref: Any = None  # the registry never touches the ref
    return FlowRecord(ch.name, key, ref, ch)


def test_refused_before_claim_still_reaches_the_dialer() -> None:
    reg = FlowRegistry()
    ch = _channel("f1")
    reg.add_flow(_record(ch), dialed=True)
    ch.error = ConnectionRefusedError("peer sent RST")
    reg.pop_flow("f1")  # the flow actor ended first (the race CI hit)
    claimed = reg.claim_flow("f1")
    assert claimed is ch
    assert isinstance(claimed.error, ConnectionRefusedError)
    assert reg.claim_flow("f1") is None  # claimed once


def test_accepted_flows_are_not_claimable() -> None:
    reg = FlowRegistry()
    reg.add_flow(_record(_channel("a1")))
    assert reg.claim_flow("a1") is None


def test_unclaimed_dials_are_bounded() -> None:
    reg = FlowRegistry()
    for i in range(_MAX_UNCLAIMED + 10):
        reg.add_flow(_record(_channel(f"d{i}")), dialed=True)
        reg.pop_flow(f"d{i}")
    assert reg.claim_flow("d0") is None  # the oldest were evicted
    assert reg.claim_flow(f"d{_MAX_UNCLAIMED + 9}") is not None
