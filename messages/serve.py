"""Messages of Serve (``actors/serve``): the manager's config asks, its port servers and connections.

Configs travel as Go's JSON text (``pytsnet.wire.serve`` reads and writes it): the bytes a trace
records are the ones Go's LocalAPI would carry. The facade asks the ``ServeManager``
``GetServeConfig``/``SetServeConfig`` (Go's ``ServeConfigETag`` and ``SetServeConfig(config, etag)``);
the manager owns the config (the state store's copy included) and tells each port server its slice
(``ServePortConfig``) when it changes or when the server says it (re)started (``ServePortHello``).
A port server's accept loop tells it ``ServeAccepted``; each connection reports to its port server
(``ServeConnEvent``) and tells itself when its session ended (``ServeConnDone``).
"""

from __future__ import annotations

from typing import Literal

from pytsnet.messages.base import Message, Request

__all__ = ["GetServeConfig", "GetServePortConfig", "ServeAccepted", "ServeConfigState", "ServeConnDone",
           "ServeConnEvent", "ServeConnEventKind", "ServeFunnelOffered", "ServePortConfig", "ServePortHello",
           "ServePortSpawn", "ServeSpawn", "ServeStatus", "ServeStatusRequest", "SetServeConfig",
           "SetServeConfigResult"]

ServeConnEventKind = Literal["request", "not_found", "bad_request", "backend_error", "tls_error", "forwarded",
                             "redirect", "text", "file", "proxied", "busy", "closed", "unknown_peer",
                             "funnel"]


class ServeSpawn(Message, tag="serve.spawn"):
    """The manager's, its port servers' and connections' configuration (shared, immutable)."""

    manager: str = "serve"
    ports: str = "serve.ports"
    """The supervisor of the per-port servers (``serve.port.<N>``)."""
    conns: str = "serve.conns"
    """The supervisor the per-connection actors are spawned under (never restarted)."""
    peers: str = "peers"
    dataplane: str = "dataplane"
    state_key: str = "_serve/default"
    """Where the config is kept in the state store (Go ``ipn.ServeConfigKey``: ``_serve/<profile>``)."""
    idle_timeout: float = 300.0
    """An HTTP connection with no request this long, or a write not taken, is closed."""
    backend_timeout: float = 10.0
    """Go dials a TCPForward backend with 10 s; a Proxy backend's answer gets as long to start."""
    cert_timeout: float = 60.0
    whois_timeout: float = 5.0
    max_connections: int = 256
    """Connections served at once per port; one more is accepted and closed at once (``busy``)."""
    control: str = "control"
    """20g: the ControlRunner, told ``Hostinfo.IngressEnabled``/``WireIngress`` as the config's
    ``AllowFunnel`` changes them."""


class ServePortSpawn(Message, tag="serve.port_spawn"):
    port: int
    server: str
    """This port server's name (``serve.port.<N>``, ``serve.svc.<label>.<N>`` for a service port)."""
    service: str = ""
    """The service (``svc:web``) whose VIP port this server serves; "" for the node's own port."""


class ServePortConfig(Message, tag="serve.port_config"):
    """One port's slice of the config (Go JSON: its ``TCP`` entry and the ``Web`` servers on it)."""

    port: int
    config: str
    service: str = ""


class GetServePortConfig(Request[ServePortConfig], tag="serve.get_port_config"):
    """A web connection asks its port server for the slice in force before each request (Go looks the
    config up per request): a keep-alive connection sees a change; a removed port answers nothing."""


class ServePortHello(Message, tag="serve.port_hello"):
    """A port server (re)started: the manager answers with its ``ServePortConfig``."""

    port: int
    server: str
    service: str = ""


class ServeAccepted(Message, tag="serve.accepted"):
    """A port server's accept loop took a connection."""


class ServeFunnelOffered(Message, tag="serve.funnel_offered"):
    """20g: a public connection for this port waits in the serve tree's ``FunnelInbox``."""

    port: int


class ServeConnEvent(Message, tag="serve.conn_event"):
    kind: ServeConnEventKind
    conn: str = ""
    n: int = 1


class ServeConnDone(Message, tag="serve.conn_done"):
    """A connection's session ended (``error``: why, when it did not end cleanly)."""

    error: str | None = None


class ServeConfigState(Message, tag="serve.config_state"):
    config: str = "null"
    """Go's JSON of the config in force (``pytsnet.wire.serve.to_go_json``; ``null``: none)."""
    etag: str = ""


class GetServeConfig(Request[ServeConfigState], tag="serve.get_config"):
    pass


class SetServeConfigResult(Message, tag="serve.set_config_result"):
    """``error`` is empty on success; ``etag_mismatch``: the If-Match ETag was not the current one (412)."""

    etag: str = ""
    error: str = ""
    etag_mismatch: bool = False


class SetServeConfig(Request[SetServeConfigResult], tag="serve.set_config"):
    """Replace the config (None: serve nothing); ``if_match`` non-empty: only if it is the current ETag."""

    config: str = "null"
    """Go's JSON (``pytsnet.wire.serve``), checked by the manager: a bad one is the result's error."""
    if_match: str = ""


class ServeStatus(Message, tag="serve.status"):
    ports: list[int] = []
    open: int = 0
    counters: dict[str, int] = {}


class ServeStatusRequest(Request[ServeStatus], tag="serve.status_request"):
    pass
