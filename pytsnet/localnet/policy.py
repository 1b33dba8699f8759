"""A small access policy (a subset of Tailscale's ACL JSON) compiled into tailcfg FilterRules.

Policy file (``policy.json`` in the state dir, plain JSON: Tailscale's HuJSON comments and trailing
commas are refused; absent ⇒ everyone in the tailnet may reach everyone)::

    {"groups": {"group:eng": ["alice@localnet"]},
     "acls": [{"action": "accept", "src": ["group:eng", "tag:ci"], "dst": ["tag:web:80,443", "*:*"]}]}

Selectors: ``*``, ``tag:NAME``, ``group:NAME``, a user's login name, ``autogroup:member`` (untagged
nodes), an IP or CIDR (host bits clear; sent in canonical form, since a node refuses a whole filter
for one IP it cannot parse). Ports: ``*``, ``N``, ``N-M``, comma-separated, ASCII decimal. A node
without a packet filter accepts nothing inbound, so the compiled list is always sent, even when empty.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytsnet.localnet.store import Node, User

POLICY_FILE = "policy.json"
ALL_PORTS = {"First": 0, "Last": 65535}
#: Go's ``tailcfg.FilterAllowAll``.
FILTER_ALLOW_ALL: list[dict[str, Any]] = [{"SrcIPs": ["*"], "DstPorts": [{"IP": "*", "Ports": ALL_PORTS}]}]


class PolicyError(ValueError):
    """The policy file is malformed; the message names the offending entry."""


@dataclass(frozen=True)
class Rule:
    src: tuple[str, ...]
    dst: tuple[tuple[str, tuple[tuple[int, int], ...]], ...]  # (selector, port ranges)


@dataclass
class Policy:
    groups: dict[str, list[str]] = field(default_factory=dict)
    rules: list[Rule] | None = None  # None: allow all

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
        acls = doc.get("acls")
        if acls is None:
            return cls(groups=groups)
        if not isinstance(acls, list):
            raise PolicyError("acls must be a list")
        rules = [_parse_acl(i, a) for i, a in enumerate(acls)]
        return cls(groups=groups, rules=rules)

    def filter_rules(self, nodes: Sequence[Node], users: Iterable[User]) -> list[dict[str, Any]]:
        """The packet filter (``[]tailcfg.FilterRule``) every node in the tailnet receives."""
        if self.rules is None:
            return [dict(r) for r in FILTER_ALLOW_ALL]
        logins = {u.id: u.login_name for u in users}
        out: list[dict[str, Any]] = []
        for rule in self.rules:
            srcs = _dedup(ip for sel in rule.src for ip in self._resolve(sel, nodes, logins))
            dsts = [{"IP": ip, "Ports": {"First": lo, "Last": hi}}
                    for sel, ports in rule.dst for ip in _dedup(self._resolve(sel, nodes, logins))
                    for lo, hi in ports]
            if srcs and dsts:
                out.append({"SrcIPs": srcs, "DstPorts": dsts})
        return out

    def _resolve(self, sel: str, nodes: Sequence[Node], logins: dict[int, str]) -> list[str]:
        if sel == "*":
            return ["*"]
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


def _ips(n: Node) -> list[str]:
    return [a for a in (n.ipv4, n.ipv6) if a]


def _dedup(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(items))


def _short(v: object) -> str:
    """A bounded one-line rendering of offending input for an error message."""
    text = v if isinstance(v, Exception) else repr(v)
    text = str(text).replace("\n", " ")
    return text if len(text) <= 80 else text[:77] + "..."


_PORT = re.compile(r"[0-9]{1,5}")  # Go's strconv.ParseUint: ASCII digits, no sign, space or underscore


def _check_selector(sel: object, where: str) -> str:
    if not isinstance(sel, str) or not sel:
        raise PolicyError(f"{where}: selector must be a non-empty string")
    if sel == "*" or sel.startswith(("tag:", "group:", "autogroup:")) or "@" in sel:
        if sel.startswith("autogroup:") and sel != "autogroup:member":
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
        dsts.append((_check_selector(sel, where), _parse_ports(ports, where)))
    return Rule(src=srcs, dst=tuple(dsts))
