"""A small access policy (a subset of Tailscale's ACL JSON) compiled into tailcfg FilterRules.

Policy file (``policy.json`` in the state dir, plain JSON: Tailscale's HuJSON comments and trailing
commas are refused; absent ⇒ everyone in the tailnet may reach everyone)::

    {"groups": {"group:eng": ["alice@localnet"]},
     "acls": [{"action": "accept", "src": ["group:eng", "tag:ci"], "dst": ["tag:web:80,443", "*:*"]}],
     "dns": {"magicDNS": true, "searchDomains": ["corp.example"],
             "routes": {"corp.example": ["100.64.0.5", "100.64.0.6:5353"], "lab.internal": []},
             "extraRecords": [{"name": "app.lab.internal", "type": "A", "value": "100.64.0.3"}]}}

``dns`` (our addition: Tailscale keeps DNS settings in its admin console, not the ACL file) becomes
every netmap's ``DNSConfig``: MagicDNS on unless ``magicDNS`` is false, the tailnet domain first among
the search domains, split DNS ``routes`` (an empty list: answered from ``extraRecords`` only), and
``extraRecords`` (``type`` "", "A" or "AAAA"; ``value`` an IP address). No default upstream resolvers.

Selectors: ``*``, ``tag:NAME``, ``group:NAME``, a user's login name, ``autogroup:member`` (untagged
nodes), an IP or CIDR (host bits clear; sent in canonical form, since a node refuses a whole filter
for one IP it cannot parse; a CIDR destination such as ``10.1.2.0/24:*`` lets sources reach a subnet
route), and, as a destination only, ``autogroup:internet`` (traffic through exit nodes): rendered as
:data:`INTERNET` (headscale's ``TheInternet``: all IPv4 and 2000::/3 minus private, link-local and the
tailnet's ranges; Tailscale's control renders it likewise but does not publish its list). Ports:
``*``, ``N``, ``N-M``, comma-separated, ASCII decimal. A node without a packet filter accepts nothing
inbound, so the compiled list is always sent, even when empty.

``grants`` (Tailscale's newer rule form; 20h) carry network-layer rules only::

    "grants": [{"src": ["group:eng"], "dst": ["svc:web", "tag:db"], "ip": ["tcp:80", "443", "icmp:*"]}]

``ip`` entries are ``*`` (every port, TCP/UDP/ICMP), ``PORTS`` (the same protocols) or ``PROTO:PORTS``
with PROTO ``tcp``, ``udp`` or ``icmp`` (IPv4 and IPv6 ICMP); each entry becomes one FilterRule with that
``IPProto``. ``app``, ``via`` and ``srcPosture`` are refused (never silently ignored: ignoring one
would widen or change what a grant means). ``svc:NAME`` — a Tailscale Service, as Tailscale's policy
names services — is a destination in grants only (Tailscale defines service access with grants; in
``acls`` it is refused): it stands for the service's VIP address(es) as ``DstPorts``, so peers' filters
and the hosting node's filter (which owns the VIP) accept exactly those ports. A VIP that no rule names
(and no ``*`` destination covers) is not reachable: fail closed; a ``svc:`` name the tailnet does not
define matches nothing.

``autoApprovers`` (Tailscale's spelling) approves routes when a node advertises them::

    "autoApprovers": {"routes": {"10.0.0.0/8": ["tag:router", "group:eng"]}, "exitNode": ["tag:exit"]}

A node whose owner matches (its tags if tagged, else its user, a group holding the user, or
``autogroup:member``) gets its advertised subnet routes inside a listed prefix approved, and its exit
routes (0.0.0.0/0, ::/0) approved by ``exitNode``. Applied when a node advertises a route it did not
advertise before (stored like an admin's approval, which ``nodes approve-routes`` can then change).

``ssh`` (Tailscale SSH, 22b) becomes each node's ``SSHPolicy`` (:meth:`Policy.ssh_policy`)::

    "ssh": [{"action": "accept", "src": ["group:eng"], "dst": ["tag:server"], "users": ["autogroup:nonroot"],
             "acceptEnv": ["LANG"]}]

``src``: selectors as in ``acls`` (``*`` → an ``any`` principal, others → the nodes' tailnet IPs);
``dst``: the nodes the rule goes to (``*`` is every node); ``users``: local user names,
``autogroup:nonroot`` (any user but root, as itself) or ``*`` (any user, as itself). ``action``
``accept``, or ``check`` (22d) with an optional ``checkPeriod`` (``"12h"`` default, Go-style ``1h30m``,
or ``"always"``): the rule's action is a hold-and-delegate to control's ``/machine/ssh/action/...``
(:data:`SSH_CHECK_URL`), which waits until the admin decides (``LocalTailnet.decide_ssh_check``).
Without an ``ssh`` section no node gets an ``SSHPolicy`` (Tailscale SSH then refuses everyone); with
one, every node gets one (maybe no rules).
The packet filter is not widened: ``acls``/``grants`` must also let the sources reach port 22.

``taildrop`` (22a; Tailscale keeps Taildrop sharing in its admin console) lets nodes send files to
other users' nodes::

    "taildrop": [{"src": ["mallory@example.com"], "dst": ["admin@localnet", "tag:inbox"]}]

Each entry gives the receivers the peer capability ``https://tailscale.com/cap/file-sharing-target``
towards the senders (their ``FileTargets``) and the senders ``https://tailscale.com/cap/file-send``
towards the receivers (Go's ``canPutFile``), as ``CapGrant`` rules in every packet filter. Without
entries, Taildrop is Tailscale's default: between the untagged nodes of one user. The ACLs still
decide whether a sender reaches the receiver's peerAPI port.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytsnet.localnet.store import Node, User

POLICY_FILE = "policy.json"
INTERNET_SELECTOR = "autogroup:internet"


def _internet() -> list[str]:
    """``autogroup:internet`` as prefixes: headscale's ``util.TheInternet`` (all IPv4 and 2000::/3,
    minus RFC 1918, fc00::/7, CGNAT 100.64.0.0/10, the tailnet's ULA and link-local ranges)."""
    out: list[str] = []
    keep: list[tuple[str, list[str]]] = [
        ("0.0.0.0/0", ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "169.254.0.0/16"]),
        ("2000::/3", ["fc00::/7", "fe80::/10", "fd7a:115c:a1e0::/48"])]
    for whole, minus in keep:
        nets = [ipaddress.ip_network(whole)]
        for m in map(ipaddress.ip_network, minus):
            nets = [piece for n in nets for piece in
                    ((n,) if not n.overlaps(m) else n.address_exclude(m) if m.subnet_of(n) else ())]  # type: ignore[arg-type]
        out += [str(n) for n in ipaddress.collapse_addresses(nets)]  # type: ignore[type-var]
    return out


