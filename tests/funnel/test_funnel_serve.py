"""Funnel through Serve (Go ``tailscale funnel 443 on``): a serve config whose ``AllowFunnel`` has
``<fqdn>:443`` takes the public connections ``localnet --funnel`` brings for that target into the
port's Serve handler (Go ``HandleIngressTCPConn`` → ``tcpHandlerForServe``), TLS terminated by Serve
with a certificate a test CA (trustme) issued for the node's MagicDNS name.

Also: the Proxy backend sees Go's ``Tailscale-Funnel-Request: ?1`` and the public client, never a
tailnet identity; a served port without ``AllowFunnel`` refuses the ingress (Go's 403 ``denied``);
``AllowFunnel`` without the tailnet's Funnel grant is a typed error from ``set_serve_config``; a
Funnel listener on the port is asked before Serve (as Go asks tsnet's listener first); control sees
``Hostinfo.IngressEnabled`` / ``WireIngress``.
"""

from __future__ import annotations

import http.server
import json
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import anyio
import pytest
import trustme
from anyio.streams.tls import TLSStream
from funnel_rig import curl, fqdn, funnel_tailnet, ingress_req, provider_for, raw_peerapi

from pytsnet.actors.peerapi.ingress import IngressHandoff, IngressRoutes
from pytsnet.actors.runtime import FaultInjector
from pytsnet.actors.serve.funnel import FunnelInbox
from pytsnet.device import ActorDevice
from pytsnet.errors import FunnelPortNotAllowed, FunnelUnavailable
from pytsnet.funnel import FunnelStream
from pytsnet.localapi.server import LocalRequest
from pytsnet.messages.control import LiteUpdate
from pytsnet.messages.serve import ServeSpawn
from pytsnet.serve import ServeConfig
from pytsnet.testing.polling import wait_until
from pytsnet.testing.tailnet import Tailnet
from pytsnet.wire.serve import funnel_ports, funnel_targets, ingress_flags

pytestmark = pytest.mark.timeout(180)

HOSTINFO_INTERVAL = 0.2
"""localnet relays (and stores) a node's Hostinfo change at most this often: short, so a change is
seen soon and a lost flag shows within a few intervals."""


class Backend:
    """A host HTTP server recording the headers of each request it got."""

    def __init__(self) -> None:
        self.seen: list[dict[str, str]] = []
        seen = self.seen

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                seen.append({k.lower(): v for k, v in self.headers.items()})
                body = b"backend " + self.path.encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def backend() -> Iterator[Backend]:
    b = Backend()
    yield b
    b.close()


@pytest.fixture(scope="module")
def tn(tmp_path_factory: pytest.TempPathFactory, ca: trustme.CA) -> Iterator[Tailnet]:
    with funnel_tailnet(tmp_path_factory.mktemp("funnelserve"), hostinfo_interval=HOSTINFO_INTERVAL) as net:
        net["web"].serve_cert_provider = provider_for(ca, [])
        yield net


def funnel_config(dev: ActorDevice, backend: Backend, *, allow: bool | None = True) -> ServeConfig:
    name = fqdn(dev)
    raw: dict[str, Any] = {
        "TCP": {"443": {"HTTPS": True}, "8443": {"HTTPS": True}},
        "Web": {f"{name}:443": {"Handlers": {"/": {"Text": "hello through funnel"},
                                             "/api/": {"Proxy": f"http://127.0.0.1:{backend.port}"}}},
                f"{name}:8443": {"Handlers": {"/": {"Text": "tailnet only"}}}},
    }
    if allow is not None:
        raw["AllowFunnel"] = {f"{name}:443": allow}
    return ServeConfig.model_validate(raw)


def raw_ingress(tn: Tailnet, target: str) -> bytes:
    """An ingress request for ``target`` from the ingress node itself (it holds the ingress cap)."""
    ingress, web = tn.net.funnel, tn["web"]
    assert ingress is not None and ingress.device is not None
    return raw_peerapi(ingress.device, web, ingress_req(web, src="198.51.100.7:4000", tgt=target))


