"""Tailscale Services (VIP services) on the local control server (issue 20d).

Facts (Go ``tailcfg``, ``ipn/ipnlocal``, tsnet's own tests — Tailscale's control is closed; its
``setUpServiceState`` in ``tsnet_test.go`` shows what control does for a host): a service is
``svc:<dns-label>`` with ports defined on the control side. A tagged node advertises the services it
hosts in ``ipn.Prefs.AdvertiseServices`` and tells control only ``Hostinfo.ServicesHash`` = hex
SHA-256 of the JSON of its ``[]tailcfg.VIPService`` (``{"Name","Ports","Active"}``, sorted by name;
Go's ``vipServiceHash``); Tailscale's control then fetches the list over c2n ``GET /vip-services``.
An approved host gets the ``service-host`` node capability, whose one value is a
``tailcfg.ServiceIPMappings`` (``{"svc:web": ["100.100.0.1"]}``): the VIPs it must accept traffic
for; clients reach a VIP through the host's ``AllowedIPs`` (the VIP as a /32 route) and resolve
``<label>.<tailnet domain>`` through a DNS extra record.

localnet's choices where Go is silent: services are defined when the tailnet starts
(``LocalTailnet(services={"svc:web": ServiceDef(ports=("tcp:80",), tags=("tag:web",))})``), each
host tag auto-approved (no admin step). There is no c2n here, so control recognises what a node
advertises by the hash alone: it hashes each subset of the defined services the node's tags allow
(as Go would list them: defined ports, ``Active: true``) and takes the one that matches — so a node
advertising a service with other ports than defined hosts nothing (Tailscale: "a valid Service host
must advertise all ports defined for the Service"). VIPs (IPv4 only) come from ``SERVICE_V4``, kept
out of node allocation, one per service, persisted in the store's meta table. Several hosts of one
service all get it; the VIP route goes to the lowest node ID among them (one route per prefix).
"""

from __future__ import annotations

import hashlib
import ipaddress
import itertools
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from pytsnet.localnet.store import Node, Store

__all__ = ["MAX_CANDIDATES", "SERVICE_HOST_CAP", "SERVICE_V4", "ServiceDef", "ServiceTable", "advertised",
           "canonical_ports", "parse_service_name", "vip_service_hash"]

SERVICE_HOST_CAP = "service-host"  # tailcfg.NodeAttrServiceHost
SERVICE_V4 = ipaddress.IPv4Network("100.100.0.0/24")
"""Where localnet draws VIPs (Go names no range: control allocates). Inside 100.64.0.0/10 and
reserved from node allocation (``store.RESERVED_V4``)."""
MAX_CANDIDATES = 8
"""Services one node's tags may host that control tries to match against its hash (2^8 subsets)."""
_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_PORT = re.compile(r"^(tcp|udp):([0-9]{1,5})(-([0-9]{1,5}))?$")


def parse_service_name(name: str) -> str:
    """``name`` checked as Go's ``ServiceName.Validate``: ``svc:`` plus one DNS label."""
    bare = name.removeprefix("svc:")
    if bare == name or not _LABEL.match(bare):
        raise ValueError(f"{name!r} is not a valid service name: svc:<dns-label>")
    return name


@dataclass(frozen=True)
class ServiceDef:
    """A service as the tailnet defines it: its ports (``tailcfg.ProtoPortRange`` text, ``tcp:80``)
    and the tags whose nodes may host it (auto-approved)."""

    ports: tuple[str, ...]
    tags: tuple[str, ...]

    def __post_init__(self) -> None:
        if not self.ports:
            raise ValueError("a service needs at least one port")
        for p in self.ports:
            m = _PORT.match(p)
            if m is None or not 0 < int(m.group(2)) <= 0xFFFF or (
                    m.group(4) is not None and not int(m.group(2)) <= int(m.group(4)) <= 0xFFFF):
                raise ValueError(f"service port {p!r}: proto:port or proto:lo-hi")
        if not self.tags or any(not t.startswith("tag:") or len(t) <= 4 for t in self.tags):
            raise ValueError(f"service host tags must look like tag:NAME, got {list(self.tags)}")


def vip_service_hash(services: Sequence[Mapping[str, object]]) -> str:
    """Go's ``vipServiceHash``: hex SHA-256 of the JSON of ``[]*tailcfg.VIPService``; "" for none."""
    if not services:
        return ""
    return hashlib.sha256(json.dumps(list(services), separators=(",", ":")).encode()).hexdigest()