#: ``autogroup:internet`` as it goes into ``FilterRule.DstPorts`` (see the module docstring).
INTERNET: tuple[str, ...] = tuple(_internet())
ALL_PORTS = {"First": 0, "Last": 65535}
#: Go's ``tailcfg.FilterAllowAll``.
FILTER_ALLOW_ALL: list[dict[str, Any]] = [{"SrcIPs": ["*"], "DstPorts": [{"IP": "*", "Ports": ALL_PORTS}]}]


class PolicyError(ValueError):
    """The policy file is malformed; the message names the offending entry."""


@dataclass(frozen=True)
class Rule:
    src: tuple[str, ...]
    dst: tuple[tuple[str, tuple[tuple[int, int], ...]], ...]  # (selector, port ranges)
    protos: tuple[int, ...] = ()
    """``FilterRule.IPProto`` (empty: Go's default TCP, UDP and ICMP); set by grants' ``ip``."""


SERVICE_PREFIX = "svc:"
#: grants' ``ip`` protocol names → IP protocol numbers (``icmp``: ICMPv4 and ICMPv6).
_PROTOS: dict[str, tuple[int, ...]] = {"tcp": (6,), "udp": (17,), "icmp": (1, 58)}


@dataclass
class Policy:
    groups: dict[str, list[str]] = field(default_factory=dict)
    rules: list[Rule] | None = None  # None: allow all
    dns: DnsPolicy = field(default_factory=lambda: DnsPolicy())
    auto_routes: tuple[tuple[str, tuple[str, ...]], ...] = ()
    """``autoApprovers.routes``: (canonical prefix, owners)."""
    auto_exit: tuple[str, ...] = ()
    """``autoApprovers.exitNode``: owners whose nodes' exit routes are approved."""
    ssh: tuple[SshRule, ...] | None = None
    """``ssh`` rules (None: no ``ssh`` section, so no node gets an ``SSHPolicy``)."""
    taildrop: tuple[tuple[tuple[str, ...], tuple[str, ...]], ...] = ()
    """``taildrop``: (senders, receivers) selector pairs — who may send files to whom across users."""

    @classmethod
    def allow_all(cls) -> Policy:
        return cls()

    @classmethod
    def load(cls, state_dir: str | Path) -> Policy:
        path = Path(state_dir) / POLICY_FILE
        if not path.exists():
            return cls.allow_all()
        try:
            doc = json.loads(path.read_bytes().decode("utf-8"))
        except (OSError, ValueError, RecursionError) as e:  # RecursionError: absurdly deep nesting
            raise PolicyError(f"{path}: {_short(e)}") from None
        return cls.parse(doc)

    @classmethod
    def parse(cls, doc: object) -> Policy:
        if not isinstance(doc, dict):
            raise PolicyError("policy must be a JSON object")
        groups = doc.get("groups", {})
        if not isinstance(groups, dict) or not all(
                isinstance(k, str) and k.startswith("group:") and isinstance(v, list)
                and all(isinstance(m, str) for m in v) for k, v in groups.items()):
            raise PolicyError("groups must map 'group:NAME' to a list of login names")
        dns = DnsPolicy.parse(doc.get("dns", {}))
        taildrop = _parse_taildrop(doc.get("taildrop", []))  # 22a
        auto_routes, auto_exit = _parse_auto_approvers(doc.get("autoApprovers", {}))
        ssh = _parse_ssh(doc["ssh"]) if "ssh" in doc else None  # 22b
        acls, grants = doc.get("acls"), doc.get("grants")
        if acls is None and grants is None:
            return cls(groups=groups, dns=dns, auto_routes=auto_routes, auto_exit=auto_exit,
                       taildrop=taildrop, ssh=ssh)
        if not isinstance(acls if acls is not None else [], list):
            raise PolicyError("acls must be a list")
        if not isinstance(grants if grants is not None else [], list):
            raise PolicyError("grants must be a list")
        rules = [_parse_acl(i, a) for i, a in enumerate(acls or [])]
        rules += [r for i, g in enumerate(grants or []) for r in _parse_grant(i, g)]
        return cls(groups=groups, rules=rules, dns=dns, auto_routes=auto_routes, auto_exit=auto_exit,
                   taildrop=taildrop, ssh=ssh)

    def owns(self, sel: str, node: Node, logins: dict[int, str]) -> bool:
        """Whether owner selector ``sel`` (``autoApprovers``) covers ``node``: a tagged node by its
        tags only, an untagged one by its user, a group holding the user, or autogroup:member."""
        if node.tags:
            return sel in node.tags
        if sel.startswith("group:"):
            return logins.get(node.user_id) in set(self.groups.get(sel, []))
        return sel == "autogroup:member" or logins.get(node.user_id) == sel

    def auto_approved(self, node: Node, routes: Iterable[str], users: Iterable[User]) -> list[str]:
        """Which of ``routes`` (canonical prefixes ``node`` advertises) ``autoApprovers`` approves."""
        logins = {u.id: u.login_name for u in users}
        out = []
        for r in routes:
            net = ipaddress.ip_network(r)
            if r in ("0.0.0.0/0", "::/0"):
                owners: Iterable[str] = self.auto_exit
            else:
                owners = [o for p, os in self.auto_routes for o in os
                          if net.version == ipaddress.ip_network(p).version
                          and net.subnet_of(ipaddress.ip_network(p))]  # type: ignore[arg-type]
            if any(self.owns(o, node, logins) for o in owners):
                out.append(r)
        return out

    def filter_rules(self, nodes: Sequence[Node], users: Iterable[User],
                     services: Mapping[str, Sequence[str]] | None = None) -> list[dict[str, Any]]:
        """The packet filter (``[]tailcfg.FilterRule``) every node in the tailnet receives;
        ``services``: the tailnet's service names → their VIPs (``svc:`` destinations)."""
        logins = {u.id: u.login_name for u in users}
        svcs = services or {}
        if self.rules is None:
            return [dict(r) for r in FILTER_ALLOW_ALL] + self._taildrop_rules(nodes, logins, svcs)
        out: list[dict[str, Any]] = self._taildrop_rules(nodes, logins, svcs)
        for rule in self.rules:
            srcs = _dedup(ip for sel in rule.src for ip in self._resolve(sel, nodes, logins, svcs))
            dsts = [{"IP": ip, "Ports": {"First": lo, "Last": hi}}
                    for sel, ports in rule.dst for ip in _dedup(self._resolve(sel, nodes, logins, svcs))
                    for lo, hi in ports]
            if srcs and dsts:
                out.append({"SrcIPs": srcs, "DstPorts": dsts} | ({"IPProto": list(rule.protos)}
                                                                 if rule.protos else {}))
        return out

    def _taildrop_rules(self, nodes: Sequence[Node], logins: dict[int, str],
                        svcs: Mapping[str, Sequence[str]]) -> list[dict[str, Any]]:
        """Each ``taildrop`` entry as Tailscale's control grants it: the receivers hold
        ``file-sharing-target`` towards the senders (their ``FileTargets``), the senders hold
        ``file-send`` towards the receivers (the receiver's ``canPutFile``). Reaching the receiver's
        peerAPI port is still up to the ACLs."""
        out: list[dict[str, Any]] = []
        for srcs, dsts in self.taildrop:
            s_ips = _dedup(ip for sel in srcs for ip in self._resolve(sel, nodes, logins, svcs))
            d_ips = _dedup(ip for sel in dsts for ip in self._resolve(sel, nodes, logins, svcs))
            if not s_ips or not d_ips:
                continue
            out.append({"SrcIPs": d_ips, "CapGrant": [{"Dsts": [_host(ip) for ip in s_ips],
                                                       "CapMap": {PEER_CAP_FILE_TARGET: None}}]})
            out.append({"SrcIPs": s_ips, "CapGrant": [{"Dsts": [_host(ip) for ip in d_ips],
                                                       "CapMap": {PEER_CAP_FILE_SEND: None}}]})
        return out

    def _resolve(self, sel: str, nodes: Sequence[Node], logins: dict[int, str],
                 services: Mapping[str, Sequence[str]]) -> list[str]:
        if sel == "*":
            return ["*"]
        if sel.startswith(SERVICE_PREFIX):
            return list(services.get(sel, ()))  # a service the tailnet does not define: nothing
        if sel == INTERNET_SELECTOR:
            return list(INTERNET)
        if sel.startswith("group:"):
            members = set(self.groups.get(sel, []))
            return [ip for n in nodes if not n.tags and logins.get(n.user_id) in members for ip in _ips(n)]
        if sel.startswith("tag:"):
            return [ip for n in nodes if sel in n.tags for ip in _ips(n)]
        if sel == "autogroup:member":
            return [ip for n in nodes if not n.tags for ip in _ips(n)]
        if "@" in sel:
            return [ip for n in nodes if not n.tags and logins.get(n.user_id) == sel for ip in _ips(n)]
        return [sel]  # validated as IP/CIDR at parse time


    def ssh_policies(self, nodes: Sequence[Node], users: Iterable[User]) -> dict[int, dict[str, Any]]:
        """Node ID → its ``tailcfg.SSHPolicy`` JSON (the rules whose ``dst`` covers it, in file order);
        empty without an ``ssh`` section."""
        if self.ssh is None:
            return {}
        logins = {u.id: u.login_name for u in users}
        out: dict[int, dict[str, Any]] = {n.id: {"rules": []} for n in nodes}
        for rule in self.ssh:
            principals: list[dict[str, Any]] = []
            for sel in rule.src:
                if sel == "*":
                    principals.append({"any": True})
                else:
                    principals += [{"nodeIP": ip} for ip in _dedup(self._resolve(sel, nodes, logins, {}))]
            if not principals:
                continue
            dsts = {ip for sel in rule.dst for ip in self._resolve(sel, nodes, logins, {})}
            action: dict[str, Any] = {"accept": True, "allowAgentForwarding": True,
                                      "allowLocalPortForwarding": True, "allowRemotePortForwarding": True}
            if rule.check_period is not None:  # 22d: check mode
                action = {"holdAndDelegate": SSH_CHECK_URL.format(period=rule.check_period),
                          "message": SSH_CHECK_MESSAGE}
            compiled = {"principals": principals, "sshUsers": dict(rule.users), "action": action}
            if rule.accept_env:
                compiled["acceptEnv"] = list(rule.accept_env)
            for n in nodes:
                if "*" in dsts or any(ip in dsts for ip in _ips(n)):
                    out[n.id]["rules"].append(compiled)
        return out