def hostinfo(tn: Tailnet, dev: ActorDevice) -> dict[str, object]:
    return tn.net.node(dev.state.name.split(".")[0]).hostinfo


def test_curl_through_the_ingress_reaches_serve_text_and_proxy(tn: Tailnet, ca_file: Path,
                                                               backend: Backend) -> None:
    web = tn["web"]
    ingress = tn.net.funnel
    assert ingress is not None
    pub = ingress.address[1]
    web.set_serve_config_blocking(funnel_config(web, backend))
    try:
        body, _ = curl(ca_file, fqdn(web), pub, "/")
        assert body == "hello through funnel"
        backend.seen.clear()
        body, _ = curl(ca_file, fqdn(web), pub, "/api/x?y=1")
        assert body == "backend /x?y=1"
        (h,) = backend.seen
        assert h["tailscale-funnel-request"] == "?1"  # Go's funnelFlow header
        assert h["x-forwarded-for"] == "127.0.0.1"  # the public client (curl), not the ingress node
        assert h["x-forwarded-proto"] == "https"
        assert not any(k.startswith("tailscale-user-") or k == "tailscale-headers-info" for k in h)
        assert web.serve_status().counters.get("funnel", 0) >= 2
        assert web.status().counters.get("peerapi_ingress", 0) >= 2
        # curl is gone: its connections end (the ingress carries its close over the tailnet)
        wait_until(lambda: web.serve_status().open == 0, 20, "the Funnel connections end")
    finally:
        web.set_serve_config_blocking(None)


def test_a_tailnet_client_of_the_same_port_still_gets_its_identity(tn: Tailnet, ca: trustme.CA,
                                                                   backend: Backend) -> None:
    """The funnel header is for Funnel flows only: a tailnet peer on the same port is a tailnet client."""
    web, peer = tn["web"], tn["peer"]
    web.set_serve_config_blocking(funnel_config(web, backend))
    try:
        backend.seen.clear()
        ctx = ssl.create_default_context(cadata=ca.cert_pem.bytes().decode())

        async def main() -> bytes:
            stream = await peer.tcp_connect(tn.ip(web), 443)
            tls = await TLSStream.wrap(stream, hostname=fqdn(web), ssl_context=ctx, standard_compatible=False)
            await tls.send(f"GET /api/t HTTP/1.1\r\nHost: {fqdn(web)}\r\nConnection: close\r\n\r\n".encode())
            got = b""
            with anyio.fail_after(20):
                while b"backend /t" not in got:
                    got += await tls.receive()
            await tls.aclose()
            return got

        anyio.run(main)
        (h,) = backend.seen
        assert "tailscale-funnel-request" not in h
        assert h["x-forwarded-for"] == tn.ip(peer)
    finally:
        web.set_serve_config_blocking(None)


def test_a_served_port_without_allow_funnel_refuses_the_ingress(tn: Tailnet, backend: Backend) -> None:
    web = tn["web"]
    web.set_serve_config_blocking(funnel_config(web, backend))
    try:
        # 8443 has an HTTPS handler but no AllowFunnel entry: Go's sendRST, a 403 "denied"
        out = raw_ingress(tn, f"{fqdn(web)}:8443")
        assert out.startswith(b"HTTP/1.1 403 ") and out.endswith(b"denied\n")
        # AllowFunnel for 443 but switched off (false): refused as well
        web.set_serve_config_blocking(funnel_config(web, backend, allow=False))
        out = raw_ingress(tn, f"{fqdn(web)}:443")
        assert out.startswith(b"HTTP/1.1 403 ") and out.endswith(b"denied\n")
    finally:
        web.set_serve_config_blocking(None)
    # no serve config at all: refused
    out = raw_ingress(tn, f"{fqdn(web)}:443")
    assert out.startswith(b"HTTP/1.1 403 ") and out.endswith(b"denied\n")


