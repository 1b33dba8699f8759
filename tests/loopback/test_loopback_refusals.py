"""The loopback proxies refuse what they must: wrong credentials, targets beyond the tailnet (a real
127.0.0.1 listener standing for "the host network" never sees a connection), hostile input on the
port (garbage, slowloris, huge heads, too many connections) — counted, bounded, the device unharmed —
and one connection's actor killed resets that connection only."""

from __future__ import annotations

import base64
import select
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from loopback_rig import ECHO_PORT, Rig, clean_env, domain, loopback_rig, recv_exact, socks_handshake

from pytsnet.actors.runtime.errors import Killed
from pytsnet.localnet.server import LocalTailnet
from pytsnet.loopback import Loopback
from pytsnet.testing.polling import wait_until
from pytsnet.testing.tailnet import new_device
from pytsnet.wire.socks5 import encode_udp


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    with loopback_rig(tmp_path_factory.mktemp("refusals")) as r:
        yield r


@pytest.fixture
def host_listener() -> Iterator[tuple[socket.socket, socket.socket]]:
    """A TCP and a UDP socket on 127.0.0.1 (the host network): nothing may reach them via the proxy."""
    t = socket.socket()
    t.bind(("127.0.0.1", 0))
    t.listen(16)
    t.setblocking(False)
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.bind(("127.0.0.1", t.getsockname()[1]))
    u.setblocking(False)
    yield t, u
    t.close()
    u.close()


def _assert_untouched(t: socket.socket, u: socket.socket) -> None:
    with pytest.raises(BlockingIOError):
        t.accept()
    with pytest.raises(BlockingIOError):
        u.recvfrom(100)


def _http(rig: Rig, raw: bytes, port: int | None = None) -> bytes:
    with socket.create_connection(("127.0.0.1", port or rig.port), timeout=10) as s:
        s.sendall(raw)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
        return out


def _counters(rig: Rig) -> dict[str, int]:
    st = rig.alpha.loopback_status()
    assert st is not None
    return st.counters


def _curl_ok(rig: Rig) -> None:
    r = subprocess.run(["curl", "-sS", "--max-time", "20", "--socks5-hostname", rig.addr, "--proxy-user",
                        f"tsnet:{rig.cred}", "http://web:8080/"], capture_output=True, text=True,
                       env=clean_env(rig.git_root), timeout=30)
    assert r.returncode == 0 and r.stdout == "hello alpha\n", r.stderr


def test_wrong_or_missing_credentials(rig: Rig) -> None:
    before = _counters(rig).get("auth_failed", 0)
    s, auth = socks_handshake(("127.0.0.1", rig.port), "tsnet", "0" * 32, domain("web", 8080))
    with s:
        assert auth == b"\x01\x01" and s.recv(10) == b""
    s, auth = socks_handshake(("127.0.0.1", rig.port), "root", rig.cred, domain("web", 8080))
    with s:
        assert auth == b"\x01\x01"
    with socket.create_connection(("127.0.0.1", rig.port), timeout=10) as s:
        s.sendall(b"\x05\x01\x00")  # "no authentication" only
        assert s.recv(10) == b"\x05\xff"
    for auth_header in (b"", b"Proxy-Authorization: Basic dHNuZXQ6d3Jvbmc=\r\n"):  # tsnet:wrong
        for req in (b"GET http://web:8080/ HTTP/1.1\r\nHost: web:8080\r\n",
                    b"CONNECT web:8080 HTTP/1.1\r\nHost: web:8080\r\n"):
            out = _http(rig, req + auth_header + b"\r\n")
            assert out.startswith(b"HTTP/1.1 407 "), out
            assert b'proxy-authenticate: Basic realm="tsnet"' in out.lower().replace(b"basic", b"Basic")
    r = subprocess.run(["curl", "-sS", "--max-time", "10", "--socks5-hostname", rig.addr, "--proxy-user",
                        "tsnet:nope", "http://web:8080/"], capture_output=True, text=True,
                       env=clean_env(rig.git_root), timeout=30)
    assert r.returncode != 0 and "hello" not in r.stdout
    # two SOCKS5 refusals, four HTTP, curl's (the "no authentication" offer is a bad_socks, not a try)
    wait_until(lambda: _counters(rig)["auth_failed"] - before == 7, 10, "seven counted auth failures")
    n = len(rig.web_requests)
    _http(rig, b"GET http://web:8080/ HTTP/1.1\r\nHost: web:8080\r\n\r\n")
    assert len(rig.web_requests) == n  # refused before any dial


