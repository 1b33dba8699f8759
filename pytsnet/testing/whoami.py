"""Web apps that answer with their caller's WhoIs, one per framework pytsnet serves, for tests and rigs.

Go apps call ``WhoIs(r.RemoteAddr)``; these do the same with the address their framework hands them
(``client_address``, WSGI ``REMOTE_ADDR``, ASGI ``scope["client"]``, aiohttp's peer name) and answer a
GET on ``/`` with ``NAME IP:PORT`` (``caller_text``): the caller's MagicDNS name and the tailnet address
it called from, so a test can tell which node called and over which connection. fastapi and aiohttp
(test extras) are imported only when their app is asked for. No ``from __future__ import annotations``
here: FastAPI reads the endpoint's annotations at run time, and ``fastapi`` is a local name.
"""

import http.server
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from pytsnet.device import ActorDevice

if TYPE_CHECKING:
    import aiohttp.web
    import fastapi

__all__ = ["aiohttp_app", "caller_text", "fastapi_app", "stdlib_handler", "wsgi_app"]


def caller_text(dev: ActorDevice, ip: str, port: object) -> str:
    """``NAME IP:PORT``: the WhoIs name of the tailnet node at ``ip`` and the address it called from."""
    return f"{dev.whois(ip).node.name} {ip}:{port}"


Handler = http.server.BaseHTTPRequestHandler


def stdlib_handler(dev: ActorDevice, answer: Callable[[Handler], str] | None = None) -> type[Handler]:
    """An ``http.server`` handler (HTTP/1.1, keep-alive; no request log) whose GET answers
    ``answer(handler)``, by default ``caller_text`` with the caller found by ``whois_connection``."""

    def default(h: Handler) -> str:
        who = dev.whois_connection(h.connection)
        return f"{who.node.name} {h.client_address[0]}:{h.client_address[1]}"

    text = answer or default

    class WhoAmI(Handler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            body = text(self).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return WhoAmI


def wsgi_app(dev: ActorDevice) -> Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]:
    """A WSGI app (wsgiref puts no ``REMOTE_PORT`` in the environ: the port is then ``-``)."""

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        body = caller_text(dev, environ["REMOTE_ADDR"], environ.get("REMOTE_PORT", "-")).encode()
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
        return [body]

    return app


def fastapi_app(dev: ActorDevice) -> "fastapi.FastAPI":
    """A FastAPI (ASGI) app, for ``serve_asgi`` or any ASGI server on ``listen_socket``."""
    import fastapi
    from fastapi.responses import PlainTextResponse

    api = fastapi.FastAPI()

    @api.get("/", response_class=PlainTextResponse)
    def hello(request: fastapi.Request) -> str:
        if request.client is None:
            raise fastapi.HTTPException(500, "the server gave no client address")
        return caller_text(dev, request.client.host, request.client.port)

    return api


def aiohttp_app(dev: ActorDevice) -> "aiohttp.web.Application":
    """An aiohttp app, for ``web.SockSite(runner, dev.listen_socket(port))``."""
    import aiohttp.web

    async def hello(request: aiohttp.web.Request) -> aiohttp.web.Response:
        peer = request.transport.get_extra_info("peername") if request.transport is not None else None
        if peer is None or peer[0] != request.remote:
            raise aiohttp.web.HTTPInternalServerError(text=f"peer {peer!r}, remote {request.remote!r}")
        return aiohttp.web.Response(text=caller_text(dev, peer[0], peer[1]))

    app = aiohttp.web.Application()
    app.router.add_get("/", hello)
    return app
