"""The egress status endpoint: ``EgressStatus`` as JSON at ``/`` and Prometheus text at ``/metrics``.

A ``ThreadingHTTPServer`` (stdlib) is enough here: a status endpoint, usually on loopback, read by a
scraper every few seconds; each request asks the router for a fresh ``EgressStatus``. The Prometheus
rendering is the text exposition format 0.0.4: ``# HELP``/``# TYPE`` per family, per-worker samples
labelled ``worker``, the front's counters, and the state as a one-hot ``pytsnet_egress_state``.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from pytsnet.actors.runtime.logs import subsystem_logger
from pytsnet.messages.egress import EgressStatus

__all__ = ["REQUEST_TIMEOUT", "STATES", "StatusServer", "render_metrics", "status_url"]

log = subsystem_logger("egress")

REQUEST_TIMEOUT = 10.0
"""How long one status connection may take to send its request (a slowloris holds a thread)."""

STATES = ("starting", "running", "draining", "escalated", "stopped")

_WORKER_METRICS: tuple[tuple[str, str, str], ...] = (
    ("flows_open", "gauge", "Flows open on the worker (the front's count: assigned minus done)."),
    ("flows_total", "counter", "Flows the worker carried (its own count, this incarnation)."),
    ("bytes_up", "counter", "Client-to-target bytes the worker carried (this incarnation)."),
    ("bytes_down", "counter", "Target-to-client bytes the worker carried (this incarnation)."),
    ("restarts", "counter", "Times the worker slot was restarted."),
    ("up", "gauge", "1 while the worker is ready to take flows."),
    ("exit_ok", "gauge", "0 while a configured exit node is unavailable to the worker."),
    ("rss", "gauge", "Resident set size of the worker process, bytes."),
)
_FRONT_METRICS: tuple[tuple[str, str], ...] = (
    ("accepted", "Client connections the front accepted."),
    ("assigned", "Flows handed to a worker."),
    ("refused", "Handshakes the front answered itself (bad request, auth, no worker, draining)."),
    ("bytes_in", "Bytes the front read from clients (handshakes only)."),
    ("bytes_out", "Bytes the front wrote to clients (handshake answers and refusals only)."),
    ("flows_failed_by_worker_loss", "Flows open on a worker when it was lost."),
)


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def render_metrics(st: EgressStatus) -> str:
    """The Prometheus text exposition of ``st``."""
    out: list[str] = []
    for name, kind, text in _WORKER_METRICS:
        suffix = "_total" if kind == "counter" and not name.endswith("_total") else ""
        full = f"pytsnet_egress_worker_{name}{suffix}"
        out += [f"# HELP {full} {text}", f"# TYPE {full} {kind}"]
        for w in st.workers:
            value: float = (1 if w.state == "ready" else 0) if name == "up" else \
                int(w.exit_ok) if name == "exit_ok" else getattr(w, name)
            out.append(f'{full}{{worker="{w.worker}"}} {value}')
    for name, text in _FRONT_METRICS:
        full = f"pytsnet_egress_front_{name}_total"
        out += [f"# HELP {full} {text}", f"# TYPE {full} counter", f"{full} {getattr(st.front, name)}"]
    out += ["# HELP pytsnet_egress_state 1 for the egress's current state.",
            "# TYPE pytsnet_egress_state gauge"]
    out += [f'pytsnet_egress_state{{state="{_label(s)}"}} {int(st.state == s)}' for s in STATES]
    return "\n".join(out) + "\n"


class _Server6(ThreadingHTTPServer):
    address_family = socket.AF_INET6


def status_url(text: str) -> str:
    """``HOST:PORT`` or a URL → the endpoint's base URL (``http://HOST:PORT``)."""
    if "://" in text:
        return text.rstrip("/")
    return f"http://{text}"


class StatusServer:
    """Serves ``get()`` on ``host:port`` (port 0: any; ``address`` says which) until ``close``."""

    def __init__(self, host: str, port: int, get: Callable[[], EgressStatus]) -> None:
        class Handler(BaseHTTPRequestHandler):
            timeout = REQUEST_TIMEOUT  # the socket's: reads of the request and writes of the answer

            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path not in ("/", "/metrics"):
                    self._answer(404, "text/plain; charset=utf-8", b"not found\n")
                    return
                try:
                    st = get()
                except Exception as e:  # the egress is going away: say so, do not crash the server
                    self._answer(503, "text/plain; charset=utf-8", f"status unavailable: {e}\n".encode())
                    return
                if path == "/":
                    self._answer(200, "application/json", st.model_dump_json().encode())
                else:
                    self._answer(200, "text/plain; version=0.0.4; charset=utf-8", render_metrics(st).encode())

            def _answer(self, code: int, ctype: str, body: bytes) -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                log.debug("status: " + format, *args)

        server_cls = _Server6 if ":" in host else ThreadingHTTPServer
        self._httpd = server_cls((host, port), Handler)
        self._httpd.daemon_threads = True
        bound = self._httpd.server_address[1]
        self.address = f"[{host}]:{bound}" if ":" in host else f"{host}:{bound}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="egress-status", daemon=True)
        self._thread.start()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._httpd.shutdown()
            self._httpd.server_close()
        self._thread.join(2.0)