def test_targets_beyond_the_tailnet_are_refused_never_dialed(
        rig: Rig, host_listener: tuple[socket.socket, socket.socket]) -> None:
    t, u = host_listener
    port = t.getsockname()[1]
    pb = port.to_bytes(2, "big")
    for target, rep in ((b"\x01\x7f\x00\x00\x01" + pb, 2),  # 127.0.0.1: the host itself
                        (b"\x01\xc0\x00\x02\x01" + pb, 2),  # 192.0.2.1: beyond the tailnet
                        (domain("localhost", port), 4)):  # a name MagicDNS does not give a tailnet address
        s, reply = socks_handshake(("127.0.0.1", rig.port), "tsnet", rig.cred, target)
        with s:
            assert reply[:2] == bytes([5, rep]), (target, reply)
    auth = b"Proxy-Authorization: Basic " + base64.b64encode(f"tsnet:{rig.cred}".encode()) + b"\r\n"
    for req, status in ((f"CONNECT 127.0.0.1:{port} HTTP/1.1\r\n", b"403"),
                        (f"GET http://127.0.0.1:{port}/ HTTP/1.1\r\n", b"403"),
                        (f"GET http://localhost:{port}/ HTTP/1.1\r\n", b"502")):
        out = _http(rig, req.encode() + b"Host: x\r\n" + auth + b"\r\n")
        assert out.startswith(b"HTTP/1.1 " + status), out
    s, reply = socks_handshake(("127.0.0.1", rig.port), "tsnet", rig.cred, b"\x01" + bytes(6), cmd=3)
    with s, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as c:
        relay = (socket.inet_ntoa(reply[4:8]), int.from_bytes(reply[8:10], "big"))
        c.bind(("127.0.0.1", 0))
        c.sendto(encode_udp("127.0.0.1", port, b"leak?"), relay)
        c.sendto(encode_udp("localhost", port, b"leak?"), relay)
        wait_until(lambda: _counters(rig).get("udp_dropped", 0) >= 2, 10, "both datagrams dropped")
    time.sleep(0.3)
    _assert_untouched(t, u)
    c = _counters(rig)
    assert c["refused_not_tailnet"] >= 6


def test_hostile_input_is_counted_and_bounded(rig: Rig) -> None:
    small = Loopback(rig.alpha.system, rig.alpha, name="lb-small",  # type: ignore[arg-type]
                     max_connections=4, handshake_timeout=1.0)
    sport = small.port
    out = _http(rig, b"\x16\x03\x01garbage that is no HTTP\r\n\r\n", sport)
    assert out.startswith(b"HTTP/1.1 400 "), out
    huge = b"GET http://web:8080/ HTTP/1.1\r\nHost: web:8080\r\nX: " + b"a" * 100_000 + b"\r\n\r\n"
    assert _http(rig, huge, sport).startswith(b"HTTP/1.1 431 ")
    with socket.create_connection(("127.0.0.1", sport), timeout=10) as s:  # SOCKS5 with junk after it
        s.sendall(b"\x05\x01\x02" + b"\x01" * 2000)
        assert recv_exact(s, 4) == b""  # more than any handshake can be: closed, nothing parsed
    t0 = time.monotonic()
    cut = None
    with socket.create_connection(("127.0.0.1", sport), timeout=10) as s:  # slowloris: a byte per 0.1 s
        for b in b"GET http://web:8080/ HTTP/1.1\r\nHost: web:8080\r\nX-Slow: " * 2:
            try:
                s.sendall(bytes([b]))
                if select.select([s], [], [], 0.1)[0] and s.recv(100) == b"":
                    cut = time.monotonic() - t0
                    break
            except OSError:
                cut = time.monotonic() - t0
                break
    assert cut is not None and cut < 3.0, cut  # cut at the 1 s handshake bound (plus the drain)
    idle = [socket.create_connection(("127.0.0.1", sport), timeout=10) for _ in range(10)]
    try:
        wait_until(lambda: small.status().counters.get("busy", 0) >= 6, 10, "six connections over the limit")
        assert small.status().open <= 4
    finally:
        for s in idle:
            s.close()
    wait_until(lambda: small.status().open == 0, 10, "slots freed")
    c = small.status().counters
    assert c["bad_http"] == 1 and c["head_too_large"] == 1 and c["bad_socks"] == 1
    assert c["handshake_timeout"] >= 1
    _curl_ok(rig)  # the device and its main proxy are unaffected
    assert rig.alpha.state.state == "Running"


