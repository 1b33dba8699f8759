"""OpenSSH ``ProxyCommand`` for the tests: ``python ssh_socks_connect.py PROXY_PORT USER PASSWORD HOST PORT``
connects through a node's loopback SOCKS5 proxy (127.0.0.1, username/password auth) and splices
stdin/stdout to the tailnet connection (Debian's OpenSSH has no built-in SOCKS client; netcat-openbsd
``-X 5`` has no password auth)."""

from __future__ import annotations

import os
import socket
import sys
import threading


def _exact(s: socket.socket, n: int) -> bytes:
    out = b""
    while len(out) < n:
        chunk = s.recv(n - len(out))
        if not chunk:
            raise SystemExit("proxy closed during the SOCKS5 handshake")
        out += chunk
    return out


def connect(proxy_port: int, user: str, password: str, host: str, port: int) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", proxy_port), timeout=30)
    s.sendall(b"\x05\x01\x02")
    if _exact(s, 2) != b"\x05\x02":
        raise SystemExit("proxy refused username/password auth")
    u, p = user.encode(), password.encode()
    s.sendall(b"\x01" + bytes([len(u)]) + u + bytes([len(p)]) + p)
    if _exact(s, 2) != b"\x01\x00":
        raise SystemExit("proxy refused the credentials")
    h = host.encode()
    s.sendall(b"\x05\x01\x00\x03" + bytes([len(h)]) + h + port.to_bytes(2, "big"))
    head = _exact(s, 4)
    if head[1] != 0:
        raise SystemExit(f"SOCKS5 CONNECT failed: reply {head[1]}")
    _exact(s, {1: 4, 4: 16}.get(head[3], 0) or _exact(s, 1)[0])
    _exact(s, 2)
    s.settimeout(None)
    return s


def main() -> None:
    proxy_port, user, password, host, port = sys.argv[1:6]
    s = connect(int(proxy_port), user, password, host, int(port))

    def up() -> None:
        while data := os.read(0, 65536):
            s.sendall(data)
        s.shutdown(socket.SHUT_WR)

    threading.Thread(target=up, daemon=True).start()
    while data := s.recv(65536):
        os.write(1, data)


if __name__ == "__main__":
    main()
