"""Packet filter rules (``tailcfg.FilterRule``, ``NetPortRange``, ``PortRange``, ``CapGrant``)."""

from __future__ import annotations

from typing import Any

from pytsnet.wire.tailcfg.base import GoModel


class PortRange(GoModel):
    go_always = frozenset({"First", "Last"})
    First: int = 0
    Last: int = 0


PORT_RANGE_ANY = PortRange(First=0, Last=65535)


class NetPortRange(GoModel):
    go_always = frozenset({"IP", "Ports"})
    IP: str = ""
    """``"*"``, an IP, a CIDR or a range; ``Bits`` is legacy."""
    Bits: int | None = None
    Ports: PortRange = PortRange()


class CapGrant(GoModel):
    go_always = frozenset({"Dsts"})
    Dsts: list[str] = []
    Caps: list[str] = []
    CapMap: dict[str, list[Any] | None] = {}


_CapGrant = CapGrant


class FilterRule(GoModel):
    go_always = frozenset({"SrcIPs"})
    SrcIPs: list[str] = []
    SrcBits: list[int] = []
    DstPorts: list[NetPortRange] = []
    IPProto: list[int] = []
    """Empty means TCP, UDP, ICMPv4 and ICMPv6."""
    CapGrant: list[_CapGrant] = []