@dataclass(frozen=True)
class DnsPolicy:
    """The tailnet's DNS settings (``dns`` in policy.json), sent as ``tailcfg.DNSConfig``."""

    magic_dns: bool = True
    search_domains: tuple[str, ...] = ()
    routes: tuple[tuple[str, tuple[str, ...]], ...] = ()
    extra_records: tuple[tuple[str, str, str], ...] = ()
    """(name, type, value)."""

    @classmethod
    def parse(cls, doc: object) -> DnsPolicy:
        if not isinstance(doc, dict):
            raise PolicyError("dns must be a JSON object")
        unknown = set(doc) - {"magicDNS", "searchDomains", "routes", "extraRecords"}
        if unknown:
            raise PolicyError(f"dns: unknown keys {sorted(unknown)}")
        magic = doc.get("magicDNS", True)
        if not isinstance(magic, bool):
            raise PolicyError("dns.magicDNS must be true or false")
        search = doc.get("searchDomains", [])
        if not isinstance(search, list) or not all(_is_domain(d) for d in search):
            raise PolicyError(f"dns.searchDomains must be a list of domain names: {_short(search)}")
        routes = doc.get("routes", {})
        if not isinstance(routes, dict):
            raise PolicyError("dns.routes must map a domain to a list of resolver addresses")
        parsed_routes = []
        for dom, addrs in routes.items():
            if not _is_domain(dom) or not isinstance(addrs, list):
                raise PolicyError(f"dns.routes[{_short(dom)}]: want a domain → a list of resolver addresses")
            for a in addrs:
                if not isinstance(a, str) or not _resolver_ok(a):
                    raise PolicyError(f"dns.routes[{dom}]: {_short(a)} is not an IP or IP:port")
            parsed_routes.append((dom.rstrip("."), tuple(addrs)))
        records = doc.get("extraRecords", [])
        if not isinstance(records, list):
            raise PolicyError("dns.extraRecords must be a list")
        parsed_records = []
        for i, r in enumerate(records):
            if not isinstance(r, dict) or not _is_domain(r.get("name")):
                raise PolicyError(f"dns.extraRecords[{i}]: want {{'name': domain, 'type': ..., 'value': IP}}")
            typ, value = r.get("type", ""), r.get("value")
            try:
                ip = ipaddress.ip_address(value) if isinstance(value, str) else None
            except ValueError:
                ip = None
            if ip is None or typ not in ("", {4: "A", 6: "AAAA"}[ip.version]):
                raise PolicyError(f"dns.extraRecords[{i}]: {_short(value)} is not an IP address of type "
                                  f"{_short(typ)}")
            parsed_records.append((r["name"].rstrip("."), typ, str(ip)))
        return cls(magic_dns=magic, search_domains=tuple(d.rstrip(".") for d in search),
                   routes=tuple(parsed_routes), extra_records=tuple(parsed_records))

    def dns_config(self, domain: str) -> dict[str, Any]:
        """``tailcfg.DNSConfig`` for a tailnet whose MagicDNS domain is ``domain``."""
        out: dict[str, Any] = {"Domains": list(dict.fromkeys([domain, *self.search_domains])),
                               "Proxied": self.magic_dns, "Resolvers": []}
        if self.routes:
            out["Routes"] = {dom: [{"Addr": a} for a in addrs] for dom, addrs in self.routes}
        if self.extra_records:
            out["ExtraRecords"] = [{"Name": n, "Type": t, "Value": v} for n, t, v in self.extra_records]
        return out


