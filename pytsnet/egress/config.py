"""``EgressConfig``: every knob of the egress front end and its worker supervision, checked at start.

One frozen value the facade, the CLI and the tests build; ``check()`` refuses what cannot work before
any socket is bound — above all a listener on a non-loopback address without a proxy password (fail
closed: an open proxy onto a tailnet must not be reachable from the network).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass, field

from pytsnet.errors import PytsnetError

__all__ = ["EgressConfig", "EgressConfigError", "EgressEscalated", "parse_budget", "parse_hostport"]


class EgressConfigError(PytsnetError, ValueError):
    """A setting of the egress cannot work (bad address, open proxy on a non-loopback address…)."""


class EgressEscalated(PytsnetError, RuntimeError):
    """The restart budget was spent: the egress stopped taking flows (``reason`` says why)."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"egress escalated: {reason}")
        self.reason = reason


def parse_hostport(text: str) -> tuple[str, int]:
    """``HOST:PORT`` or ``[V6]:PORT`` → (host, port); ``EgressConfigError`` otherwise."""
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        ok = bool(sep) and rest.startswith(":")
        port_text = rest[1:]
    else:
        host, sep, port_text = text.rpartition(":")
        ok = bool(sep)
    if not ok or not host or not port_text.isdigit() or int(port_text) > 0xFFFF:
        raise EgressConfigError(f"not HOST:PORT: {text!r}")
    return host, int(port_text)


def parse_budget(text: str) -> tuple[int, float]:
    """``N/SECONDS`` (``5/60``) → (restarts, window)."""
    n, sep, window = text.partition("/")
    try:
        out = (int(n), float(window))
    except ValueError:
        raise EgressConfigError(f"restart budget is N/SECONDS, not {text!r}") from None
    if not sep or out[0] < 0 or out[1] <= 0:
        raise EgressConfigError(f"restart budget is N/SECONDS, not {text!r}")
    return out


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class EgressConfig:
    """What ``Egress`` runs. Listeners are ``HOST:PORT`` (port 0: any; see ``Egress.socks_address``)."""

    auth_key: str = field(default="", repr=False)
    control_url: str = ""
    workers: int = 1
    socks: str | None = None
    http: str | None = None
    status: str | None = None
    """``HOST:PORT`` of the status endpoint (JSON at ``/``, Prometheus text at ``/metrics``)."""
    proxy_password: str | None = field(default=None, repr=False)
    """SOCKS5 user ``tsnet`` / HTTP Basic ``tsnet:<pw>``; ``None``: open (loopback listeners only)."""
    exit_node: str | None = None
    upstream_proxy: str | None = field(default=None, repr=False)
    hostname_prefix: str = "egress"
    affinity: bool = False
    """Sticky per-client-IP dispatch: one client IP goes to the same worker while it is ready."""
    restart_budget: tuple[int, float] = (5, 60.0)
    """(restarts, seconds), counted across all slots: a systemic fault (bad auth key, control down)
    hits every slot at once, and the whole egress should give up as fast as one slot would."""
    backoff_initial: float = 0.2
    backoff_max: float = 5.0
    heartbeat_interval: float = 0.5
    heartbeat_timeout: float | None = None
    """``None``: 3 x ``heartbeat_interval``, at least 2 s."""
    start_timeout: float = 30.0
    """How long a new worker process may take to send its first frame (interpreter start and imports
    are not a hang: the heartbeat timeout applies from its first heartbeat on)."""
    drain_timeout: float = 30.0
    handshake_timeout: float = 10.0
    max_head: int = 16 * 1024
    max_handshakes: int = 256
    """Handshakes in progress at once; past it a new connection is closed at once (counted refused)."""
    ready_wait: float = 10.0
    """How long a finished handshake waits for a first ready worker before it is refused."""
    max_pending: int = 1024
    dial_timeout: float = 15.0
    idle_timeout: float = 7200.0
    up_timeout: float = 60.0
    log_level: str = "WARNING"
    bind_host: str = "0.0.0.0"
    """Each worker node's UDP bind address (``Config.bind_host``; tests on loopback use 127.0.0.1)."""
    max_flows_per_worker: int = 1024
    """Flows open at once in one worker; past it the worker refuses (SOCKS5 REP 01 / HTTP 503 busy)."""
    worker_command: Callable[[int], list[str]] | None = None
    """argv of a worker given its channel fd; ``None``: ``pytsnet.egress.worker.worker_command``."""

    @property
    def hb_timeout(self) -> float:
        if self.heartbeat_timeout is not None:
            return self.heartbeat_timeout
        return max(3 * self.heartbeat_interval, 2.0)

    def check(self) -> None:
        """``EgressConfigError`` for a setting that cannot work (before anything is bound)."""
        if self.workers < 1:
            raise EgressConfigError("workers must be at least 1")
        if self.worker_command is None and not self.auth_key:
            raise EgressConfigError("an auth key is required: each worker joins as an ephemeral node")
        if self.socks is None and self.http is None:
            raise EgressConfigError("no listener: give socks and/or http")
        for name in ("socks", "http", "status"):
            addr = getattr(self, name)
            if addr is None:
                continue
            host, _ = parse_hostport(addr)
            if name != "status" and not self.proxy_password and not _is_loopback(host):
                raise EgressConfigError(f"{name} listener on {host} (not loopback) without a proxy password: "
                                        "refused (give --proxy-password or PYTSNET_EGRESS_PASSWORD)")
        if self.heartbeat_interval <= 0 or self.hb_timeout <= self.heartbeat_interval:
            raise EgressConfigError("heartbeat timeout must exceed the heartbeat interval")
        if self.restart_budget[0] < 0 or self.restart_budget[1] <= 0:
            raise EgressConfigError("restart budget is (N >= 0, seconds > 0)")
