"""Rig pieces for Serve: host-side backends on loopback and a test CA as a certificate provider.

``echo_server`` (a TCPForward target), ``mirror_backend`` (a Proxy backend that answers with what it
got, headers included), ``dead_port`` and ``TestCA`` (trustme, a real CA: ``provider`` is what
``ActorDevice.serve_cert_provider`` takes, ``client_context`` trusts it).
"""

from __future__ import annotations

import json
import socket
import socketserver
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

__all__ = ["TestCA", "dead_port", "echo_server", "mirror_backend"]



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
