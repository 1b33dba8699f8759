"""A NAT lab of kernel network namespaces: LANs behind nftables routers on a shared "internet".

    node ──lan── router(NAT) ──wan──┐
    node ──lan── router(NAT) ──wan──┤  bridge "inet0" in ``internet`` (203.0.113.0/24, RFC 5737):
    node ──lan── inner ── outer ────┘  localnet (control, DERP, STUN) and two UDP reflectors

Each LAN is declared with a :class:`LanSpec` and gets one router namespace (two for ``double``) and
one node namespace per node. NAT types, as nftables rules in the router (Go's names in brackets;
Go's natlab/vnet ``nat.go`` and ``tstest/integration/nat/nat_test.go``):

* ``none``: routed, no NAT, no firewall: the node has a public address (198.51.100.0/24).
* ``easy``: endpoint-independent mapping (``masquerade`` keeps the source port) and
  endpoint-independent filtering: once the inside sent from a port, anyone outside may send to its
  mapping (a dynamic nft map ``port -> inside address`` and a DNAT rule) — a "full cone".
* ``filtering``: endpoint-independent mapping, address-and-port-dependent filtering: conntrack only
  lets back what the inside sent to (Linux's plain masquerade) [Go's ``easy``].
* ``hard``: endpoint-dependent mapping, ``masquerade random``: each destination gets its own port
  [Go's ``hard``].
* ``double``: two ``filtering`` routers in a row (the inner one's WAN is a private 10.200.x LAN).
* ``udp_blocked``: TCP is masqueraded, UDP is dropped both ways: DERP over TCP/HTTPS only.

``LanSpec(forward_udp=P)``: a static port forward, as a home router's: inbound UDP to the router's WAN
address on port ``P`` is DNATed to the LAN's first node, same port, and the forward hook lets it in
(what Go's hard-NAT ``EndpointSTUN4LocalPort`` guess counts on); every other port stays filtered.

``LanSpec(upnp=True)``: the router also runs miniupnpd (NAT-PMP, PCP, UPnP IGD;
``pytsnet.testing.miniupnpd``) for its LAN, with its rules in a ``table inet natlab_upnp``. Its WAN
address is in 203.0.113.0/24 like every router's: miniupnpd maps for no reserved (e.g. RFC 5737)
WAN address by itself, so it runs with ``ext_perform_stun=yes`` against the lab's reflectors (an
RFC 5780 STUN server on ``INTERNET_ADDR``/``SECOND_ADDR`` x ``REFLECTOR_PORTS``), learns its
external address from them and maps once they find it unrestricted. For that test the router's
input lets in UDP from the four reflector sockets (the answers from the other IP/port are new flows
to conntrack), and its own requests leave un-NATed (``masquerade random`` would change their port,
which miniupnpd reads as a symmetric NAT): ``nft_rules(router_stun=...)``.

Every router drops unsolicited inbound (forward and input) except what its type lets in. Two peers
behind one router are a LAN with ``nodes=2`` (the ``same_lan`` cell). ``mtu`` sets the MTU of every
link of that LAN (node, router(s), its WAN port), ``wan_mtu`` of the WAN link alone (a smaller MTU
mid-path: the node learns it from ICMP). Node namespaces have one route, the default via their
router; routers route only the lab's prefixes; the internet namespace forwards nothing — no packet
can leave the lab (:meth:`NatLab.assert_sealed` checks).

Cleanup: :func:`nat_lab` is a ``with`` block (processes killed by pid, namespaces deleted by name);
:func:`sweep_stale` deletes the namespaces of labs whose process died (names carry the pid).
Run ``python -m pytsnet.testing.natlab sweep`` after a crashed run.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pytsnet.testing.conntrack import CtEntry, ct_entries, ct_flush
from pytsnet.testing.miniupnpd import Miniupnpd, miniupnpd_chains
from pytsnet.testing.netns import Netns
from pytsnet.testing.reflectors import Reflectors

__all__ = ["INTERNET_ADDR", "NAT_TYPES", "PREFIX", "REFLECTOR_ADDRS", "REFLECTOR_PORTS", "SECOND_ADDR", "Lan",
           "LanSpec", "NatLab", "NatType", "Reflectors", "nat_lab", "sweep_stale"]

NatType = Literal["none", "easy", "filtering", "hard", "double", "udp_blocked"]
NAT_TYPES: tuple[NatType, ...] = ("none", "easy", "filtering", "hard", "double", "udp_blocked")
PREFIX = "natlab"
INTERNET_NET = "203.0.113.0/24"
INTERNET_ADDR = "203.0.113.1"
"""Where localnet (control, DERP, STUN) and the first reflector listen."""
SECOND_ADDR = "203.0.113.2"
"""A second internet address (the second reflector): another destination for mapping tests."""
REFLECTOR_PORTS = (3478, 3479)
REFLECTOR_ADDRS = tuple((a, p) for a in (INTERNET_ADDR, SECOND_ADDR) for p in REFLECTOR_PORTS)
"""The reflectors' 2x2 grid; the first is the STUN server miniupnpd asks (it answers from the rest)."""
UPNP_TABLE = "natlab_upnp"
NAT_TIMEOUT = 120  # seconds an idle ``easy`` mapping stays open to anyone (conntrack's UDP default is 30/120)
_lab_counter = itertools.count()