def canonical_ports(ports: Iterable[str]) -> list[str]:
    """``ports`` as a Go host lists them (``ServicePortRange``): TCP ports sorted, adjacent ones merged
    (``tcp:80``, ``tcp:80-81``); other protocols kept as written, after them."""
    tcp: set[int] = set()
    other: list[str] = []
    for p in ports:
        m = _PORT.match(p)
        if m is not None and m.group(1) == "tcp":
            lo = int(m.group(2))
            tcp.update(range(lo, (int(m.group(4)) if m.group(4) else lo) + 1))
        else:
            other.append(p)
    out: list[list[int]] = []
    for port in sorted(tcp):
        if out and port == out[-1][1] + 1:
            out[-1][1] = port
        else:
            out.append([port, port])
    return [f"tcp:{a}" if a == b else f"tcp:{a}-{b}" for a, b in out] + other


def advertised(name: str, ports: Iterable[str]) -> dict[str, object]:
    """One ``tailcfg.VIPService`` as a host of ``name`` on ``ports`` lists it (Go's field order)."""
    return {"Name": name, "Ports": canonical_ports(ports) or None, "Active": True}


class ServiceTable:
    """The defined services, their VIPs and which node hosts which (from its last ServicesHash)."""

    def __init__(self, store: Store, defs: Mapping[str, ServiceDef]) -> None:
        self.defs = {parse_service_name(n): d for n, d in sorted(defs.items())}
        self.store = store
        self.vips: dict[str, str] = {n: self._vip(n) for n in self.defs}
        self.hosting: dict[int, tuple[str, ...]] = {}
        """Node ID → the services it hosts (in memory: a node sends its Hostinfo on every connect)."""

    def _vip(self, name: str) -> str:
        key = f"service_vip:{name}"
        got = self.store.get_meta(key)
        if got:
            return got
        taken = {self.store.get_meta(f"service_vip:{n}") for n in self.defs}
        for ip in SERVICE_V4.hosts():
            if str(ip) not in taken:
                self.store.set_meta(key, str(ip))
                return str(ip)
        raise RuntimeError(f"{SERVICE_V4} is exhausted")

    def candidates(self, node: Node) -> list[str]:
        tags = set(node.tags)
        return [n for n, d in self.defs.items() if tags & set(d.tags)][:MAX_CANDIDATES]

    def record(self, node: Node, services_hash: object) -> bool:
        """The node's ``Hostinfo.ServicesHash``: which services it hosts now; True if that changed."""
        hosted: tuple[str, ...] = ()
        if isinstance(services_hash, str) and services_hash:
            cands = self.candidates(node)
            for k in range(len(cands), 0, -1):
                for subset in itertools.combinations(cands, k):
                    listed = [advertised(n, self.defs[n].ports) for n in subset]
                    if vip_service_hash(listed) == services_hash:
                        hosted = subset
                        break
                if hosted:
                    break
        if self.hosting.get(node.id, ()) == hosted:
            return False
        if hosted:
            self.hosting[node.id] = hosted
        else:
            self.hosting.pop(node.id, None)
        return True

    def forget(self, node_id: int) -> None:
        self.hosting.pop(node_id, None)

    def host_cap(self, node_id: int) -> dict[str, list[str]] | None:
        """The ``service-host`` value for ``node_id``: its services → VIPs (None: it hosts none)."""
        hosted = self.hosting.get(node_id)
        return {n: [self.vips[n]] for n in hosted} if hosted else None

    def routes(self, visible: Iterable[Node]) -> dict[int, list[str]]:
        """Node ID → the VIP /32 routes peers get in its AllowedIPs (lowest hosting node ID per VIP)."""
        ids = {n.id for n in visible if n.authorized and not n.logged_out}
        out: dict[int, list[str]] = {}
        for name in self.defs:
            hosts = sorted(i for i, svcs in self.hosting.items() if name in svcs and i in ids)
            if hosts:
                out.setdefault(hosts[0], []).append(f"{self.vips[name]}/32")
        return out

    def dns_records(self, domain: str) -> list[dict[str, str]]:
        """``tailcfg.DNSRecord``s: ``<label>.<domain>`` → VIP, for services with a host."""
        hosted = {n for svcs in self.hosting.values() for n in svcs}
        return [{"Name": f"{n.removeprefix('svc:')}.{domain}", "Value": self.vips[n]}
                for n in self.defs if n in hosted]
