"""Chaos: the peerAPI server actor killed mid-request, on a device in a local tailnet.

alpha has sent the first half of a DoH request to beta's peerAPI when beta's ``peerapi`` server
actor is killed. The connection's own actor is a sibling of the server under ``peerapi.sup``, so
the request in flight survives: alpha sends the rest after the restart and gets beta's MagicDNS
answer. The server restarts, accepts on the same device-owned listener, and a new connection is
served. A connection actor killed with half a request in it ends that connection only. The device
stays Running throughout.
"""

from __future__ import annotations

import base64
import contextlib
from collections.abc import Callable

import dns.message

from pytsnet import ActorDevice, Config
from pytsnet.actors.runtime import FaultInjector
from pytsnet.errors import ConnectionReset
from pytsnet.testing.peerapi import http_request
from pytsnet.testing.polling import wait_until


def _doh_target(name: str, qid: int) -> str:
    q = dns.message.make_query(name, "A")
    q.id = qid
    return "/dns-query?dns=" + base64.urlsafe_b64encode(q.to_wire()).decode().rstrip("=")


def _fqdn(dev: ActorDevice) -> str:
    st = dev.status()
    assert st.self_node is not None
    return st.self_node.name


def _read_response(sock: object) -> bytes:
    """One whole HTTP/1.1 response with a Content-Length (the peerAPI's DoH answers have one)."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)  # type: ignore[attr-defined]
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length:"))
    while len(body) < length:
        body += sock.recv(65536)  # type: ignore[attr-defined]
    return head + b"\r\n\r\n" + body


def test_killing_the_peerapi_server_mid_request_is_survived(device_config: Callable[[str], Config]) -> None:
    with ActorDevice(device_config("alpha")) as a, ActorDevice(device_config("beta")) as b:
        a.up_blocking(30)
        b.up_blocking(30)
        wait_until(lambda: len(a.status().peers) == 1 and len(b.status().peers) == 1, 20, "peers")
        assert b.system is not None
        b_ip, port = b.tailscale_ips()[0], b.peerapi_port
        host = f"{b_ip}:{port}"
        server = b.system.lookup("peerapi")
        assert server is not None and server.incarnation == 1

        sock = a.tcp_connect_blocking(b_ip, port, timeout=20)
        sock.settimeout(30)
        target = _doh_target(_fqdn(a), 9)  # alpha's own name: beta's resolver answers it from the netmap
        whole = f"GET {target} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
        sock.sendall(whole[:20])  # the request is in flight: its connection actor holds half of it
        system = b.system
        wait_until(lambda: system.lookup("peerapi-c1-1") is not None, 10, "the connection's actor")
        FaultInjector.kill_now(server, "chaos: the peerAPI server mid-request")
        wait_until(lambda: server.incarnation == 2 and server.is_alive, 10, "peerapi restarted")
        sock.sendall(whole[20:])
        answer = _read_response(sock)
        assert answer.startswith(b"HTTP/1.1 200 "), answer[:200]
        msg = dns.message.from_wire(answer.split(b"\r\n\r\n", 1)[1])
        assert msg.id == 9 and [r.to_text() for r in msg.answer[0]] == [a.tailscale_ips()[0]]
        sock.close()

        # the restarted server accepts on the same listener
        fresh = a.tcp_connect_blocking(b_ip, port, timeout=20)
        fresh.settimeout(20)
        ans = http_request(fresh, "GET", _doh_target("svc.example.", 10), host=host)
        assert ans is not None and ans.status == 200 and dns.message.from_wire(ans.body).id == 10
        fresh.close()

        # a connection actor killed with half a request ends that connection, nothing else
        half = a.tcp_connect_blocking(b_ip, port, timeout=20)
        half.settimeout(20)
        half.sendall(b"GET /dns-query HTTP/1.1\r\nHost: pe")
        # the restarted server's second connection (its first was ``fresh``)
        wait_until(lambda: system.lookup("peerapi-c2-2") is not None, 10, "the connection's actor")
        victim = system.lookup("peerapi-c2-2")
        assert victim is not None
        FaultInjector.kill_now(victim, "chaos: one peerAPI connection mid-request")
        # closed without an answer: a FIN if the actor had read the half request before it died, a
        # RST if those bytes were still unread when its flow closed (RFC 1122: a close with unread
        # data resets, as Linux does)
        with contextlib.suppress(ConnectionReset):
            assert half.recv(4096) == b""
        half.close()
        last = a.tcp_connect_blocking(b_ip, port, timeout=20)
        last.settimeout(20)
        ans = http_request(last, "GET", "/nothing", host=host)
        assert ans is not None and ans.status == 404
        last.close()

        assert b.status().state == "Running" and a.status().state == "Running"
        assert b.status().counters["dns_doh_queries"] == 2