@dataclass(frozen=True)
class LanSpec:
    """One LAN: its name (a key in :attr:`NatLab.lans`), NAT type, node count and link MTUs."""

    name: str
    nat: NatType
    nodes: int = 1
    mtu: int | None = None
    """Every link of the LAN (node, router(s), WAN port)."""
    wan_mtu: int | None = None
    """The WAN link alone (over ``mtu``): a smaller MTU in the middle of the path, as PPPoE or a tunnel."""
    upnp: bool = False
    """The router runs miniupnpd (NAT-PMP, PCP, UPnP IGD), its external address learned by STUN."""
    forward_udp: int | None = None
    """A static port forward: inbound UDP to WAN:port goes to the first node's same port."""

    def __post_init__(self) -> None:
        if self.nat not in NAT_TYPES:
            raise ValueError(f"unknown NAT type {self.nat!r}; want one of {NAT_TYPES}")
        if not 1 <= self.nodes <= 8:
            raise ValueError(f"LAN {self.name}: 1..8 nodes, got {self.nodes}")
        if self.upnp and self.nat in ("none", "double"):
            raise ValueError(f"LAN {self.name}: upnp needs a single NAT router, not {self.nat!r}")
        if self.forward_udp is not None and (self.nat in ("none", "double", "udp_blocked")
                                             or not 1 <= self.forward_udp <= 65535):
            raise ValueError(f"LAN {self.name}: forward_udp needs a single NAT router passing UDP and a "
                             f"port in 1..65535, not {self.nat!r} port {self.forward_udp}")


@dataclass
class Lan:
    """A built LAN: its node namespaces and addresses, its router(s) and public (WAN) address."""

    spec: LanSpec
    nodes: list[Netns]
    node_addrs: list[str]
    routers: list[Netns]
    """Outermost first (two for ``double``)."""
    wan_addr: str
    """The address the internet sees (the outer router's WAN; the node's own for ``none``)."""
    gateway: str
    """The nodes' default gateway (their router's LAN address)."""
    upnp: Miniupnpd | None = None
    """The router's running miniupnpd (``LanSpec.upnp``)."""

    @property
    def router(self) -> Netns:
        return self.routers[-1]

    @property
    def node(self) -> Netns:
        return self.nodes[0]