_DOMAIN = re.compile(r"(?=.{1,253}\.?$)([A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9])?\.)*"
                     r"[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9])?\.?")


def _is_domain(v: object) -> bool:
    return isinstance(v, str) and _DOMAIN.fullmatch(v) is not None


def _resolver_ok(addr: str) -> bool:
    try:
        ipaddress.ip_address(addr)
        return True
    except ValueError:
        pass
    host, sep, port = addr.rpartition(":")
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return bool(sep) and port.isdigit() and 0 < int(port) < 65536


def _ips(n: Node) -> list[str]:
    return [a for a in (n.ipv4, n.ipv6) if a]


def _dedup(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(items))


def _short(v: object) -> str:
    """A bounded one-line rendering of offending input for an error message."""
    text = v if isinstance(v, Exception) else repr(v)
    text = str(text).replace("\n", " ")
    return text if len(text) <= 80 else text[:77] + "..."


_SERVICE_LABEL = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")  # Go's ServiceName.Validate
_PORT = re.compile(r"[0-9]{1,5}")  # Go's strconv.ParseUint: ASCII digits, no sign, space or underscore


def _check_selector(sel: object, where: str, *, dst: bool = False, service: bool = False) -> str:
    if not isinstance(sel, str) or not sel:
        raise PolicyError(f"{where}: selector must be a non-empty string")
    if sel.startswith(SERVICE_PREFIX):
        if not (dst and service):
            raise PolicyError(f"{where}: {_short(sel)}: a service is a destination of grants only")
        if not _SERVICE_LABEL.fullmatch(sel.removeprefix(SERVICE_PREFIX)):
            raise PolicyError(f"{where}: {_short(sel)} is not a service name (svc:<dns-label>)")
        return sel
    if sel == "*" or sel.startswith(("tag:", "group:", "autogroup:")) or "@" in sel:
        if sel == INTERNET_SELECTOR and not dst:
            raise PolicyError(f"{where}: {sel} is only allowed as a destination")
        if sel.startswith("autogroup:") and sel not in ("autogroup:member", INTERNET_SELECTOR):
            raise PolicyError(f"{where}: unsupported {_short(sel)}")
        return sel
    if "%" in sel:
        raise PolicyError(f"{where}: {_short(sel)}: zoned addresses are not allowed")
    try:  # strict: host bits past the prefix are a typo; nodes (Go's too) refuse the whole filter for one
        net = ipaddress.ip_network(sel)
    except ValueError:
        raise PolicyError(f"{where}: {_short(sel)} is not a selector, IP or CIDR (host bits clear)") from None
    return str(net) if "/" in sel else str(net.network_address)  # canonical: 10.0.0.0/255.0.0.0 → /8


