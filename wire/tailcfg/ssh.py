"""Tailscale SSH policy as the netmap carries it (``tailcfg.SSHPolicy`` and its parts, Go's JSON names).

A MapResponse's ``SSHPolicy`` replaces the previous one when present (nil: unchanged). Control compiles
the tailnet policy's ``ssh`` section into it per destination node; the node evaluates it for each
incoming SSH connection (:mod:`pytsnet.wire.ssh_policy`). Go's lists hold pointers, so ``null``
entries are tolerated (and skipped when evaluating, as Go does).
"""

from __future__ import annotations

from datetime import datetime

from pytsnet.wire.tailcfg.base import GoModel

__all__ = ["SSHAction", "SSHPolicy", "SSHPrincipal", "SSHRule"]


class SSHPrincipal(GoModel):
    """Who a rule is for: any of the set fields matching the connection's identity matches."""

    node: str = ""
    """A ``StableNodeID``."""
    nodeIP: str = ""
    userLogin: str = ""
    any: bool = False
    pubKeys: list[str] = []
    """Go's ``UnusedPubKeys``: ignored, as Go ignores it."""


class SSHAction(GoModel):
    """What to do with a matching connection: exactly one of accept, reject or hold-and-delegate."""

    go_always = frozenset({"onRecordingFailure"})  # a pointer in Go: only nil (None here) is omitted

    message: str = ""
    reject: bool = False
    accept: bool = False
    sessionDuration: int = 0
    """Nanoseconds (Go ``time.Duration``, ``format:nano``); 0: no limit."""
    allowAgentForwarding: bool = False
    holdAndDelegate: str = ""
    """Check mode: a URL the node fetches (over its control connection) for the next action."""
    allowLocalPortForwarding: bool = False
    allowRemotePortForwarding: bool = False
    recorders: list[str] = []
    onRecordingFailure: dict[str, str] | None = None


class SSHRule(GoModel):
    go_always = frozenset({"principals", "sshUsers", "action"})
    ruleExpires: datetime | None = None
    principals: list[SSHPrincipal | None] = []
    sshUsers: dict[str, str] = {}
    """Requested SSH user → local user; ``"*"`` any other user; a value ``"="`` the same name; ``""``
    refused. Ignored for reject rules."""
    action: SSHAction | None = None
    acceptEnv: list[str] = []


class SSHPolicy(GoModel):
    go_always = frozenset({"rules"})
    rules: list[SSHRule | None] = []
