"""The LocalAPI's route table and handlers: sans-transport, shared by every way it is served.

``LocalApi.handle`` takes a parsed request and the caller's permissions and returns the answer;
the in-process ``LocalClient``, the unix socket and the loopback listener (``pytsnet.localapi.http``)
all go through it, so they cannot drift. Paths, methods, status codes and bodies are Go's
(ipn/localapi/localapi.go at v1.90.9): ``handlerForPath`` matches ``/localapi/v0/<name>`` exactly,
else by the prefix up to the first ``/`` (``cert/``); unknown → 404; read endpoints check
``PermitRead``, mutating ones ``PermitWrite`` (403 "<what> access denied"). Other parts add routes
with ``LocalApi.route``.
"""

from __future__ import annotations

import dataclasses
import io
import ipaddress
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import BinaryIO, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from pytsnet.localapi.backend import Backend, WhoIsNotFound, build_status, ping, whois
from pytsnet.messages.peers import RoutePrefs

__all__ = ["PREFIX", "LocalApi", "LocalRequest", "LocalResponse", "MaskedPrefs", "Prefs", "Route"]

PREFIX = "/localapi/v0/"
MAX_BODY = 1 << 20
"""A request body past this is refused (413): nothing the LocalAPI takes is near it."""


@dataclass(frozen=True)
class LocalRequest:
    method: str
    path: str
    query: dict[str, str] = field(default_factory=dict)
    """First value of each query parameter (Go's ``FormValue``)."""
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    """Request headers, names lower-cased (first value): Serve's ``If-Match`` (20b)."""
    stream: BinaryIO | None = None
    """A streaming route's body, read as the handler goes (``file-put/``: a file of any size); the
    transport bounds each read's wait. None elsewhere (``body`` holds it)."""


@dataclass(frozen=True)
class LocalResponse:
    status: int
    body: bytes = b""
    content_type: str = "text/plain; charset=utf-8"
    headers: tuple[tuple[str, str], ...] = ()
    """Extra response headers: Serve's ``Etag`` (20b)."""
    stream: BinaryIO | None = None
    """A body too large to hold (``files/<name>``: a received file), copied by the transport then
    closed; its length is ``stream_size`` (the ``Content-Length``), ``body`` is unused."""
    stream_size: int = 0

    @classmethod
    def error(cls, status: int, text: str) -> LocalResponse:
        """Go's ``http.Error``: the text and a newline, plain text."""
        return cls(status, (text + "\n").encode())

    @classmethod
    def json(cls, model: BaseModel | dict[str, object]) -> LocalResponse:
        """Go's ``json.MarshalIndent(v, "", "\\t")``: tab-indented; omitempty fields left out."""
        data = model.model_dump(mode="json", exclude_defaults=True) if isinstance(model, BaseModel) else model
        return cls(200, (json.dumps(data, indent="\t") + "\n").encode(), "application/json")


Access = Literal["read", "write"]
Handler = Callable[["LocalApi", LocalRequest], LocalResponse]


@dataclass(frozen=True)
class Route:
    handler: Handler
    access: Access
    what: str
    """Go's word in "<what> access denied"."""
    write_methods: frozenset[str] = frozenset()
    """Methods of a read route that mutate (prefs' PATCH): they need write access."""
    streaming: bool = False  # taildrop (22c): the transport hands the body as ``LocalRequest.stream``


class Prefs(BaseModel):
    """The ``ipn.Prefs`` fields this port has, with Go's JSON names."""

    model_config = ConfigDict(extra="forbid", strict=True)

    WantRunning: bool
    RouteAll: bool
    ExitNodeID: str
    ExitNodeIP: str


class MaskedPrefs(BaseModel):
    """Go ``ipn.MaskedPrefs`` restricted to ``Prefs``: a ``<Field>Set`` flag per field. Any other field
    is refused (400) rather than silently ignored: a pref this port lacks must not look applied."""

    model_config = ConfigDict(extra="forbid", strict=True)

    WantRunning: bool = False
    WantRunningSet: bool = False
    """``WantRunning=false`` (``tailscale down``) is honoured only where the process set
    ``LocalApi.on_down`` (``pytsnet up``: it stops); an embedded node stops with its app (400)."""
    RouteAll: bool = False
    RouteAllSet: bool = False
    ExitNodeID: str = ""
    ExitNodeIDSet: bool = False
    ExitNodeIP: str = ""
    ExitNodeIPSet: bool = False


