"""A minimal in-test DERP relay (plain HTTP upgrade, ``ServerConnection`` per client) and STUN server.

Stands in for ``pytsnet.localnet``'s relay until that lands; loopback only.
"""

from __future__ import annotations

import contextlib
import socket
import threading

from pytsnet.wire import stun
from pytsnet.wire.derp import frames as f
from pytsnet.wire.derp.handshake import ClientAuthenticated, FrameReceived, ServerConnection
from pytsnet.wire.errors import WireError
from pytsnet.wire.keys import NodePrivate, NodePublic


class MiniDerp:
    def __init__(self) -> None:
        self.key = NodePrivate.generate()
        self.lsock = socket.create_server(("127.0.0.1", 0))
        self.port = self.lsock.getsockname()[1]
        self.clients: dict[NodePublic, tuple[ServerConnection, socket.socket, threading.Lock]] = {}
        self.lock = threading.Lock()
        self.relayed = 0
        self.conns: list[socket.socket] = []
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.closed:
            try:
                s, _ = self.lsock.accept()
            except OSError:
                return
            self.conns.append(s)
            threading.Thread(target=self._serve, args=(s,), daemon=True).start()

    def _serve(self, s: socket.socket) -> None:
        key = None
        try:
            buf = b""
            while b"\r\n\r\n" not in buf:
                chunk = s.recv(4096)
                if not chunk:
                    return
                buf += chunk
            key_hex = self.key.public().raw.hex().encode()
            s.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: DERP\r\nConnection: Upgrade\r\n"
                      b"Derp-Version: 2\r\nDerp-Public-Key: " + key_hex + b"\r\n\r\n")
            conn = ServerConnection(self.key, 0.0, jitter=lambda: 0.0)
            wlock = threading.Lock()
            s.sendall(conn.data_to_send())
            while True:
                data = s.recv(65536)
                if not data:
                    return
                with wlock:
                    events = conn.receive_data(data, 0.0)
                for ev in events:
                    if isinstance(ev, ClientAuthenticated):
                        key = ev.client_key
                        with wlock:
                            conn.accept(0.0)
                        with self.lock:
                            self.clients[key] = (conn, s, wlock)
                    elif isinstance(ev, FrameReceived) and isinstance(ev.frame, f.SendPacket):
                        self._relay(key, ev.frame)
                with wlock:
                    out = conn.data_to_send()
                    if out:
                        s.sendall(out)
        except (OSError, WireError):
            return
        finally:
            with self.lock:
                if key is not None and self.clients.get(key, (None, s))[1] is s:
                    del self.clients[key]
            s.close()

    def _relay(self, src: NodePublic | None, frame: f.SendPacket) -> None:
        with self.lock:
            dst = self.clients.get(frame.dst)
        if dst is None or src is None:
            return
        conn, sock, wlock = dst
        with wlock:
            conn.send_packet(src, frame.packet)
            out = conn.data_to_send()
            try:
                sock.sendall(out)
            except OSError:
                return
        self.relayed += 1

    def close(self) -> None:
        self.closed = True
        self.lsock.close()
        for s in self.conns:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()


class MiniStun:
    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        import ipaddress

        while True:
            try:
                data, src = self.sock.recvfrom(2048)
            except OSError:
                return
            try:
                tx = stun.parse_binding_request(data)
            except WireError:
                continue
            self.sock.sendto(stun.response(tx, ipaddress.ip_address(src[0]), src[1]), src)

    def close(self) -> None:
        self.sock.close()