def test_killing_one_connection_actor_resets_only_it(rig: Rig) -> None:
    assert rig.alpha.system is not None
    names = set(rig.alpha.system.names())
    a, reply = socks_handshake(("127.0.0.1", rig.port), "tsnet", rig.cred, domain("web", ECHO_PORT))
    assert reply[:2] == b"\x05\x00"
    a_names = {n for n in set(rig.alpha.system.names()) - names if n.startswith("loopback-c")}
    assert len(a_names) == 1
    b, reply = socks_handshake(("127.0.0.1", rig.port), "tsnet", rig.cred, domain("web", ECHO_PORT))
    assert reply[:2] == b"\x05\x00"
    with a, b:
        for s in (a, b):
            s.sendall(b"before")
            assert recv_exact(s, 6) == b"before"
        before = _counters(rig).get("reset", 0)
        ref = rig.alpha.system.lookup(a_names.pop())
        assert ref is not None
        ref._cell.kill(Killed("test kills one proxied connection"))
        a.settimeout(10)
        with pytest.raises(ConnectionResetError):
            while a.recv(100):
                pass
        b.sendall(b"after")
        assert recv_exact(b, 5) == b"after"
        wait_until(lambda: _counters(rig).get("reset", 0) > before, 10, "the reset counted")
    _curl_ok(rig)


def test_local_api_seam_and_plain_requests(rig: Rig) -> None:
    out = _http(rig, b"GET /localapi/v0/status HTTP/1.1\r\nHost: x\r\nSec-Tailscale: localapi\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 403 "), out  # the LocalAPI (19a): Host "x" is not loopback, as Go
    assert _http(rig, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").startswith(b"HTTP/1.1 404 ")


def test_listener_closes_with_the_device(tmp_path: Path) -> None:
    with LocalTailnet(tmp_path / "control", listen="127.0.0.1:0") as net:
        dev = new_device(net, tmp_path, "solo").start()
        try:
            addr, _, _ = dev.loopback()
            port = int(addr.rsplit(":", 1)[1])
            socket.create_connection(("127.0.0.1", port), timeout=5).close()
        finally:
            dev.close()
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=5)
        with pytest.raises(Exception, match="closed"):
            dev.loopback()



def test_killed_server_restarts_on_the_same_address_and_tunnels_live_on(rig: Rig) -> None:
    assert rig.alpha.system is not None
    s, reply = socks_handshake(("127.0.0.1", rig.port), "tsnet", rig.cred, domain("web", ECHO_PORT))
    assert reply[:2] == b"\x05\x00"
    with s:
        ref = rig.alpha.system.lookup("loopback")
        assert ref is not None
        inc = ref.incarnation
        ref._cell.kill(Killed("test kills the accept loop"))
        wait_until(lambda: ref.incarnation > inc and ref.is_alive, 10, "the server restarted")
        s.sendall(b"still here")
        assert recv_exact(s, 10) == b"still here"  # a sibling of the server, not its child
    assert rig.alpha.loopback()[0] == rig.addr
    _curl_ok(rig)
