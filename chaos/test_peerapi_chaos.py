"""Chaos: the peerAPI server actor killed mid-request, on a device in a local tailnet.

alpha sends beta a DoH request; beta's resolver (a stand-in registered as ``dns``) holds its answer
while beta's ``peerapi`` server actor is killed. The connection's own actor is a sibling of the
server under ``peerapi.sup``, so the request in flight is still answered; the server restarts, accepts
on the same device-owned listener, and a new connection is served. A connection actor killed with
half a request in it ends that connection only. The device stays Running throughout.
"""

from __future__ import annotations

import base64
import threading
from collections.abc import Callable

import dns.message

from pytsnet import ActorDevice, Config
from pytsnet.actors.runtime import FaultInjector
from pytsnet.messages.dns import DnsQuery
from pytsnet.testing.peerapi import HttpAnswer, http_request, serve_stub_resolver
from pytsnet.testing.polling import wait_until


def _doh_target(name: str, qid: int) -> str:
    q = dns.message.make_query(name, "A")
    q.id = qid
    return "/dns-query?dns=" + base64.urlsafe_b64encode(q.to_wire()).decode().rstrip("=")


def test_killing_the_peerapi_server_mid_request_is_survived(device_config: Callable[[str], Config]) -> None:
    with ActorDevice(device_config("alpha")) as a, ActorDevice(device_config("beta")) as b:
        a.up_blocking(30)
        b.up_blocking(30)
        wait_until(lambda: len(a.status().peers) == 1 and len(b.status().peers) == 1, 20, "peers")
        assert b.system is not None
        hold, asked = threading.Event(), threading.Event()
        seen: list[DnsQuery] = []
        serve_stub_resolver(b.system, {"svc.example": "100.64.7.7"}, seen, hold, asked)
        b_ip, port = b.tailscale_ips()[0], b.peerapi_port
        host = f"{b_ip}:{port}"
        server = b.system.lookup("peerapi")
        assert server is not None and server.incarnation == 1

        sock = a.tcp_connect_blocking(b_ip, port, timeout=20)
        sock.settimeout(30)
        answers: list[HttpAnswer | None] = []
        target = _doh_target("svc.example.", 9)
        t = threading.Thread(target=lambda: answers.append(http_request(sock, "GET", target, host=host)))
        t.start()
        assert asked.wait(20), "the request reached the resolver"
        FaultInjector.kill_now(server, "chaos: the peerAPI server mid-request")
        wait_until(lambda: server.incarnation == 2 and server.is_alive, 10, "peerapi restarted")
        hold.set()
        t.join(30)
        assert answers and answers[0] is not None and answers[0].status == 200
        assert dns.message.from_wire(answers[0].body).id == 9
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
        system = b.system
        # the restarted server's second connection (its first was ``fresh``)
        wait_until(lambda: system.lookup("peerapi-c2-2") is not None, 10, "the connection's actor")
        victim = system.lookup("peerapi-c2-2")
        assert victim is not None
        FaultInjector.kill_now(victim, "chaos: one peerAPI connection mid-request")
        assert half.recv(4096) == b""  # closed without an answer
        half.close()
        last = a.tcp_connect_blocking(b_ip, port, timeout=20)
        last.settimeout(20)
        ans = http_request(last, "GET", "/nothing", host=host)
        assert ans is not None and ans.status == 404
        last.close()

        assert b.status().state == "Running" and a.status().state == "Running"
        assert len(seen) == 2