def _parse_ports(spec: str, where: str) -> tuple[tuple[int, int], ...]:
    if spec == "*":
        return ((0, 65535),)
    out = []
    for part in spec.split(","):
        lo_s, _, hi_s = part.partition("-")
        hi_s = hi_s or lo_s
        if not (_PORT.fullmatch(lo_s) and _PORT.fullmatch(hi_s)):
            raise PolicyError(f"{where}: bad port {_short(part)}")
        lo, hi = int(lo_s), int(hi_s)
        if not 0 <= lo <= hi <= 65535:
            raise PolicyError(f"{where}: bad port range {_short(part)}")
        out.append((lo, hi))
    return tuple(out)


def _parse_acl(i: int, acl: object) -> Rule:
    where = f"acls[{i}]"
    if not isinstance(acl, dict) or acl.get("action", "accept") != "accept":
        raise PolicyError(f"{where}: must be an object with action 'accept'")
    src, dst = acl.get("src"), acl.get("dst")
    if not isinstance(src, list) or not isinstance(dst, list):
        raise PolicyError(f"{where}: src and dst must be lists")
    srcs = tuple(_check_selector(s, where) for s in src)
    dsts = []
    for d in dst:
        if not isinstance(d, str) or ":" not in d:
            raise PolicyError(f"{where}: dst {_short(d)} must be SELECTOR:PORTS")
        sel, _, ports = d.rpartition(":")
        dsts.append((_check_selector(sel, where, dst=True), _parse_ports(ports, where)))
    return Rule(src=srcs, dst=tuple(dsts))


