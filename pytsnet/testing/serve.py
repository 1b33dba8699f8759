"""Rig pieces for Serve: host-side backends on loopback and a test CA as a certificate provider.

``echo_server`` (a TCPForward target), ``mirror_backend`` (a Proxy backend that answers with what it
got, headers included), ``dead_port`` and ``TestCA`` (trustme, a real CA: ``provider`` is what
``ActorDevice.serve_cert_provider`` takes, ``client_context`` trusts it). For an app behind a service
listener (``HttpServiceListener``: it accepts the connections Serve's proxy makes): ``read_head``,
``header_values``, ``ok_response``, ``accept_each`` and ``serve_app`` (accept and answer until
told to stop).
"""

from __future__ import annotations

import contextlib
import json
import socket
import socketserver
import ssl
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Protocol, TypeVar

__all__ = ["TestCA", "accept_each", "dead_port", "echo_server", "header_values", "mirror_backend",
           "ok_response", "read_head", "serve_app"]



class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        while data := self.request.recv(65536):
            self.request.sendall(data)


@contextmanager
def _serving(srv: socketserver.ThreadingTCPServer | ThreadingHTTPServer) -> Iterator[int]:
    """Serve ``srv`` on a daemon thread (one thread per connection); yield its port, then shut it."""
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        yield srv.server_address[1]
    finally:
        srv.shutdown()
        srv.server_close()


@contextmanager
def echo_server() -> Iterator[int]:
    """A TCP echo server on 127.0.0.1 (the TCPForward target); yields its port."""
    with _serving(socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Echo)) as port:
        yield port


class _Mirror(BaseHTTPRequestHandler):
    """Answers with what it got: method, path, headers (a dict, and every one in order) and body, as JSON."""

    def _answer(self) -> None:
        n = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(n) if n else b""
        out = json.dumps({"method": self.command, "path": self.path, "body": body.decode(),
                          "headers": {k.lower(): v for k, v in self.headers.items()},
                          "header_list": [[k.lower(), v] for k, v in self.headers.items()]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    do_GET = do_POST = _answer

    def log_message(self, *args: object) -> None:
        pass


@contextmanager
def mirror_backend() -> Iterator[int]:
    """An HTTP backend on 127.0.0.1 mirroring each request back as JSON; yields its port."""
    with _serving(ThreadingHTTPServer(("127.0.0.1", 0), _Mirror)) as port:
        yield port


def dead_port() -> int:
    """A loopback port nothing listens on (bound then closed)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port: int = s.getsockname()[1]
    s.close()
    return port


class _Conn(Protocol):
    def __enter__(self) -> object: ...
    def __exit__(self, *exc: object) -> None: ...
    def settimeout(self, timeout: float | None) -> None: ...


C = TypeVar("C", bound=_Conn)
C_co = TypeVar("C_co", bound=_Conn, covariant=True)


class _Accepting(Protocol[C_co]):
    def accept(self, timeout: float | None = None) -> tuple[C_co, tuple[str, int]]: ...


def read_head(conn: socket.socket) -> bytes:
    """One request's head as an app reads it: up to the blank line (what came with it included), or
    all there was when the client closed first."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


def header_values(head: bytes, name: bytes) -> list[bytes]:
    """The values of the header ``name`` (any case) in a request head, in order."""
    return [line.split(b":", 1)[1].strip() for line in head.split(b"\r\n")[1:]
            if line.lower().startswith(name.lower() + b":")]


def accept_each(lst: _Accepting[C], stop: threading.Event, handle: Callable[[C], object]) -> threading.Thread:
    """A daemon thread giving each connection ``lst`` accepts to ``handle`` (with a 10 s timeout; closed
    after; its socket errors end that connection only), until ``stop`` is set or the listener is
    closed: an app behind a (service) listener."""
    def run() -> None:
        while not stop.is_set():
            try:
                conn, _ = lst.accept(timeout=0.2)
            except TimeoutError:
                continue
            except OSError:
                return
            with conn, contextlib.suppress(OSError):  # a reset or silent client: the next one
                conn.settimeout(10)
                handle(conn)
    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def serve_app(lst: _Accepting[socket.socket], stop: threading.Event,
              answer: Callable[[bytes], bytes]) -> threading.Thread:
    """``accept_each`` for an HTTP app: each connection is answered ``answer(its request head)``."""
    return accept_each(lst, stop, lambda conn: conn.sendall(answer(read_head(conn))))


def ok_response(body: bytes) -> bytes:
    """A complete ``200 OK`` with ``body`` and ``Connection: close``."""
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body)


class TestCA:
    """A real CA (trustme): ``provider`` issues leaf certs for any name; ``client_context`` trusts it."""

    __test__ = False  # not a pytest class despite its name

    def __init__(self) -> None:
        import trustme  # a test dependency: imported only by rigs that make a CA
        self.ca = trustme.CA()
        self.issued: list[str] = []

    def provider(self, domain: str) -> tuple[bytes, bytes]:
        self.issued.append(domain)
        leaf = self.ca.issue_cert(domain)
        chain = b"".join(blob.bytes() for blob in leaf.cert_chain_pems)
        return chain, leaf.private_key_pem.bytes()

    def client_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context()
        self.ca.configure_trust(ctx)
        return ctx