@dataclass
class NatLab:
    internet: Netns
    lans: dict[str, Lan]
    reflectors: Reflectors
    all_ns: list[Netns] = field(default_factory=list)

    def __getitem__(self, name: str) -> Lan:
        return self.lans[name]

    def rebind(self, name: str, new_wan: str) -> None:
        """Give LAN ``name``'s (outer) router a new public address, as a NAT that restarts with a new
        lease: the old mappings die with the old address (masquerade drops them; the neighbours on
        the internet segment forget it at once), new ones use the new address."""
        lan = self.lans[name]
        if lan.spec.nat == "none":
            raise ValueError("a `none` LAN has no NAT to rebind")
        if lan.upnp is not None:
            raise ValueError("a upnp LAN is not rebindable: miniupnpd's STUN test is not redone here")
        outer = lan.routers[0]
        outer.sh(f"ip addr del {lan.wan_addr}/24 dev wan && ip addr add {_rebind_addr(new_wan)}/24 dev wan")
        self.internet.sh("ip neigh flush all")
        for other in self.lans.values():
            other.routers[0].sh("ip neigh flush dev wan")
        lan.wan_addr = new_wan

    def assert_sealed(self) -> None:
        """No namespace of the lab routes a non-lab address anywhere but into a router that has no
        route for it: nothing leaves the lab."""
        probe = "192.0.2.1"  # RFC 5737: outside every lab prefix
        for lan in self.lans.values():
            for r in lan.routers:
                r.assert_no_route_out()
            for n in lan.nodes:
                via = n.run(["ip", "-o", "route", "get", probe], check=False).stdout
                if via and f"via {lan.gateway} " not in via:
                    raise AssertionError(f"{n.name} routes {probe} past its router: {via}")
        self.internet.assert_no_route_out()

    def set_udp_timeout(self, name: str, seconds: int) -> None:
        """Make LAN ``name``'s routers forget an idle UDP mapping after ``seconds`` (conntrack's
        ``nf_conntrack_udp_timeout`` and ``_stream``, per network namespace: this lab only; the
        defaults are 30 and 120 s). Home routers often keep 30-60 s; Go's 3 s disco heartbeats keep
        a mapping open while a session is active. An ``easy`` LAN's full-cone map keeps its own
        ``NAT_TIMEOUT``, so it is refused there, as is ``none`` (no NAT)."""
        lan = self.lans[name]
        if lan.spec.nat in ("none", "easy"):
            raise ValueError(f"LAN {name}: a {lan.spec.nat!r} router's UDP mappings are not conntrack's")
        if not 1 <= seconds <= 3600:
            raise ValueError(f"{seconds}: want 1..3600 seconds")
        for r in lan.routers:
            r.sh(f"sysctl -qw net.netfilter.nf_conntrack_udp_timeout={seconds} "
                 f"net.netfilter.nf_conntrack_udp_timeout_stream={seconds}")

    def udp_mappings(self, name: str) -> list[CtEntry]:
        """The UDP conntrack entries (mappings) of LAN ``name``'s outer router, with their time left."""
        return ct_entries(self.lans[name].routers[0], "udp")

    def restart_mapping(self, name: str, port_range: tuple[int, int]) -> None:
        """LAN ``name``'s (outer) router restarts with its address kept: every UDP mapping is lost
        (its UDP conntrack entries are deleted; TCP ones stay) and new ones take ports from
        ``port_range`` (``masquerade to :lo-hi`` for UDP; TCP keeps plain masquerade), so a node's
        next packet leaves from a new port — the port-only rebinding of a NAT reboot or a conntrack
        flush. Pick a range disjoint from the
        nodes' own ports (masquerade keeps a source port that is already in the range)."""
        lan = self.lans[name]
        lo, hi = port_range
        if lan.spec.nat == "none":
            raise ValueError("a `none` LAN has no NAT to restart")
        if not 1024 <= lo <= hi <= 65535:
            raise ValueError(f"{port_range}: want 1024 <= lo <= hi <= 65535")
        outer = lan.routers[0]
        flags = " random" if lan.spec.nat == "hard" else ""
        chain = 'add rule ip natlab postrouting oifname "wan"'
        _nft(outer, f"flush chain ip natlab postrouting\n"
                    f"{chain} meta l4proto udp masquerade to :{lo}-{hi}{flags}\n{chain} masquerade{flags}\n")
        ct_flush(outer, "udp")  # after the new rule: any entry made since already has a new port