def _parse_grant(i: int, grant: object) -> list[Rule]:
    """One grant → one Rule per ``ip`` entry (each entry has its own protocol set)."""
    where = f"grants[{i}]"
    if not isinstance(grant, dict):
        raise PolicyError(f"{where}: must be an object with src, dst and ip")
    unknown = set(grant) - {"src", "dst", "ip"}
    if unknown:
        raise PolicyError(f"{where}: unsupported keys {sorted(unknown)} "
                          "(localnet grants are src/dst/ip only)")
    src, dst, ip = grant.get("src"), grant.get("dst"), grant.get("ip")
    if not isinstance(src, list) or not isinstance(dst, list) or not isinstance(ip, list) or not ip:
        raise PolicyError(f"{where}: src and dst must be lists, ip a non-empty list")
    srcs = tuple(_check_selector(s, where) for s in src)
    sels = tuple(_check_selector(d, where, dst=True, service=True) for d in dst)
    out = []
    for entry in ip:
        if not isinstance(entry, str):
            raise PolicyError(f"{where}: ip entry {_short(entry)} must be a string")
        proto, sep, ports = entry.partition(":")
        if not sep:
            proto, ports = "", entry
        if proto and proto not in _PROTOS:
            raise PolicyError(f"{where}: ip entry {_short(entry)}: protocol must be tcp, udp or icmp")
        ranges = _parse_ports(ports, where)
        out.append(Rule(src=srcs, dst=tuple((s, ranges) for s in sels), protos=_PROTOS.get(proto, ())))
    return out


