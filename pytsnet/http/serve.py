"""Serving HTTP on the tailnet with the servers apps already use: stdlib, WSGI (wsgiref) and ASGI (uvicorn).

Every server here takes a ``TailnetListenSocket`` (``dev.listen_socket``: a real listening socket
bridged to a tailnet listener), so the request's client address is the tailnet peer's: ``REMOTE_ADDR``
under WSGI, ``scope["client"]`` under ASGI, ``client_address`` in ``http.server``, ready for
``dev.whois`` (Go's ``WhoIs(r.RemoteAddr)``).

The stdlib's ``socketserver`` creates and binds its own socket in ``__init__``; its documented
``socket`` attribute is the only way in, so ``stdlib_server`` builds the server unbound and hands it
ours (and names it, since ``server_bind``, which would have, never runs: no reverse lookup of a
tailnet address on the host's resolver). uvicorn is told to leave the process alone: no signal
handlers (``serve_asgi`` ends when cancelled), no logging configuration, and no proxy headers (a
caller must not be able to replace its tailnet address with an ``X-Forwarded-For``).
"""

from __future__ import annotations

import asyncio
import logging
import socketserver
import threading
from collections.abc import Callable, Generator
from contextlib import contextmanager
from http.server import HTTPServer
from typing import TYPE_CHECKING, Any, TypeVar
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

import anyio
import anyio.abc
import anyio.to_thread

from pytsnet.errors import PytsnetError
from pytsnet.net.bridge import TailnetListenSocket

if TYPE_CHECKING:
    from wsgiref.types import WSGIApplication

__all__ = ["SHUTDOWN_GRACE", "AsgiStartupFailed", "ThreadingWSGIServer", "serve_asgi", "serve_wsgi",
           "stdlib_server"]

log = logging.getLogger("pytsnet.http")

SHUTDOWN_GRACE = 5.0
"""On cancel, requests in flight get this long to finish before their connections are closed."""

_S = TypeVar("_S", bound=socketserver.BaseServer)


def stdlib_server(sock: TailnetListenSocket, handler: Callable[..., socketserver.BaseRequestHandler],
                  server_class: type[_S], name: str = "") -> _S:
    """A ``socketserver`` server (``ThreadingHTTPServer``, ``WSGIServer``, ``ThreadingTCPServer``…)
    on ``sock``, not yet serving: call its ``serve_forever``. ``name`` is its ``server_name``
    (default: our tailnet IP)."""
    server = server_class(sock.getsockname(), handler, bind_and_activate=False)  # type: ignore[call-arg]
    own = getattr(server, "socket", None)
    if own is not None:
        own.close()  # the unbound socket its __init__ made: never used
    server.socket = sock  # type: ignore[attr-defined]
    server.server_address = sock.getsockname()
    if isinstance(server, HTTPServer):
        server.server_name = name or sock.getsockname()[0]
        server.server_port = sock.port
    if isinstance(server, WSGIServer):
        server.setup_environ()
    return server


class ThreadingWSGIServer(socketserver.ThreadingMixIn, WSGIServer):
    """wsgiref's server, one thread per connection (the stdlib's is one request at a time)."""

    daemon_threads = True


class _QuietWSGIHandler(WSGIRequestHandler):
    """wsgiref logs every request to stderr; here they go to the ``pytsnet.http`` logger (DEBUG)."""

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("wsgi %s: " + format, self.client_address[0], *args)


async def serve_wsgi(sock: TailnetListenSocket, app: WSGIApplication, *,
                     task_status: anyio.abc.TaskStatus[tuple[str, int]] = anyio.TASK_STATUS_IGNORED) -> None:
    """Serve the WSGI ``app`` on ``sock`` (threaded wsgiref in a worker thread) until cancelled;
    ``sock`` is closed at the end. ``task_status``: ``await tg.start(...)`` returns our address once
    serving."""
    try:
        server = stdlib_server(sock, _QuietWSGIHandler, ThreadingWSGIServer)
    except BaseException:
        sock.close()
        raise
    server.set_app(app)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2},
                              name=f"wsgi-{sock.port}", daemon=True)
    thread.start()
    try:
        task_status.started(sock.getsockname())
        await anyio.sleep_forever()
    finally:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(server.shutdown)
        server.server_close()


class AsgiStartupFailed(PytsnetError, RuntimeError):
    """The ASGI app's lifespan startup failed (uvicorn logged why); nothing was served."""


def _uvicorn_server(config: Any) -> Any:
    import uvicorn

    class Server(uvicorn.Server):
        """uvicorn without its signal handlers (a library must not take the app's SIGINT; cancelling
        ``serve_asgi`` is how it stops) and without ``sys.exit`` (a failed startup is an error)."""

        @contextmanager
        def capture_signals(self) -> Generator[None, None, None]:
            yield

        async def serve(self, sockets: list[Any] | None = None) -> None:
            try:
                await super().serve(sockets)
            except SystemExit:
                raise AsgiStartupFailed("the ASGI app's lifespan startup failed: see uvicorn's log") from None

    return Server(config)


async def serve_asgi(sock: TailnetListenSocket, app: Any, *,
                     task_status: anyio.abc.TaskStatus[tuple[str, int]] = anyio.TASK_STATUS_IGNORED,
                     **config: Any) -> None:
    """Serve the ASGI ``app`` on ``sock`` with uvicorn (asyncio only) until cancelled; ``config``
    goes to ``uvicorn.Config`` (defaults here: ``log_config=None``, ``proxy_headers=False``). On
    cancel, requests in flight get ``SHUTDOWN_GRACE`` seconds; ``sock`` is closed at the end.
    ``AsgiStartupFailed`` if the app's lifespan startup fails."""
    task: asyncio.Future[None] | None = None
    try:
        import uvicorn

        try:
            asyncio.get_running_loop()
        except RuntimeError:
            raise RuntimeError("serve_asgi runs uvicorn, which needs asyncio (not trio): run it under "
                               "asyncio, or give your ASGI server dev.listen_socket(port)") from None
        config.setdefault("log_config", None)
        config.setdefault("proxy_headers", False)
        config.setdefault("timeout_graceful_shutdown", SHUTDOWN_GRACE)
        server = _uvicorn_server(uvicorn.Config(app, **config))
        task = asyncio.ensure_future(server.serve(sockets=[sock]))
        while not server.started and not task.done():
            await asyncio.sleep(0.01)
        if task.done():
            task.result()  # startup failed: its error
        task_status.started(sock.getsockname())
        await asyncio.shield(task)
    finally:
        if task is not None and not task.done():
            server.should_exit = True
            with anyio.CancelScope(shield=True), anyio.move_on_after(SHUTDOWN_GRACE + 1.0):
                await asyncio.wait({task})
            if not task.done():
                server.force_exit = True
                task.cancel()
        sock.close()