def _prefs_of(p: RoutePrefs, running: bool = True) -> Prefs:
    sel = p.exit_node or ""
    try:
        ipaddress.ip_address(sel)
        is_ip = True
    except ValueError:
        is_ip = False
    return Prefs(WantRunning=running, RouteAll=p.accept_routes, ExitNodeID="" if is_ip else sel,
                 ExitNodeIP=sel if is_ip else "")


def _bool_param(text: str | None, default: bool) -> bool:
    """Go ``defBool``: empty → default, else ``strconv.ParseBool`` (bad → default)."""
    if not text:
        return default
    if text in ("1", "t", "T", "TRUE", "true", "True"):
        return True
    if text in ("0", "f", "F", "FALSE", "false", "False"):
        return False
    return default


class LocalApi:
    """The route table over one device."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.on_down: Callable[[], None] | None = None
        """What ``WantRunning=false`` does (set by ``pytsnet up``: stop the node and exit); called
        after the answer is built, so it must not block."""
        self.routes: dict[str, Route] = {
            "status": Route(LocalApi._status, "read", "status"),
            "whois": Route(LocalApi._whois, "read", "whois"),
            "prefs": Route(LocalApi._prefs, "read", "prefs", frozenset({"PATCH"})),
            "logout": Route(LocalApi._logout, "write", "logout"),
            "netcheck": Route(LocalApi._netcheck, "read", "netcheck"),
            "ping": Route(LocalApi._ping, "read", "ping"),
        }

    def route(self, name: str, handler: Handler, access: Access, what: str | None = None, *,
              streaming: bool = False) -> None:
        """Add (or replace) ``/localapi/v0/<name>``; a name ending in ``/`` matches as a prefix.
        ``streaming``: the body is not buffered (``LocalRequest.stream``; taildrop, 22c)."""
        self.routes[name] = Route(handler, access, what if what is not None else name, streaming=streaming)

    def lookup(self, path: str) -> Route | None:
        """Go ``handlerForPath``."""
        if not path.startswith(PREFIX):
            return None
        suffix = path[len(PREFIX):]
        if suffix in self.routes:
            return self.routes[suffix]
        head, sep, _ = suffix.partition("/")
        return self.routes.get(head + "/") if sep else None

    def handle(self, req: LocalRequest, *, permit_read: bool, permit_write: bool) -> LocalResponse:
        route = self.lookup(req.path)
        if route is None:
            return LocalResponse.error(404, "404 page not found")
        if not (permit_write or (route.access == "read" and permit_read)):
            return LocalResponse.error(403, f"{route.what} access denied".lstrip())
        if req.method in route.write_methods and not permit_write:
            return LocalResponse.error(403, f"{route.what} write access denied")
        if route.streaming and req.stream is None:  # taildrop (22c): a buffered body, read as a stream
            req = dataclasses.replace(req, stream=io.BytesIO(req.body))
        return route.handler(self, req)

    # -- handlers --------------------------------------------------------------------------------------
    def _status(self, req: LocalRequest) -> LocalResponse:
        return LocalResponse.json(build_status(self.backend, peers=_bool_param(req.query.get("peers"), True)))

    def _whois(self, req: LocalRequest) -> LocalResponse:
        addr = req.query.get("addr", "")
        if not addr:
            return LocalResponse.error(400, "missing 'addr' parameter")
        if addr.startswith("nodekey:") and not _is_node_key(addr):
            return LocalResponse.error(400, "invalid nodekey in 'addr' parameter")
        try:
            return LocalResponse.json(whois(self.backend, addr))
        except WhoIsNotFound:
            return LocalResponse.error(404, "no match for IP:port")
        except ValueError:
            return LocalResponse.error(400, "invalid 'addr' parameter")

    def _prefs(self, req: LocalRequest) -> LocalResponse:
        """Go ``servePrefs``: GET the prefs; PATCH (write access) applies a ``MaskedPrefs``."""
        if req.method in ("GET", "HEAD"):
            return LocalResponse.json(_prefs_of(self.backend.route_prefs()).model_dump())
        if req.method != "PATCH":
            return LocalResponse.error(405, "unsupported method")
        try:
            mp = MaskedPrefs.model_validate_json(req.body or b"{}")
        except ValidationError as e:
            return LocalResponse.error(400, f"invalid prefs: {e.errors()[0]['loc']} {e.errors()[0]['msg']}")
        down = mp.WantRunningSet and not mp.WantRunning
        if down and self.on_down is None:
            return LocalResponse.error(400, "WantRunning=false: this node stops with its app (only "
                                            "`pytsnet up` can be brought down)")
        if mp.ExitNodeIDSet and mp.ExitNodeIPSet and mp.ExitNodeID and mp.ExitNodeIP:
            return LocalResponse.error(400, "cannot set both ExitNodeID and ExitNodeIP")
        cur = self.backend.route_prefs()
        new = cur
        if mp.RouteAllSet:
            new = new.model_copy(update={"accept_routes": mp.RouteAll})
        if mp.ExitNodeIPSet:
            if mp.ExitNodeIP:
                try:
                    ipaddress.ip_address(mp.ExitNodeIP)
                except ValueError:
                    return LocalResponse.error(400, f"invalid ExitNodeIP {mp.ExitNodeIP!r}")
            new = new.model_copy(update={"exit_node": mp.ExitNodeIP or None})
        if mp.ExitNodeIDSet:
            new = new.model_copy(update={"exit_node": mp.ExitNodeID or None})
        if new != cur:
            self.backend.set_route_prefs_blocking(new)
        resp = LocalResponse.json(_prefs_of(self.backend.route_prefs(), running=not down).model_dump())
        if down and self.on_down is not None:
            self.on_down()
        return resp

    def _ping(self, req: LocalRequest) -> LocalResponse:
        """Go ``servePing``: POST, ``ip`` and ``type`` (``disco``, ``ICMP``, ``TSMP``; ``peerapi`` is
        not sent by this node: 400, never a fake answer)."""
        if req.method != "POST":
            return LocalResponse.error(400, "want POST")
        ip = req.query.get("ip", "")
        if not ip:
            return LocalResponse.error(400, "missing 'ip' parameter")
        try:
            ipaddress.ip_address(ip)
        except ValueError:
            return LocalResponse.error(400, "invalid IP")
        kind = req.query.get("type", "")
        if not kind:
            return LocalResponse.error(400, "missing 'type' parameter")
        if req.query.get("size", "") not in ("", "0"):
            return LocalResponse.error(400, "'size' parameter is not supported by this node")
        if kind not in ("disco", "ICMP", "TSMP"):
            return LocalResponse.error(400, f"ping type {kind!r} is not supported by this node "
                                            "(disco, ICMP, TSMP)")
        return LocalResponse.json(ping(self.backend, ip, kind=kind))

    def _netcheck(self, req: LocalRequest) -> LocalResponse:
        """The node's last netcheck, as the fields of Go's ``netcheck.Report`` it keeps
        (``PreferredDERP``; ``RegionLatency`` in nanoseconds, as Go's ``time.Duration``). Not a Go
        LocalAPI path: Go's CLI runs netcheck itself; here the node's own report is the answer."""
        info = self.backend.dataplane_info()
        return LocalResponse.json({"PreferredDERP": info.preferred_derp,
                                   "RegionLatency": {str(r): round(s * 1e9)
                                                     for r, s in sorted(info.region_latency.items())}})

    def _logout(self, req: LocalRequest) -> LocalResponse:
        """Go ``serveLogout``: POST only, 204 when done."""
        if req.method != "POST":
            return LocalResponse.error(405, "want POST")
        try:
            self.backend.logout_blocking()
        except Exception as e:  # the typed errors of logout: their text, as Go's 500
            return LocalResponse.error(500, f"{type(e).__name__}: {e}")
        return LocalResponse(204)


def _is_node_key(text: str) -> bool:
    hexpart = text.removeprefix("nodekey:")
    return len(hexpart) == 64 and all(c in "0123456789abcdef" for c in hexpart)