@dataclass(frozen=True)
class SshRule:
    """One ``ssh`` entry: sources and destinations (selectors), the ``sshUsers`` map, ``acceptEnv``."""

    src: tuple[str, ...]
    dst: tuple[str, ...]
    users: tuple[tuple[str, str], ...]
    accept_env: tuple[str, ...] = ()
    check_period: int | None = None
    """22d: ``check`` rules: seconds an approval lasts for (source node, SSH user); 0 = ask every time;
    None: an ``accept`` rule."""


SSH_CHECK_URL = ("https://unused/machine/ssh/action/$SRC_NODE_ID/to/$DST_NODE_ID"
                 "?ssh_user=$SSH_USER&local_user=$LOCAL_USER&check_period={period}")
"""22d: the hold-and-delegate URL a ``check`` rule compiles to (Go-like; the node fills the variables)."""
SSH_CHECK_MESSAGE = ("# Tailscale SSH requires an additional check.\n"
                     "# Waiting for the tailnet admin to approve this login (localnet: decide_ssh_check).\n")
DEFAULT_CHECK_PERIOD = 12 * 3600
_DURATION = re.compile(r"(?:(\d{1,6})h)?(?:(\d{1,8})m)?(?:(\d{1,10})s)?")


def _check_period(v: object, where: str) -> int:
    """``checkPeriod``: ``"always"`` (0) or a Go duration of hours/minutes/seconds; default 12h."""
    if v is None:
        return DEFAULT_CHECK_PERIOD
    if v == "always":
        return 0
    m = _DURATION.fullmatch(v) if isinstance(v, str) and v else None
    if m is None or not any(m.groups()):
        raise PolicyError(f"{where}: checkPeriod must be 'always' or a duration like '12h' or '30m'")
    h, mi, s = (int(g or 0) for g in m.groups())
    return h * 3600 + mi * 60 + s


_SSH_USER = re.compile(r"[a-z_][a-z0-9_.-]{0,31}\$?", re.IGNORECASE)  # a POSIX-ish login name


def _ssh_users(users: object, where: str) -> tuple[tuple[str, str], ...]:
    if not isinstance(users, list) or not users:
        raise PolicyError(f"{where}: users must be a non-empty list")
    out: dict[str, str] = {}
    for u in users:
        if u == "autogroup:nonroot":
            out.setdefault("*", "=")
            out["root"] = out.get("root", "")
        elif u == "*":
            out["*"] = "="
        elif isinstance(u, str) and _SSH_USER.fullmatch(u):
            out[u] = u
        else:
            raise PolicyError(f"{where}: user {_short(u)} must be a login name, autogroup:nonroot or *")
    return tuple(out.items())


