"""``dev.loopback()`` end to end: curl, httpx, requests and git reach a tailnet peer by name through the
SOCKS5 and HTTP proxies on 127.0.0.1, and UDP ASSOCIATE relays datagrams (two devices, LocalTailnet)."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import requests

sys.path.insert(0, str(Path(__file__).resolve().parent))

from loopback_rig import (
    ECHO_PORT,
    UDP_PORT,
    Rig,
    clean_env,
    loopback_rig,
    recv_exact,
    socks_handshake,
)

from pytsnet.testing.polling import wait_until
from pytsnet.wire.socks5 import decode_udp, encode_udp


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    with loopback_rig(tmp_path_factory.mktemp("loopback")) as r:
        yield r


def _curl(rig: Rig, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["curl", "-sS", "--max-time", "20", *args], capture_output=True, text=True,
                          env=clean_env(rig.git_root), timeout=30)


def test_loopback_answers_like_go(rig: Rig) -> None:
    host, port = rig.addr.rsplit(":", 1)
    assert host == "127.0.0.1" and int(port) > 0
    assert len(rig.cred) == 32 and len(rig.local_api_cred) == 32 and rig.cred != rig.local_api_cred
    int(rig.cred, 16), int(rig.local_api_cred, 16)  # hex, as Go's
    assert rig.alpha.loopback() == (rig.addr, rig.cred, rig.local_api_cred)  # stable for the device's life


def test_curl_socks5_hostname(rig: Rig) -> None:
    r = _curl(rig, "--socks5-hostname", rig.addr, "--proxy-user", f"tsnet:{rig.cred}", "http://web:8080/")
    assert r.returncode == 0, r.stderr
    assert r.stdout == "hello alpha\n"  # the peer's WhoIs of the proxied connection: alpha, by its tailnet IP


def test_curl_http_proxy_absolute_uri(rig: Rig) -> None:
    r = _curl(rig, "--proxy", f"http://tsnet:{rig.cred}@{rig.addr}", "http://web:8080/")
    assert r.returncode == 0, r.stderr
    assert r.stdout == "hello alpha\n"
    r = _curl(rig, "--proxy", f"http://tsnet:{rig.cred}@{rig.addr}", "--data-binary", "x" * 100_000,
              "http://web:8080/echo")
    assert r.returncode == 0 and r.stdout == "x" * 100_000, r.stderr


def test_curl_http_connect_tunnel(rig: Rig) -> None:
    r = _curl(rig, "-p", "--proxy", f"http://tsnet:{rig.cred}@{rig.addr}", "-v", "http://web:8080/")
    assert r.returncode == 0, r.stderr
    assert "CONNECT web:8080" in r.stderr and r.stdout == "hello alpha\n"


def test_httpx_through_socks5_and_http_proxies(rig: Rig) -> None:
    for proxy in (f"socks5://tsnet:{rig.cred}@{rig.addr}", f"http://tsnet:{rig.cred}@{rig.addr}"):
        with httpx.Client(proxy=proxy, trust_env=False, timeout=20) as client:
            assert client.get("http://web:8080/").text == "hello alpha\n", proxy
            assert client.post("http://web:8080/echo", content=b"abc" * 1000).content == b"abc" * 1000


@pytest.mark.parametrize("scheme", ["http", "socks5h"])
def test_requests_through_http_and_socks5_proxies(rig: Rig, scheme: str) -> None:
    """requests takes either proxy (``socks5h://``: the proxy resolves the name, through PySocks)."""
    with requests.Session() as s:
        s.trust_env = False
        proxies = {"http": f"{scheme}://tsnet:{rig.cred}@{rig.addr}"}
        for _ in range(2):
            r = s.get("http://web:8080/", proxies=proxies, timeout=20)
            assert r.status_code == 200 and r.text == "hello alpha\n"


def test_git_ls_remote_and_clone_over_the_http_proxy(rig: Rig, tmp_path: Path) -> None:
    head = rig.git_head
    env = clean_env(tmp_path)
    proxy = f"http.proxy=http://tsnet:{rig.cred}@{rig.addr}"
    url = "http://web:8080/repo.git"
    r = subprocess.run(["git", "-c", proxy, "ls-remote", url], capture_output=True, text=True, env=env,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    assert f"{head}\trefs/heads/main" in r.stdout
    r = subprocess.run(["git", "-c", proxy, "clone", "-q", url, str(tmp_path / "clone")], capture_output=True,
                       text=True, env=env, timeout=60)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "clone" / "README").read_text() == "served over the tailnet\n"


def test_socks5_connect_by_tailnet_ip_and_early_data(rig: Rig) -> None:
    ip = socket.inet_aton(rig.web_ip())
    s, reply = socks_handshake(("127.0.0.1", rig.port), "tsnet", rig.cred,
                               b"\x01" + ip + ECHO_PORT.to_bytes(2, "big"))
    with s:
        assert reply[:2] == b"\x05\x00" and reply[3] == 1
        assert socket.inet_ntoa(reply[4:8]) == rig.alpha.tailscale_ips()[0]  # BND: our tailnet address
        s.sendall(b"ping over the tunnel")
        assert recv_exact(s, 20) == b"ping over the tunnel"
        s.shutdown(socket.SHUT_WR)
        assert s.recv(10) == b""  # the half-close crossed the tailnet and the echo's FIN came back


def test_socks5_udp_associate_relays_datagrams(rig: Rig) -> None:
    s, reply = socks_handshake(("127.0.0.1", rig.port), "tsnet", rig.cred, b"\x01\x00\x00\x00\x00\x00\x00",
                               cmd=3)
    with s:
        assert reply[:2] == b"\x05\x00", reply
        relay = (socket.inet_ntoa(reply[4:8]), int.from_bytes(reply[8:10], "big"))
        assert relay[0] == "127.0.0.1"
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        u.bind(("127.0.0.1", 0))
        u.settimeout(10)
        with u:
            u.sendto(encode_udp("web", UDP_PORT, b"hello udp"), relay)
            d = decode_udp(u.recvfrom(65535)[0])
            assert (d.host, d.port, d.data) == (rig.web_ip(), UDP_PORT, b"echo:hello udp")
            u.sendto(encode_udp(rig.web_ip(), UDP_PORT, b"by ip"), relay)
            assert decode_udp(u.recvfrom(65535)[0]).data == b"echo:by ip"

    def counted() -> bool:  # the relay tells the server asynchronously
        st = rig.alpha.loopback_status()
        return st is not None and st.counters.get("socks_udp", 0) >= 1 and st.counters["udp_datagrams"] >= 4
    wait_until(counted, 10, "two datagrams each way counted")


def test_concurrent_clients_through_both_proxies(rig: Rig) -> None:
    """24 clients at once, half SOCKS5 and half HTTP, each posting its own body: every answer is its own."""
    from concurrent.futures import ThreadPoolExecutor

    def one(i: int) -> bytes:
        scheme = "socks5" if i % 2 else "http"
        with httpx.Client(proxy=f"{scheme}://tsnet:{rig.cred}@{rig.addr}", trust_env=False, timeout=30) as c:
            return c.post("http://web:8080/echo", content=str(i).encode() * 5000).content

    with ThreadPoolExecutor(24) as pool:
        got = list(pool.map(one, range(24)))
    assert got == [str(i).encode() * 5000 for i in range(24)]
    wait_until(lambda: (st := rig.alpha.loopback_status()) is not None and st.open == 0, 10, "all closed")
