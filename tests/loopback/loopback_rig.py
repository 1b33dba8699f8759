"""Two devices on a LocalTailnet over loopback: ``alpha`` (whose loopback proxies are under test) and
``web``, which serves HTTP on its tailnet port 8080 (a tiny h11 server on ``listen_blocking``: ``/``
says who called, by WhoIs; ``/echo`` echoes a POST body; ``/repo.git/...`` serves a bare repository
as static files, enough for git's dumb HTTP), a TCP echo on 7000 and a UDP echo on 5353."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import h11

from pytsnet.device import ActorDevice
from pytsnet.errors import UnknownTailnetHost
from pytsnet.localnet.server import LocalTailnet
from pytsnet.net import SocketLike, UdpSocket
from pytsnet.testing.streams import accept_in_threads, echo, recv_exact
from pytsnet.testing.tailnet import local_tailnet

WEB_PORT, ECHO_PORT, UDP_PORT = 8080, 7000, 5353


@dataclass
class Rig:
    net: LocalTailnet
    alpha: ActorDevice
    web: ActorDevice
    git_root: Path
    addr: str = ""
    cred: str = ""
    local_api_cred: str = ""
    git_head: str = ""
    """The commit of the bare repository served at ``/repo.git``."""
    web_requests: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    @property
    def port(self) -> int:
        return int(self.addr.rsplit(":", 1)[1])

    def web_ip(self) -> str:
        return self.web.tailscale_ips()[0]


def _serve_http(rig: Rig, conn: SocketLike) -> None:
    conn.settimeout(10)
    h = h11.Connection(h11.SERVER)
    try:
        caller = rig.web.whois(f"{conn.getpeername()[0]}").node.hostname
    except UnknownTailnetHost:
        caller = "?"
    try:
        while True:
            req = None
            body = b""
            while True:
                ev = h.next_event()
                if ev is h11.NEED_DATA:
                    h.receive_data(conn.recv(65536))
                    continue
                if isinstance(ev, h11.Request):
                    req = ev
                elif isinstance(ev, h11.Data):
                    body += ev.data
                elif isinstance(ev, h11.EndOfMessage):
                    break
                else:
                    return
            assert req is not None
            target = req.target.decode()
            rig.web_requests.append(f"{req.method.decode()} {target}")
            status, ctype, out = 200, b"text/plain", b""
            path = target.split("?", 1)[0]
            if path == "/":
                out = f"hello {caller}\n".encode()
            elif path == "/echo":
                out = body
            elif path.startswith("/repo.git/"):
                f = (rig.git_root / path[1:]).resolve()
                if f.is_file() and rig.git_root in f.parents:
                    out, ctype = f.read_bytes(), b"application/octet-stream"
                else:
                    status, out = 404, b"no such file\n"
            else:
                status, out = 404, b"not found\n"
            conn.sendall(h.send(h11.Response(status_code=status, headers=[
                (b"content-type", ctype), (b"content-length", str(len(out)).encode())])) or b"")
            if req.method != b"HEAD":
                conn.sendall(h.send(h11.Data(data=out)) or b"")
            conn.sendall(h.send(h11.EndOfMessage()) or b"")
            if h.our_state is h11.MUST_CLOSE:
                return
            h.start_next_cycle()
    except (OSError, h11.ProtocolError, TimeoutError):
        return
    finally:
        conn.close()


def _udp_echo(rig: Rig, sock: UdpSocket) -> None:
    while not rig.stop.is_set():
        try:
            data, src = sock.recvfrom_blocking(0.5)
        except (TimeoutError, OSError):
            continue
        with contextlib.suppress(OSError):
            sock.sendto_blocking(b"echo:" + data, src)
    sock.close()


def make_git_repo(root: Path) -> str:
    """A bare repo with one commit, ready for dumb HTTP (``update-server-info``); its commit id."""
    env = {**os.environ, "HOME": str(root), "GIT_CONFIG_NOSYSTEM": "1", "GIT_AUTHOR_NAME": "t",
           "GIT_AUTHOR_EMAIL": "t@example.invalid", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@example.invalid"}
    work = root / "work"
    subprocess.run(["git", "init", "-q", "-b", "main", str(work)], check=True, env=env)
    (work / "README").write_text("served over the tailnet\n")
    subprocess.run(["git", "-C", str(work), "add", "README"], check=True, env=env)
    subprocess.run(["git", "-C", str(work), "commit", "-qm", "first"], check=True, env=env)
    subprocess.run(["git", "clone", "-q", "--bare", str(work), str(root / "repo.git")], check=True, env=env)
    subprocess.run(["git", "-C", str(root / "repo.git"), "update-server-info"], check=True, env=env)
    out = subprocess.run(["git", "-C", str(work), "rev-parse", "HEAD"], check=True, env=env,
                         capture_output=True, text=True)
    return out.stdout.strip()


@contextmanager
def loopback_rig(tmp: Path, timeout: float = 30.0) -> Iterator[Rig]:
    git_root = tmp / "gitsrv"
    git_root.mkdir()
    with local_tailnet(tmp, ["alpha", "web"], timeout=timeout) as tn:
        rig = Rig(tn.net, tn["alpha"], tn["web"], git_root.resolve(), git_head=make_git_repo(git_root))
        web = rig.web  # listening before the rig is handed out: no test dials a port not yet open
        tcp = [(web.listen_blocking(WEB_PORT), lambda c: _serve_http(rig, c)),
               (web.listen_blocking(ECHO_PORT), echo)]
        udp = web.listen_packet_blocking(UDP_PORT)
        threads: list[threading.Thread] = []
        try:
            threads += [accept_in_threads(lst, rig.stop, handle) for lst, handle in tcp]
            threads.append(threading.Thread(target=_udp_echo, args=(rig, udp), daemon=True))
            threads[-1].start()
            rig.addr, rig.cred, rig.local_api_cred = rig.alpha.loopback()
            yield rig
        finally:
            rig.stop.set()
            for t in threads:
                t.join(5)


def clean_env(home: Path) -> dict[str, str]:
    """No proxy variables from the environment (the test names its proxy), a private HOME for git."""
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    env.update(HOME=str(home), GIT_CONFIG_NOSYSTEM="1", GIT_TERMINAL_PROMPT="0")
    return env


def socks_handshake(addr: tuple[str, int], user: str, password: str, target: bytes,
                    cmd: int = 1) -> tuple[socket.socket, bytes]:
    """A raw SOCKS5 client: greeting, RFC 1929 auth, one request (``target``: ATYP..PORT bytes);
    the socket and the server's reply to the request (or to the auth if that failed)."""
    s = socket.create_connection(addr, timeout=10)
    s.sendall(b"\x05\x01\x02")
    assert s.recv(2) == b"\x05\x02"
    s.sendall(b"\x01" + bytes([len(user)]) + user.encode() + bytes([len(password)]) + password.encode())
    auth = recv_exact(s, 2)
    if auth != b"\x01\x00":
        return s, auth
    s.sendall(bytes([5, cmd, 0]) + target)
    head = recv_exact(s, 4)
    rest = {1: 4, 4: 16}.get(head[3], 0) + 2
    return s, head + recv_exact(s, rest)


def domain(name: str, port: int) -> bytes:
    return bytes([3, len(name)]) + name.encode() + port.to_bytes(2, "big")
