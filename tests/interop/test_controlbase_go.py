"""Real peer: a Go tsnet node (Caddy + caddy-tailscale) completes the ts2021 Noise handshake with our
server side, and we decrypt the HTTP/2 client preface it sends next."""

from __future__ import annotations

import base64
import json
import os
import socket
import threading
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from pytsnet.testing import gonode
from pytsnet.wire.controlbase import ServerStream, accept_initiation
from pytsnet.wire.http1_upgrade import RequestParser

pytestmark = [pytest.mark.interop, pytest.mark.root]

H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def _read_request(sock: socket.socket) -> tuple[str, dict[str, str], bytes]:
    parser = RequestParser()
    while (req := parser.receive_data(sock.recv(4096))) is None:
        pass
    return f"{req.method} {req.target} {req.version}", req.headers, parser.leftover


def _public_of(private: bytes) -> bytes:
    public = X25519PrivateKey.from_private_bytes(private).public_key()
    return public.public_bytes(Encoding.Raw, PublicFormat.Raw)


class FakeControl:
    """Just enough control server: /key, the /ts2021 upgrade and the first records after it."""

    def __init__(self, listener: socket.socket, control_private: bytes) -> None:
        self.listener = listener
        self.private = control_private
        self.requests: list[str] = []
        self.result: dict[str, object] = {}
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        try:
            while not self.done.is_set():
                conn, _ = self.listener.accept()
                conn.settimeout(20)
                with conn:
                    self._handle(conn)
        except Exception as exc:  # reported through the test's assertion
            self.result["error"] = repr(exc)
            self.done.set()

    def _handle(self, conn: socket.socket) -> None:
        request_line, headers, rest = _read_request(conn)
        self.requests.append(request_line)
        if request_line.startswith("GET /key"):
            body = json.dumps({"legacyPublicKey": "mkey:" + "00" * 32,
                               "publicKey": "mkey:" + _public_of(self.private).hex()}).encode()
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n"
                         b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
            return
        if not request_line.startswith("POST /ts2021"):
            conn.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            return
        self.result["upgrade"] = headers.get("upgrade")
        accepted = accept_initiation(base64.b64decode(headers["x-tailscale-handshake"]), self.private)
        stream = ServerStream(accepted)
        conn.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: tailscale-control-protocol\r\n"
                     b"Connection: upgrade\r\n\r\n" + stream.initial)
        plaintext = stream.receive_data(rest)
        while len(plaintext) < len(H2_PREFACE):
            chunk = conn.recv(4096)
            if not chunk:
                break
            plaintext += stream.receive_data(chunk)
        self.result.update(version=accepted.protocol_version, machine=accepted.machine_public.raw,
                           plaintext=plaintext)
        self.done.set()


def test_go_tsnet_noise_handshake_and_h2_preface(tmp_path: Path) -> None:
    reason = gonode.unavailable()
    if reason:
        pytest.skip(reason)

    def listen() -> socket.socket:
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        s.listen(8)
        return s

    with gonode.namespace_pair("cb") as (node, _side):  # tsnet needs one non-loopback IPv4 interface
        listener = node.call(listen)
        port = listener.getsockname()[1]
        control_private = os.urandom(32)
        server = FakeControl(listener, control_private)
        env = gonode.go_env(tmp_path / "home", inherit=False)  # bare env: no proxies, no relay knobs
        try:
            go = gonode.tailscale_auth(node, "cbtest", f"http://127.0.0.1:{port}", "tskey-test",
                                       tmp_path / "state", tmp_path, env)
            finished = server.done.wait(60)
        finally:
            gonode.stop_all(node, grace=0)
            listener.close()
    logs = go.log_tail()
    assert finished, f"no upgrade within 60 s; requests={server.requests}\n{logs}"
    assert "error" not in server.result, f"{server.result}\n{logs}"
    assert any(r.startswith("GET /key?v=") for r in server.requests)
    assert server.result["upgrade"] == "tailscale-control-protocol"
    assert 100 <= server.result["version"] <= 0xFFFF  # type: ignore[operator]
    assert len(server.result["machine"]) == 32  # type: ignore[arg-type]
    assert server.result["plaintext"][:len(H2_PREFACE)] == H2_PREFACE  # type: ignore[index]
    print("go client version", server.result["version"], "plaintext", server.result["plaintext"][:40])