def _parse_ssh(doc: object) -> tuple[SshRule, ...]:
    if not isinstance(doc, list):
        raise PolicyError("ssh must be a list of rules")
    out = []
    for i, r in enumerate(doc):
        where = f"ssh[{i}]"
        if not isinstance(r, dict):
            raise PolicyError(f"{where}: must be an object with action, src, dst and users")
        unknown = set(r) - {"action", "src", "dst", "users", "acceptEnv", "checkPeriod"}
        if unknown:
            raise PolicyError(f"{where}: unsupported keys {sorted(unknown)}")
        if r.get("action") not in ("accept", "check"):
            raise PolicyError(f"{where}: action must be 'accept' or 'check'")
        if r.get("action") == "accept" and "checkPeriod" in r:
            raise PolicyError(f"{where}: checkPeriod is only for 'check' rules")
        period = _check_period(r.get("checkPeriod"), where) if r.get("action") == "check" else None
        src, dst, env = r.get("src"), r.get("dst"), r.get("acceptEnv", [])
        if not isinstance(src, list) or not isinstance(dst, list) or not src or not dst:
            raise PolicyError(f"{where}: src and dst must be non-empty lists")
        if not isinstance(env, list) or not all(isinstance(e, str) and e for e in env):
            raise PolicyError(f"{where}: acceptEnv must be a list of variable names or patterns")
        if INTERNET_SELECTOR in dst:
            raise PolicyError(f"{where}: {INTERNET_SELECTOR} is not an SSH destination")
        out.append(SshRule(src=tuple(_check_selector(s, where) for s in src),
                           dst=tuple(_check_selector(d, where, dst=True) for d in dst),
                           users=_ssh_users(r.get("users"), where), accept_env=tuple(env),
                           check_period=period))
    return tuple(out)
PEER_CAP_FILE_TARGET = "https://tailscale.com/cap/file-sharing-target"
PEER_CAP_FILE_SEND = "https://tailscale.com/cap/file-send"


def _host(ip: str) -> str:
    return ip if ip == "*" or "/" in ip else (f"{ip}/128" if ":" in ip else f"{ip}/32")


def _parse_taildrop(doc: object) -> tuple[tuple[tuple[str, ...], tuple[str, ...]], ...]:
    """``"taildrop": [{"src": [...], "dst": [...]}]`` (localnet's; Tailscale sets this in its admin
    console): ``src`` nodes may send files to ``dst`` nodes of other users."""
    if not isinstance(doc, list):
        raise PolicyError("taildrop must be a list of {src, dst}")
    out = []
    for i, entry in enumerate(doc):
        where = f"taildrop[{i}]"
        if not isinstance(entry, dict) or set(entry) - {"src", "dst"} or \
                not isinstance(entry.get("src"), list) or not isinstance(entry.get("dst"), list):
            raise PolicyError(f"{where}: must be an object with src and dst lists")
        out.append((tuple(_check_selector(s, where) for s in entry["src"]),
                    tuple(_check_selector(d, where) for d in entry["dst"])))
    return tuple(out)


def _check_owners(owners: object, where: str) -> tuple[str, ...]:
    """An ``autoApprovers`` owner list: tags, groups, users (login names) or autogroup:member."""
    if not isinstance(owners, list):
        raise PolicyError(f"{where}: want a list of owners (tag:NAME, group:NAME, user@domain)")
    for o in owners:
        if not isinstance(o, str) or not ((o.startswith(("tag:", "group:")) and len(o.split(":", 1)[1]) > 0)
                                          or o == "autogroup:member" or "@" in o):
            raise PolicyError(f"{where}: {_short(o)} is not an owner (tag:NAME, group:NAME, user@domain)")
    return tuple(owners)


def _parse_auto_approvers(doc: object) -> tuple[tuple[tuple[str, tuple[str, ...]], ...], tuple[str, ...]]:
    """``autoApprovers`` → (routes: (canonical prefix, owners)..., exitNode owners)."""
    if not isinstance(doc, dict):
        raise PolicyError("autoApprovers must be a JSON object")
    unknown = set(doc) - {"routes", "exitNode"}
    if unknown:
        raise PolicyError(f"autoApprovers: unknown keys {sorted(unknown)}")
    routes = doc.get("routes", {})
    if not isinstance(routes, dict):
        raise PolicyError("autoApprovers.routes must map a prefix to a list of owners")
    parsed = []
    for prefix, owners in routes.items():
        where = f"autoApprovers.routes[{_short(prefix)}]"
        if not isinstance(prefix, str) or "/" not in prefix or "%" in prefix:
            raise PolicyError(f"{where}: not a CIDR prefix")
        try:
            net = ipaddress.ip_network(prefix)
        except ValueError:
            raise PolicyError(f"{where}: not a CIDR prefix with host bits clear") from None
        parsed.append((str(net), _check_owners(owners, where)))
    return tuple(parsed), _check_owners(doc.get("exitNode", []), "autoApprovers.exitNode")
