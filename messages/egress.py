"""Messages of the egress front end and its worker processes (``pytsnet/egress``, issue 23).

The front process accepts SOCKS5 and HTTP proxy clients, runs the handshake up to the request, and
hands the client's socket itself to a worker process (``SCM_RIGHTS``) with a ``FlowAssign``; each
worker runs one ephemeral ``ActorDevice`` and does the dial, the answer and the copy, so payload bytes
never cross the front process. These messages are the frames on the front↔worker channel
(``pytsnet.egress.channel``: one JSON frame per ``SOCK_SEQPACKET`` datagram) and what the status
endpoint serves. Order on a channel: front → ``WorkerSetup`` first; worker → ``WorkerReady`` once its
node is up, ``WorkerHeartbeat`` every ``heartbeat_interval`` from setup on (a silent worker is hung);
front → ``FlowAssign`` (+ one fd) per flow, worker → ``FlowDone`` when it ends; front →
``WorkerDrain``, worker → ``WorkerDrained`` after its node logged out, then it exits 0.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from pytsnet.messages.base import Message, Request
from pytsnet.messages.redact import Payload, secret_field

__all__ = [
    "EGRESS_TAGS",
    "Dispatch",
    "DrainRequest",
    "EgressProto",
    "EgressState",
    "EgressStatus",
    "FlowAssign",
    "FlowDone",
    "FlowOutcome",
    "FrontAccepted",
    "FrontCounters",
    "FrontEvent",
    "FrontTally",
    "HandshakeDone",
    "RouterTick",
    "SlotDrain",
    "SlotEof",
    "SlotFlow",
    "SlotFlowDone",
    "SlotFrame",
    "SlotLost",
    "SlotReport",
    "SlotRestart",
    "SlotSpawn",
    "SlotStopped",
    "SlotTick",
    "StatusRequest",
    "WorkerDrain",
    "WorkerDrained",
    "WorkerHeartbeat",
    "WorkerReady",
    "WorkerSetup",
    "WorkerState",
    "WorkerStatus",
]

AuthKeyText = Annotated[str, secret_field("egress:AuthKey"), Field(repr=False)]
ProxyUrlText = Annotated[str, secret_field("egress:UpstreamProxy")]
"""An upstream proxy URL may carry credentials (``socks5://user:pass@host:port``)."""

EgressProto = Literal["socks5", "http"]
"""``socks5``: the front parsed the request (``host``/``port``; ``early`` = bytes after it). ``http``:
``early`` is every byte the front read (the head, authorized, and what followed); the worker parses it
again (``HttpFront``) and answers a CONNECT or forwards a plain ``http://`` request."""


class WorkerSetup(Message, tag="egress.worker_setup"):
    """Front → worker, the first frame: what this worker's ephemeral node is and how it behaves."""

    worker: int
    """The slot (0..N-1); stable across restarts of that slot."""
    incarnation: int = 0
    """How many times this slot was started before (0 the first time)."""
    hostname: str
    control_url: str
    auth_key: AuthKeyText
    exit_node: str | None = None
    """Stable node ID, tailnet IP or MagicDNS name; ``None``: tailnet destinations only."""
    upstream_proxy: ProxyUrlText | None = Field(default=None, repr=False)
    """``socks5://[user:pass@]host:port`` or ``http://[user:pass@]host:port``, dialed through the
    tailnet (never the host network); every flow's target is then reached through it."""
    heartbeat_interval: float = 0.5
    dial_timeout: float = 15.0
    idle_timeout: float = 7200.0
    buffer: int = 64 * 1024
    max_head: int = 16 * 1024
    up_timeout: float = 60.0
    """The node must be up within this, else the worker exits non-zero (the front restarts it)."""
    log_level: str = "WARNING"
    bind_host: str = "0.0.0.0"
    """The node's UDP bind address (``Config.bind_host``; tests keep it on ``127.0.0.1``)."""
    max_flows: int = 1024
    """Flows open at once in this worker; past it a flow is refused (SOCKS5 REP 01 / HTTP 503 busy)."""


class WorkerReady(Message, tag="egress.worker_ready"):
    """Worker → front: the node is up and takes flows."""

    worker: int
    pid: int
    node_id: str
    ip: str
    exit_node: str | None = None


class WorkerHeartbeat(Message, tag="egress.heartbeat"):
    """Worker → front, every ``heartbeat_interval``: alive, and its counters."""

    worker: int
    seq: int
    flows_open: int = 0
    flows_total: int = 0
    bytes_up: int = 0
    """Client → target bytes this worker carried."""
    bytes_down: int = 0
    exit_node: str | None = None
    exit_ok: bool = True
    """False while a configured exit node is unavailable (flows are refused then)."""
    rss: int = 0
    """Resident set size of the worker process, bytes."""
    dropped: int = 0
    """Frames the worker dropped: undecodable, unexpected, or a ``FlowAssign`` without exactly one socket."""


class FlowAssign(Message, tag="egress.flow_assign"):
    """Front → worker with exactly one fd in the same frame: the client's connected socket."""

    flow: int
    proto: EgressProto
    host: str = ""
    port: int = 0
    early: Payload = b""
    client: str = ""
    """``ip:port`` of the proxy client (for logs and affinity)."""


FlowOutcome = Literal["ok", "refused", "dial_failed", "reset", "cut", "error"]


class FlowDone(Message, tag="egress.flow_done"):
    """Worker → front: a flow ended (``outcome`` ``ok`` for a clean end)."""

    flow: int
    outcome: FlowOutcome = "ok"
    error: str | None = None
    bytes_up: int = 0
    bytes_down: int = 0


class WorkerDrain(Message, tag="egress.drain"):
    """Front → worker: take no more flows; finish open ones within ``deadline`` seconds, cut the rest,
    log the node out, answer ``WorkerDrained`` and exit 0."""

    deadline: float = 30.0


class WorkerDrained(Message, tag="egress.drained"):
    worker: int
    finished: int = 0
    cut: int = 0
    logged_out: bool = False


EGRESS_TAGS = frozenset(m.TAG for m in (WorkerSetup, WorkerReady, WorkerHeartbeat, FlowAssign, FlowDone,
                                        WorkerDrain, WorkerDrained))
"""The only tags a channel frame may carry."""

WorkerState = Literal["starting", "ready", "draining", "backoff", "stopped", "failed"]
EgressState = Literal["starting", "running", "draining", "escalated", "stopped"]


class WorkerStatus(Message, tag="egress.worker_status"):
    worker: int
    state: WorkerState
    pid: int | None = None
    ip: str | None = None
    restarts: int = 0
    flows_open: int = 0
    flows_total: int = 0
    bytes_up: int = 0
    bytes_down: int = 0
    exit_node: str | None = None
    exit_ok: bool = True
    rss: int = 0
    heartbeat_age: float | None = None
    last_exit: str | None = None
    """Why the last incarnation ended (``exit 1``, ``signal 9``, ``hung``…)."""


class FrontCounters(Message, tag="egress.front_counters"):
    """The front process's own counters: it carries handshakes only, never payload."""

    accepted: int = 0
    assigned: int = 0
    refused: int = 0
    """Handshakes answered by the front itself (bad request, auth, no worker ready, draining)."""
    bytes_in: int = 0
    """Bytes the front read from clients (handshakes only)."""
    bytes_out: int = 0
    """Bytes the front wrote to clients (handshake answers and its own refusals only)."""
    flows_failed_by_worker_loss: int = 0


class EgressStatus(Message, tag="egress.status"):
    """What ``--status`` serves as JSON (``/``) and as Prometheus text (``/metrics``)."""

    state: EgressState
    reason: str | None = None
    """Why it escalated or stopped."""
    workers: list[WorkerStatus] = Field(default_factory=list)
    front: FrontCounters = Field(default_factory=FrontCounters)


# -- the front process's own actors (``pytsnet/egress/front.py``, ``supervisor.py``) ------------------------
# The router, the per-slot actors and the handshakes talk only through these. An ``fd`` field is a
# descriptor number in the front process: whoever holds the message owns (and must close) it.
# -- handshake → router ----------------------------------------------------------------------------------
class Dispatch(Message, tag="egress.dispatch"):
    """Handshake → router: a finished handshake; ``fd`` is the client's socket (the router owns it now)."""

    proto: EgressProto
    host: str = ""
    port: int = 0
    early: Payload = b""
    client: str = ""
    fd: int


class FrontTally(Message, tag="egress.front_tally"):
    accepted: int = 0
    refused: int = 0
    bytes_in: int = 0
    bytes_out: int = 0


class DrainRequest(Message, tag="egress.drain_request"):
    deadline: float


class StatusRequest(Request[EgressStatus], tag="egress.status_request"):
    pass


class RouterTick(Message, tag="egress.router_tick"):
    pass


class FrontAccepted(Message, tag="egress.front_accepted"):
    pass


class FrontEvent(Message, tag="egress.front_event"):
    kind: str
    conn: str


class HandshakeDone(Message, tag="egress.handshake_done"):
    pass


# -- messages: router → slot ------------------------------------------------------------------------------
class SlotFlow(Message, tag="egress.slot_flow"):
    """Hand this flow to the worker; ``fd`` is the client's socket, owned by whoever holds the message."""

    assign: FlowAssign
    fd: int


class SlotRestart(Message, tag="egress.slot_restart"):
    """The router granted a restart (within the budget): start again after ``delay`` seconds."""

    delay: float


class SlotDrain(Message, tag="egress.slot_drain"):
    deadline: float


# -- messages: slot → router ------------------------------------------------------------------------------
class SlotReport(Message, tag="egress.slot_report"):
    status: WorkerStatus
    beat: bool = False
    """A heartbeat came (the router keeps its age)."""


class SlotFlowDone(Message, tag="egress.slot_flow_done"):
    worker: int
    flow: int
    outcome: FlowOutcome = "ok"
    front_bytes: int = 0
    """Bytes the front wrote itself (a refusal of a flow it could not hand over)."""


class SlotLost(Message, tag="egress.slot_lost"):
    """The worker process ended outside a drain; ``delay`` is the slot's backoff before a restart."""

    worker: int
    reason: str
    delay: float


class SlotStopped(Message, tag="egress.slot_stopped"):
    worker: int
    reason: str


# -- messages: a slot to itself ---------------------------------------------------------------------------
class SlotFrame(Message, tag="egress.slot_frame"):
    gen: int
    frame: WorkerReady | WorkerHeartbeat | FlowDone | WorkerDrained


class SlotEof(Message, tag="egress.slot_eof"):
    gen: int
    error: str


class SlotSpawn(Message, tag="egress.slot_spawn"):
    pass


class SlotTick(Message, tag="egress.slot_tick"):
    pass
