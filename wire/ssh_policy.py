"""Tailscale SSH authorization: the netmap's ``SSHPolicy`` evaluated for one connection (sans-IO).

Go's rules (``ssh/tailssh/tailssh.go`` ``evalSSHPolicy``/``matchRule``/``mapLocalUser``): the first rule
that is not nil, has an action, has not expired, has a principal matching the caller (``any``, its
stable node ID, its tailnet IP, or its user's login) and — unless it rejects — maps the requested SSH
user to a non-empty local user (``sshUsers[user]``, else ``sshUsers["*"]``; ``"="`` means the same
name) decides. No such rule: rejected ("rejected user" if some rule failed only on the user). No
policy at all: refused (Go does not run SSH without one).

Two moments, as in Go: :func:`admit` before the SSH banner, knowing only the caller (in Go the
packet filter, which control derives from the same rules, drops a caller no rule names before any
SSH byte), and :func:`evaluate` at authentication, once the SSH user is known. The caller passes
``now`` (no clock here).
"""

from __future__ import annotations

import ipaddress
import re
import urllib.parse
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from pytsnet.wire.tailcfg.ssh import SSHAction, SSHPolicy, SSHPrincipal, SSHRule

__all__ = ["Caller", "Decision", "EvalResult", "admit", "evaluate", "expand_delegate_url", "map_local_user"]


class EvalResult(StrEnum):
    NO_POLICY = "no policy"
    REJECTED = "rejected"
    REJECTED_USER = "rejected user"
    ACCEPTED = "accept"


@dataclass(frozen=True)
class Caller:
    """Who is connecting: the tailnet source address and the node/user control says own it."""

    src_ip: str
    node_stable_id: str = ""
    login_name: str = ""


@dataclass(frozen=True)
class Decision:
    result: EvalResult
    action: SSHAction | None = None
    """The matching rule's action (accept, reject or hold-and-delegate) when ``result`` is ACCEPTED."""
    local_user: str = ""
    accept_env: tuple[str, ...] = ()

    @property
    def accepted(self) -> bool:
        """The connection may proceed to a session now (an accept action, not a reject or a check)."""
        return self.result is EvalResult.ACCEPTED and self.action is not None and self.action.accept


def map_local_user(ssh_users: dict[str, str], requested: str) -> str:
    """Go ``mapLocalUser``: the local user ``requested`` maps to ("" = not permitted)."""
    v = ssh_users.get(requested)
    if v is None:
        v = ssh_users.get("*", "")
    return requested if v == "=" else v


def _same_ip(a: str, b: str) -> bool:
    try:
        ia, ib = ipaddress.ip_address(a), ipaddress.ip_address(b)
    except ValueError:
        return False
    if isinstance(ia, ipaddress.IPv6Address) and ia.ipv4_mapped is not None:
        ia = ia.ipv4_mapped
    if isinstance(ib, ipaddress.IPv6Address) and ib.ipv4_mapped is not None:
        ib = ib.ipv4_mapped
    return ia == ib


def _principal_matches(p: SSHPrincipal, c: Caller) -> bool:
    if p.any:
        return True
    if p.node and c.node_stable_id and p.node == c.node_stable_id:
        return True
    if p.nodeIP and _same_ip(p.nodeIP, c.src_ip):
        return True
    return bool(p.userLogin) and p.userLogin == c.login_name


def _live(r: SSHRule | None, c: Caller, now: datetime) -> SSHRule | None:
    """``r`` if it can decide for ``c``: present, with an action, not expired, a principal matching."""
    if r is None or r.action is None:
        return None
    if r.ruleExpires is not None and r.ruleExpires < now:
        return None
    if not any(p is not None and _principal_matches(p, c) for p in r.principals):
        return None
    return r


def evaluate(policy: SSHPolicy | None, caller: Caller, ssh_user: str, now: datetime) -> Decision:
    """Go ``evalSSHPolicy``: the first rule matching ``caller`` and ``ssh_user`` decides."""
    if policy is None:
        return Decision(EvalResult.NO_POLICY)
    failed_on_user = False
    for rule in policy.rules:
        r = _live(rule, caller, now)
        if r is None:
            continue
        assert r.action is not None
        local = ""
        if not r.action.reject:  # reject rules need no user mapping
            local = map_local_user(r.sshUsers, ssh_user)
            if not local:
                failed_on_user = True
                continue
        return Decision(EvalResult.ACCEPTED, r.action, local, tuple(r.acceptEnv))
    return Decision(EvalResult.REJECTED_USER if failed_on_user else EvalResult.REJECTED)


def admit(policy: SSHPolicy | None, caller: Caller, now: datetime) -> bool:
    """Before the banner: whether some SSH user could be accepted for ``caller``. False when there is
    no policy, no live rule names the caller, or the first one that does rejects (a reject rule
    ignores the user, so nothing later can match). A rule whose ``sshUsers`` maps nobody cannot
    accept anyone and is skipped, as :func:`evaluate` would for every user."""
    if policy is None:
        return False
    for rule in policy.rules:
        r = _live(rule, caller, now)
        if r is None:
            continue
        assert r.action is not None
        if r.action.reject:
            return False
        if any(v for v in r.sshUsers.values()):
            return True
    return False



_DELEGATE_VARS = re.compile(
    r"\$SRC_NODE_IP|\$SRC_NODE_ID|\$DST_NODE_IP|\$DST_NODE_ID|\$SSH_USER|\$LOCAL_USER")


def expand_delegate_url(url: str, *, src_ip: str, src_node_id: int, dst_ip: str, dst_node_id: int | None,
                        ssh_user: str, local_user: str) -> str:
    """Go ``expandDelegateURLLocked``: a ``holdAndDelegate`` URL with its variables filled in, in one
    pass (Go's ``strings.NewReplacer``: a value is never expanded again). IPs and users are
    query-escaped (``url.QueryEscape``); node IDs are decimal; no netmap (``dst_node_id`` None): ""."""
    values = {
        "$SRC_NODE_IP": urllib.parse.quote_plus(src_ip, safe=""),
        "$SRC_NODE_ID": str(src_node_id),
        "$DST_NODE_IP": urllib.parse.quote_plus(dst_ip, safe=""),
        "$DST_NODE_ID": "" if dst_node_id is None else str(dst_node_id),
        "$SSH_USER": urllib.parse.quote_plus(ssh_user, safe=""),
        "$LOCAL_USER": urllib.parse.quote_plus(local_user, safe=""),
    }
    return _DELEGATE_VARS.sub(lambda m: values[m.group(0)], url)