def _rebind_addr(addr: str) -> str:
    """``addr`` if it is a free host address of the internet segment (203.0.113.64-254)."""
    if not (addr.startswith("203.0.113.") and 64 <= int(addr.rsplit(".", 1)[1]) <= 254):
        raise ValueError(f"{addr}: pick a rebind address in 203.0.113.64-254")
    return addr


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


def _link(a: Netns, a_if: str, b: Netns, b_if: str, mtu: int | None) -> None:
    """A veth pair ``a_if`` (in a) — ``b_if`` (in b), both up, with ``mtu`` if given."""
    _ip("link", "add", a_if, "netns", a.name, "type", "veth", "peer", "name", b_if, "netns", b.name)
    for ns, ifname in ((a, a_if), (b, b_if)):
        if mtu is not None:
            _ip("-n", ns.name, "link", "set", ifname, "mtu", str(mtu))
        _ip("-n", ns.name, "link", "set", ifname, "up")


def _addr(ns: Netns, ifname: str, cidr: str) -> None:
    _ip("-n", ns.name, "addr", "add", cidr, "dev", ifname)


def nft_rules(nat: NatType, wan: str = "wan", lan: str = "lan", lan_services: bool = False,
              router_stun: Sequence[tuple[str, int]] = (),
              forward_udp: tuple[str, int] | None = None) -> str:
    """The router's nftables ruleset for ``nat`` (``wan``/``lan``: its interfaces; ``lan_services``:
    the LAN may reach the router's own services, as miniupnpd's NAT-PMP/PCP, SSDP and HTTP;
    ``router_stun``: the RFC 5780 server sockets the router's own miniupnpd STUN-tests against;
    ``forward_udp``: ``(inside address, port)`` of a static UDP port forward from WAN:port)."""
    if nat == "none":
        return ""  # a plain router: public addresses behind it, nothing filtered
    masq = "masquerade random" if nat == "hard" else "masquerade"
    eim_map = eim_update = eim_dnat = ""
    if nat == "easy":
        eim_map = (f"  map eim {{\n    type inet_service : ipv4_addr\n    flags dynamic,timeout\n"
                   f"    timeout {NAT_TIMEOUT}s\n  }}\n")
        # learned from every outbound UDP packet (before the established shortcut: refreshes it)
        eim_update = f'    iifname "{lan}" meta l4proto udp update @eim {{ udp sport : ip saddr }}\n'
        eim_dnat = f'    iifname "{wan}" meta l4proto udp dnat ip to udp dport map @eim\n'
    udp_drop = ""
    if nat == "udp_blocked":
        udp_drop = "    meta l4proto udp drop\n"
    stun_in = stun_out = ""
    if router_stun:
        grid = ", ".join(f"{a} . {p}" for a, p in router_stun)
        # miniupnpd's STUN test: the answers from the server's other IP and/or port are new flows
        # to conntrack (only the no-change answer is "established"), so its input lets them in ...
        stun_in = f'    iifname "{wan}" ip saddr . udp sport {{ {grid} }} accept\n'
        # ... and the router's own requests keep their source port (a router does not NAT itself;
        # ``masquerade random`` would, and miniupnpd would read that as a symmetric NAT)
        stun_out = f'    oifname "{wan}" fib saddr type local ip daddr . udp dport {{ {grid} }} accept\n'
    fwd_dnat = fwd_accept = ""
    if forward_udp is not None:  # a static port forward: DNAT in, and let exactly that in
        inside, port = forward_udp
        fwd_dnat = f'    iifname "{wan}" udp dport {port} dnat ip to {inside}:{port}\n'
        fwd_accept = f'    iifname "{wan}" ip daddr {inside} udp dport {port} ct status dnat accept\n'
    return (
        "table ip natlab {\n"
        f"{eim_map}"
        "  chain forward {\n"
        "    type filter hook forward priority filter; policy drop;\n"
        f"{udp_drop}{eim_update}"
        "    ct state established,related accept\n"
        f"{fwd_accept}"
        f'    iifname "{wan}" ct status dnat accept\n'
        f'    iifname "{lan}" oifname "{wan}" accept\n'
        "  }\n"
        "  chain input {\n"
        "    type filter hook input priority filter; policy drop;\n"
        '    iifname "lo" accept\n'
        "    ct state established,related accept\n"
        f'    iifname "{lan}" meta l4proto icmp accept\n'
        + (f'    iifname "{lan}" accept\n' if lan_services else "") + stun_in +
        "  }\n"
        "  chain prerouting {\n"
        "    type nat hook prerouting priority dstnat;\n"
        f"{fwd_dnat}{eim_dnat}"
        "  }\n"
        "  chain postrouting {\n"
        "    type nat hook postrouting priority srcnat;\n"
        f'{stun_out}    oifname "{wan}" {masq}\n'
        "  }\n"
        "}\n")