def test_allow_funnel_without_the_grant_is_a_typed_error(tn: Tailnet, backend: Backend) -> None:
    nof, web = tn["nofunnel"], tn["web"]
    with pytest.raises(FunnelUnavailable, match='"funnel" node attribute not set'):
        nof.set_serve_config_blocking(funnel_config(nof, backend))
    assert nof.get_serve_config_blocking()[0] is None  # nothing applied
    # the LocalAPI's serve-config answers it as Go's WriteErrorJSON (500, "updating config: …")
    body = funnel_config(nof, backend).model_dump_json().encode()
    r = nof.local_api().handle(LocalRequest("POST", "/localapi/v0/serve-config", body=body), permit_read=True,
                               permit_write=True)
    assert r.status == 500
    assert json.loads(r.body)["error"].startswith('updating config: Funnel not available; "funnel" node')
    assert nof.get_serve_config_blocking()[0] is None
    bad = funnel_config(web, backend)
    bad = bad.model_copy(update={"AllowFunnel": {f"{fqdn(web)}:8080": True}})
    with pytest.raises(FunnelPortNotAllowed, match="port 8080 is not allowed for funnel"):
        web.set_serve_config_blocking(bad)
    assert web.get_serve_config_blocking()[0] is None


def test_a_funnel_listener_on_the_port_is_asked_before_serve(tn: Tailnet, ca: trustme.CA, ca_file: Path,
                                                             backend: Backend) -> None:
    web = tn["web"]
    ingress = tn.net.funnel
    assert ingress is not None
    web.set_serve_config_blocking(funnel_config(web, backend))
    try:
        async def main() -> str:
            # funnel_only: Serve keeps the tailnet side of 443; the public side goes to the listener
            ln = await web.listen_funnel(443, funnel_only=True, cert_provider=provider_for(ca, []))
            async with ln, anyio.create_task_group() as tg:
                async def answer() -> None:
                    s: FunnelStream = await ln.accept()
                    req = b""
                    while b"\r\n\r\n" not in req:
                        req += await s.receive()
                    await s.send(b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\nConnection: close\r\n\r\nlistener")
                    await s.aclose()
                tg.start_soon(answer)
                body, _ = await anyio.to_thread.run_sync(curl, ca_file, fqdn(web), ingress.address[1], "/")
            return body

        assert anyio.run(main) == "listener"
        body, _ = curl(ca_file, fqdn(web), ingress.address[1], "/")  # the listener closed: Serve again
        assert body == "hello through funnel"
    finally:
        web.set_serve_config_blocking(None)


def test_control_sees_ingress_enabled_and_wire_ingress(tn: Tailnet, backend: Backend) -> None:
    web = tn["web"]
    web.set_serve_config_blocking(funnel_config(web, backend))
    try:
        wait_until(lambda: hostinfo(tn, web).get("IngressEnabled") is True, 30, "IngressEnabled at control")
        assert not hostinfo(tn, web).get("WireIngress")
        web.set_serve_config_blocking(funnel_config(web, backend, allow=False))
        wait_until(lambda: hostinfo(tn, web).get("WireIngress") is True, 30, "WireIngress at control")
        assert not hostinfo(tn, web).get("IngressEnabled")
    finally:
        web.set_serve_config_blocking(None)
    def no_flags() -> bool:
        hi = hostinfo(tn, web)
        return not hi.get("WireIngress") and not hi.get("IngressEnabled")
    wait_until(no_flags, 30, "no ingress flags at control")


def test_a_restarted_control_runner_keeps_the_ingress_flags(tn: Tailnet, backend: Backend) -> None:
    """The flags live in the runner's restart memory (with 20d's ServicesHash): its next incarnation's
    Hostinfo still carries them, so control does not lose the node's Funnel."""
    web = tn["web"]
    web.set_serve_config_blocking(funnel_config(web, backend))
    try:
        wait_until(lambda: hostinfo(tn, web).get("IngressEnabled") is True, 30, "IngressEnabled at control")
        assert web.system is not None
        ref = web.system.lookup("control")
        assert ref is not None
        FaultInjector.kill_now(ref, "chaos: the Funnel node's control runner")
        wait_until(lambda: ref.incarnation == 2 and ref.is_alive, 20, "control runner restarted")
        web.up_blocking(30)
        # an endpoint update (a lite map request, whose Hostinfo control applies at once)
        endpoints = list(web.dataplane_info().endpoints)
        update = LiteUpdate(endpoints=endpoints, endpoint_types=[2] * len(endpoints))
        wait_until(lambda: ref.ask(update, timeout=15).ok, 30, "control took the lite update", interval=0.2)
        time.sleep(10 * HOSTINFO_INTERVAL)  # a Hostinfo without the flags would be stored by now
        assert hostinfo(tn, web).get("IngressEnabled") is True
    finally:
        web.set_serve_config_blocking(None)


# -- the sans-IO parts -------------------------------------------------------------------------------------
def test_funnel_targets_and_hostinfo_flags_follow_gos_rules() -> None:
    cfg = ServeConfig.model_validate({
        "TCP": {"443": {"HTTPS": True}, "10000": {"TCPForward": "127.0.0.1:22"}},
        "Web": {"Web.Tail.ts.net:443": {"Handlers": {"/": {"Text": "x"}}}},
        "AllowFunnel": {"Web.Tail.ts.net:443": True, "web.tail.ts.net:8443": True,
                        "web.tail.ts.net:10000": False}})
    # 8443 has no TCP handler (Go FindTCP fails: sendRST); 10000 is switched off
    assert funnel_targets(cfg) == {"web.tail.ts.net:443": 443}
    assert funnel_ports(cfg) == [443, 8443]
    assert ingress_flags(cfg) == (True, False)
    off = cfg.model_copy(update={"AllowFunnel": {"web.tail.ts.net:443": False}})
    assert funnel_targets(off) == {} and ingress_flags(off) == (False, True)
    assert ingress_flags(cfg.model_copy(update={"AllowFunnel": {}})) == (False, False)
    assert funnel_targets(None) == {} and ingress_flags(None) == (False, False)


def test_ingress_routes_ask_the_listener_before_serve() -> None:
    routes = IngressRoutes()
    got: list[tuple[str, int]] = []

    def serve(port: int, h: IngressHandoff) -> bool:
        got.append(("serve", port))
        return True

    assert routes.route("web.tail.ts.net", 443) is None
    routes.set_serve({"web.tail.ts.net:443": 443}, serve)
    taker = routes.route("WEB.tail.ts.net", 443)
    assert taker is not None
    taker(cast(IngressHandoff, None))
    assert got == [("serve", 443)]
    assert routes.route("other.tail.ts.net", 443) is None
    assert routes.route("web.tail.ts.net", 8443) is None

    def listener(h: IngressHandoff) -> bool:
        return True

    routes.register(443, listener)
    assert routes.route("web.tail.ts.net", 443) is listener
    routes.unregister(443, listener)
    routes.set_serve({}, None)
    assert routes.route("web.tail.ts.net", 443) is None


def test_the_funnel_inbox_is_bounded_and_a_dropped_port_closes_its_flows() -> None:
    class NoSystem:
        def lookup(self, name: str) -> None:
            return None

    closed: list[int] = []

    class Chan:
        def __init__(self, i: int) -> None:
            self.i = i

        def close(self) -> None:
            closed.append(self.i)

    inbox = FunnelInbox(cast(Any, NoSystem()), ServeSpawn(), backlog=2)

    def handoff(i: int) -> IngressHandoff:
        return IngressHandoff(channel=cast(Any, Chan(i)), prefix=b"", request=cast(Any, None),
                              ingress_peer=cast(Any, None))

    assert inbox.offer(443, handoff(1)) and inbox.offer(443, handoff(2))
    assert not inbox.offer(443, handoff(3))  # full: the peerAPI closes it
    assert [cast(Any, h.channel).i for h in inbox.take(443)] == [1, 2]
    assert inbox.offer(443, handoff(4))
    inbox.drop(443)
    assert closed == [4] and inbox.take(443) == []