def _nft(ns: Netns, rules: str) -> None:
    if rules:
        out = subprocess.run(["ip", "netns", "exec", ns.name, "nft", "-f", "-"], input=rules, text=True,
                             capture_output=True)
        if out.returncode != 0:
            raise RuntimeError(f"nft in {ns.name}: {out.stderr.strip()}\n{rules}")


def _name(lab_id: str, role: str) -> str:
    return f"{PREFIX}-{lab_id}-{role}"


@contextlib.contextmanager
def nat_lab(*specs: LanSpec) -> Iterator[NatLab]:
    """Build the lab of ``specs`` (LAN names unique); everything is torn down on exit."""
    if len({s.name for s in specs}) != len(specs):
        raise ValueError("LAN names must be unique")
    if len(specs) > 16:
        raise ValueError("at most 16 LANs")
    lab_id = f"{os.getpid()}-{next(_lab_counter)}"
    made: list[Netns] = []
    reflectors: Reflectors | None = None
    daemons: list[Miniupnpd] = []
    upnp_any = any(s.upnp for s in specs)
    workdir = Path(tempfile.mkdtemp(prefix="natlab")) if upnp_any else None

    def ns(role: str) -> Netns:
        n = Netns(_name(lab_id, role))
        made.append(n)
        return n

    try:
        internet = ns("inet")
        internet.sh("ip link add inet0 type bridge && ip link set inet0 up && "
                    f"ip addr add {INTERNET_ADDR}/24 dev inet0 && ip addr add {SECOND_ADDR}/24 dev inet0 && "
                    "sysctl -qw net.ipv4.ip_forward=0")
        # the reflectors answer before any router's miniupnpd runs its STUN test
        reflectors = Reflectors(internet, REFLECTOR_ADDRS)
        lans: dict[str, Lan] = {}
        public_routes: list[tuple[str, str]] = []  # (prefix, via) for ``none`` LANs
        for i, spec in enumerate(specs):
            wan_addr = f"203.0.113.{10 + i}"
            outer = ns(f"r{i}")
            _link(outer, "wan", internet, f"w{i}", spec.wan_mtu or spec.mtu)
            _ip("-n", internet.name, "link", "set", f"w{i}", "master", "inet0")
            _addr(outer, "wan", f"{wan_addr}/24")
            routers = [outer]
            gw_side = outer
            if spec.nat == "double":
                inner = ns(f"r{i}b")
                _link(outer, "lan", inner, "wan", spec.mtu)
                _addr(outer, "lan", f"10.200.{i}.1/24")
                _addr(inner, "wan", f"10.200.{i}.2/24")
                inner.sh(f"ip route add {INTERNET_NET} via 10.200.{i}.1")
                routers.append(inner)
                gw_side = inner
            if spec.nat == "none":  # a public /28 of 198.51.100.0/24 (RFC 5737), routed by this router
                net3, gw, first, plen = "198.51.100", f"198.51.100.{16 * i + 1}", 16 * i + 2, 28
                public_routes.append((f"198.51.100.{16 * i}/28", wan_addr))
            else:
                net3, gw, first, plen = f"10.{1 + i}.0", f"10.{1 + i}.0.1", 10, 24
            nodes, addrs = [], []
            for k in range(spec.nodes):
                node = ns(f"n{i}{chr(ord('a') + k)}")
                addr = f"{net3}.{first + k}"
                _link(gw_side, f"lan{k}" if spec.nodes > 1 else "lan", node, "eth0", spec.mtu)
                _addr(node, "eth0", f"{addr}/{plen}")
                node.sh(f"ip route add default via {gw}")
                nodes.append(node)
                addrs.append(addr)
            if spec.nodes > 1:  # one LAN: a bridge on the router joins the nodes' links; what it
                # switches stays off the router's forward hook (br_netfilter would filter it there)
                gw_side.sh("ip link add lan type bridge && ip link set lan up && " + " && ".join(
                    f"ip link set lan{k} master lan" for k in range(spec.nodes)))
                gw_side.sh("sysctl -qw net.bridge.bridge-nf-call-iptables=0", check=False)
            _addr(gw_side, "lan", f"{gw}/{plen}")
            for r in routers:
                r.sh("sysctl -qw net.ipv4.ip_forward=1")
            if spec.nat == "double":
                _nft(outer, nft_rules("filtering"))
                _nft(routers[1], nft_rules("filtering"))
            else:
                fwd = (addrs[0], spec.forward_udp) if spec.forward_udp is not None else None
                _nft(outer, nft_rules(spec.nat, lan_services=spec.upnp,
                                      router_stun=REFLECTOR_ADDRS if spec.upnp else (), forward_udp=fwd))
            daemon = None
            if spec.upnp:
                assert workdir is not None
                _nft(outer, miniupnpd_chains(UPNP_TABLE))
                daemon = Miniupnpd(outer, workdir / spec.name, "wan", "lan", UPNP_TABLE, f"{net3}.0/24",
                                   stun=REFLECTOR_ADDRS[0])
                daemons.append(daemon)
                daemon.start()
            lans[spec.name] = Lan(spec=spec, nodes=nodes, node_addrs=addrs, routers=routers,
                                  wan_addr=addrs[0] if spec.nat == "none" else wan_addr, gateway=gw,
                                  upnp=daemon)
        for cidr, via in public_routes:  # the internet and every other router reach public LANs
            for lan in lans.values():
                if lan.routers[0].sh("ip -o addr show dev wan").find(f" {via}/") < 0:
                    _ip("-n", lan.routers[0].name, "route", "add", cidr, "via", via)
            _ip("-n", internet.name, "route", "add", cidr, "via", via)
        lab = NatLab(internet=internet, lans=lans, reflectors=reflectors, all_ns=made)
        lab.assert_sealed()
        yield lab
    finally:
        for d in daemons:
            d.stop()  # SIGTERM: it deletes its rules first
        if reflectors is not None:
            reflectors.close()
        for n in reversed(made):
            n.close()
        if workdir is not None:
            shutil.rmtree(workdir, ignore_errors=True)


def sweep_stale(prefix: str = PREFIX) -> list[str]:
    """Delete the namespaces of labs whose creating process is gone (a crashed run); their names."""
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    gone = []
    for line in out.splitlines():
        name = line.split()[0] if line.split() else ""
        m = re.match(rf"^{re.escape(prefix)}-(\d+)-", name)
        if m is None:
            continue
        pid = int(m.group(1))
        if pid == os.getpid() or os.path.exists(f"/proc/{pid}"):
            continue
        pids = subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True).stdout
        for p in pids.split():
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(p), 9)
        subprocess.run(["ip", "netns", "del", name], capture_output=True)
        subprocess.run(["rm", "-rf", f"/etc/netns/{name}"], capture_output=True)
        gone.append(name)
    return gone


def main(argv: Sequence[str]) -> int:
    if list(argv) == ["sweep"]:
        for name in sweep_stale():
            print(f"deleted {name}")
        return 0
    print("usage: python -m pytsnet.testing.natlab sweep")
    return 2


if __name__ == "__main__":
    import sys
    raise SystemExit(main(sys.argv[1:]))
