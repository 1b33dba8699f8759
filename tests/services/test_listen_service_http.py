"""``listen_service(name, ServiceModeHTTP(...))`` as Go's (issue 20f): the port goes into the serve
config's ``Services``, Serve answers the VIP's connections and proxies each request, with the caller's
``Tailscale-User-*`` / ``X-Forwarded-*`` headers (the caller's own copies dropped), to a loopback
listener the app accepts from; closing takes the entry out and withdraws the service. Plus the pure
parts: Go's validation of ``Services`` and the config edits (``pytsnet.services.serving_config``)."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from pytsnet.device import ActorDevice
from pytsnet.errors import (
    ConnectionRefused,
    ServiceUnavailable,
    UntaggedServiceHost,
)
from pytsnet.localnet.server import LocalTailnet
from pytsnet.localnet.services import ServiceDef
from pytsnet.serve import HTTPHandler, ServeConfig, ServiceConfig, TCPPortHandler, WebServerConfig
from pytsnet.services.listener import HttpServiceListener, ServiceModeHTTP, ServiceModeTCP
from pytsnet.services.serving_config import with_service_web, without_service_web
from pytsnet.testing.netns import Netns
from pytsnet.testing.pebble_tailnet import pebble_tailnet, socks_curl
from pytsnet.testing.polling import wait_until
from pytsnet.testing.serve import TestCA, read_head
from pytsnet.testing.tailnet import tagged_host_and_peer
from pytsnet.wire.serve import ServeConfigError, service_slice, validate, validate_update

pytestmark = pytest.mark.timeout(180)

SERVICES = {"svc:web": ServiceDef(ports=("tcp:80",), tags=("tag:web",)),
            "svc:tls": ServiceDef(ports=("tcp:443",), tags=("tag:web",)),
            "svc:raw": ServiceDef(ports=("tcp:81",), tags=("tag:web",))}
"""One port each: localnet approves a host whose advertised ports are exactly the definition's."""


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalTailnet, ActorDevice, ActorDevice]]:
    with tagged_host_and_peer(tmp_path_factory.mktemp("svchttp"), services=SERVICES) as rig:
        yield rig


@pytest.fixture
def host(rig: tuple[LocalTailnet, ActorDevice, ActorDevice]) -> Iterator[ActorDevice]:
    dev = rig[1]
    yield dev
    dev.set_serve_config_blocking(None)


def _app(lst: HttpServiceListener, seen: list[dict[str, object]], n: int = 1) -> threading.Thread:
    """The app: answers ``n`` proxied requests with what it got (headers as a list, peer address)."""
    def run() -> None:
        for _ in range(n):
            conn, peer = lst.accept(timeout=30)
            with conn:
                conn.settimeout(10)
                head = read_head(conn).split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
                headers = [tuple(x.strip() for x in line.split(":", 1)) for line in head[1:] if ":" in line]
                seen.append({"request": head[0], "headers": headers, "peer": peer[0]})
                body = b"from the app"
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n"
                             b"Connection: close\r\n\r\n%s" % (len(body), body))
    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def _get(sock: socket.socket, host_header: str, extra: bytes = b"") -> bytes:
    sock.settimeout(20)
    sock.sendall(b"GET /some/path?q=1 HTTP/1.1\r\nHost: " + host_header.encode() + b"\r\n" + extra
                 + b"Connection: close\r\n\r\n")
    out = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return out
        out += chunk


def _values(seen: dict[str, object], name: str) -> list[str]:
    headers = seen["headers"]
    assert isinstance(headers, list)
    return [v for k, v in headers if k.lower() == name]


def test_http_request_reaches_the_app_with_the_callers_identity(
        rig: tuple[LocalTailnet, ActorDevice, ActorDevice], host: ActorDevice) -> None:
    _net, _host, peer = rig
    with host.listen_service_blocking("svc:web", ServiceModeHTTP(port=80)) as lst:
        assert isinstance(lst, HttpServiceListener)
        wait_until(lambda: bool(lst.vips()), 20, "control approves the host and gives it the VIP")
        vip = lst.vips()[0]
        cfg, _ = host.get_serve_config_blocking()
        assert cfg is not None  # Go's SetWebHandler for a service name: its TCP port and its FQDN's Web
        assert cfg.Services["svc:web"].TCP[80] == TCPPortHandler(HTTP=True)
        assert cfg.Services["svc:web"].Web[f"{lst.fqdn}:80"].Handlers["/"].Proxy == lst.local_addr
        assert not cfg.TCP  # nothing on the node's own ports

        seen: list[dict[str, object]] = []
        t = _app(lst, seen, n=2)
        spoof = b"Tailscale-User-Login: spoofed@evil\r\nX-Forwarded-For: 203.0.113.66\r\n"
        with peer.connect_socket(vip, 80, timeout=20) as sock:
            answer = _get(sock, lst.fqdn, spoof)
        assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b"from the app"), answer
        with peer.connect_socket(vip, 80, timeout=20) as sock:  # the VIP itself as Host: same Web server
            answer = _get(sock, vip)
        assert answer.startswith(b"HTTP/1.1 200"), answer
        t.join(10)

        peer_ip = peer.tailscale_ips()[0]
        login = host.whois(peer_ip).user.login_name
        assert login
        first = seen[0]
        assert first["request"] == "GET /some/path?q=1 HTTP/1.1"
        assert first["peer"] == "127.0.0.1"  # proxied by the node, as Go's
        assert _values(first, "tailscale-user-login") == [login]  # the caller's own, the spoofed copy dropped
        assert _values(first, "x-forwarded-for") == [peer_ip]
        assert _values(first, "tailscale-headers-info") == ["https://tailscale.com/s/serve-headers"]
        assert _values(seen[1], "tailscale-user-login") == [login]

        with pytest.raises(ConnectionRefused):  # a port of the VIP nobody hosts
            peer.connect_socket(vip, 81, timeout=15)
        with pytest.raises(ConnectionRefused):  # the node's own address does not serve the service's port
            peer.connect_socket(host.tailscale_ips()[0], 80, timeout=15)


def test_https_terminates_with_the_services_certificate(
        rig: tuple[LocalTailnet, ActorDevice, ActorDevice], host: ActorDevice) -> None:
    _net, _host, peer = rig
    ca = TestCA()
    host.serve_cert_provider = ca.provider
    try:
        with host.listen_service_blocking("svc:tls", ServiceModeHTTP(port=443, https=True)) as lst:
            wait_until(lambda: bool(lst.vips()), 20, "VIP assigned")
            seen: list[dict[str, object]] = []
            t = _app(lst, seen)
            raw = peer.connect_socket(lst.vips()[0], 443, timeout=20)
            with ca.client_context().wrap_socket(raw, server_hostname=lst.fqdn) as tls:
                assert tls.getpeercert() is not None  # a chain for the service's FQDN, verified
                answer = _get(tls, lst.fqdn)
            t.join(10)
            assert answer.startswith(b"HTTP/1.1 200"), answer
            assert ca.issued == [lst.fqdn]
            assert _values(seen[0], "x-forwarded-proto") == ["https"]
            login = host.whois(peer.tailscale_ips()[0]).user.login_name
            assert _values(seen[0], "tailscale-user-login") == [login]
    finally:
        host.serve_cert_provider = None


def test_tcp_mode_is_unchanged_next_to_http(
        rig: tuple[LocalTailnet, ActorDevice, ActorDevice], host: ActorDevice) -> None:
    """TCP mode still hands the app the tailnet connection itself (the caller's address as its peer),
    and is not in the serve config."""
    _net, _host, peer = rig
    with host.listen_service_blocking("svc:web", ServiceModeHTTP(port=80)) as web, \
            host.listen_service_blocking("svc:raw", ServiceModeTCP(port=81)) as raw:
        wait_until(lambda: bool(raw.vips()), 20, "VIP assigned")
        cfg, _ = host.get_serve_config_blocking()
        assert cfg is not None and set(cfg.Services) == {"svc:web"}

        got: list[tuple[str, bytes]] = []

        def serve() -> None:
            conn, addr = raw.accept(timeout=30)
            with conn:
                got.append((addr[0], conn.recv(100)))
                conn.sendall(b"raw")
        t = threading.Thread(target=serve, daemon=True)
        t.start()
        with peer.connect_socket(raw.vips()[0], 81, timeout=20) as sock:
            sock.settimeout(20)
            sock.sendall(b"GET / HTTP/1.1\r\n\r\n")
            assert sock.recv(100) == b"raw"
        t.join(10)
        assert got == [(peer.tailscale_ips()[0], b"GET / HTTP/1.1\r\n\r\n")]
        assert web.port == 80


def test_closing_withdraws_the_service_and_its_serve_entry(
        rig: tuple[LocalTailnet, ActorDevice, ActorDevice], host: ActorDevice) -> None:
    _net, _host, peer = rig
    other = ServeConfig(Services={"svc:other": ServiceConfig(
        TCP={8080: TCPPortHandler(HTTP=True)},
        Web={"other.x:8080": WebServerConfig(Handlers={"/": HTTPHandler(Text="kept")})})})
    host.set_serve_config_blocking(other)  # someone else's entry: closing leaves it alone
    lst = host.listen_service_blocking("svc:web", ServiceModeHTTP(port=80))
    wait_until(lambda: bool(lst.vips()), 20, "VIP assigned")
    vip = lst.vips()[0]
    with pytest.raises(ServiceUnavailable):  # one handler per service port, as Go
        host.listen_service_blocking("svc:web", ServiceModeHTTP(port=80))
    lst.close()
    cfg, _ = host.get_serve_config_blocking()
    assert cfg == other
    wait_until(lambda: not host.service_ips("svc:web"), 20, "control withdraws the VIP from the host")
    wait_until(lambda: not any(p.hostname == "host" and f"{vip}/32" in p.allowed_ips for p in peer.peers()),
               20, "peers stop routing the VIP")
    with pytest.raises(OSError):
        lst.accept(timeout=1)


def test_a_leftover_entry_is_replaced_and_a_foreign_one_refused(
        rig: tuple[LocalTailnet, ActorDevice, ActorDevice], host: ActorDevice) -> None:
    """The serve config persists across restarts: an entry proxying to a loopback port of an earlier
    run is ours to replace; any other entry for the port is refused (Go's error)."""
    fqdn = "web." + host.dataplane_info().netmap.domain  # type: ignore[union-attr]
    stale = with_service_web(None, "svc:web", fqdn, 80, False, "127.0.0.1:1")
    host.set_serve_config_blocking(stale)
    with host.listen_service_blocking("svc:web", ServiceModeHTTP(port=80)) as lst:
        cfg, _ = host.get_serve_config_blocking()
        assert cfg is not None
        assert cfg.Services["svc:web"].Web[f"{fqdn}:80"].Handlers["/"].Proxy == lst.local_addr
    foreign = ServeConfig(Services={"svc:web": ServiceConfig(
        TCP={80: TCPPortHandler(HTTP=True)},
        Web={f"{fqdn}:80": WebServerConfig(Handlers={"/": HTTPHandler(Text="mine")})})})
    host.set_serve_config_blocking(foreign)
    with pytest.raises(ServiceUnavailable):
        host.listen_service_blocking("svc:web", ServiceModeHTTP(port=80))
    assert host.get_serve_config_blocking()[0] == foreign  # nothing changed
    assert host._services.hosted("svc:web", 80) is None  # and nothing left open


def test_untagged_host_gets_the_typed_error(rig: tuple[LocalTailnet, ActorDevice, ActorDevice]) -> None:
    _net, _host, peer = rig
    with pytest.raises(UntaggedServiceHost):
        peer.listen_service_blocking("svc:web", ServiceModeHTTP(port=80))
    assert peer.get_serve_config_blocking()[0] is None


def test_a_services_entry_set_directly_is_served_on_the_vip(
        rig: tuple[LocalTailnet, ActorDevice, ActorDevice], host: ActorDevice) -> None:
    """Serve's own ``Services`` (not through ``listen_service``): a Text handler on the service's port,
    served on its VIP while a listener advertises the service; Serve takes the port over from a
    TCP-mode listener while the entry is there (in Go everything goes through the serve config)."""
    _net, _host, peer = rig
    with host.listen_service_blocking("svc:web", ServiceModeTCP(port=80)) as lst:
        wait_until(lambda: bool(lst.vips()), 20, "VIP assigned")
        host.set_serve_config_blocking(ServeConfig(Services={"svc:web": ServiceConfig(
            TCP={80: TCPPortHandler(HTTP=True)},
            Web={f"{lst.fqdn}:80": WebServerConfig(Handlers={"/": HTTPHandler(Text="svc text")})})}))
        with peer.connect_socket(lst.vips()[0], 80, timeout=20) as sock:
            answer = _get(sock, "anything")
        assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b"svc text"), answer
        host.set_serve_config_blocking(None)
        with peer.connect_socket(lst.vips()[0], 80, timeout=20) as sock:  # taken out: the app's again
            conn, addr = lst.accept(timeout=20)
            with conn:
                assert addr[0] == peer.tailscale_ips()[0]


# -- pure parts ---------------------------------------------------------------------------------------------
def test_services_validation_as_go() -> None:
    ok = with_service_web(None, "svc:web", "web.ts.net", 80, False, "127.0.0.1:5")
    validate(ok)
    assert json.loads(service_slice(ok, "svc:web", 80)) == {
        "TCP": {"80": {"HTTP": True}},
        "Web": {"web.ts.net:80": {"Handlers": {"/": {"Proxy": "127.0.0.1:5"}}}}}
    with pytest.raises(ServeConfigError, match="TUN mode in combination"):
        validate(ServeConfig(Services={"svc:web": ServiceConfig(Tun=True,
                                                                TCP={80: TCPPortHandler(HTTP=True)})}))
    with pytest.raises(ServeConfigError, match="valid service name"):
        validate(ServeConfig(Services={"svc:Web_1": ServiceConfig()}))
    with pytest.raises(ServeConfigError, match=r"Services\['svc:web'\]\.TCP\[80\]"):
        validate(ServeConfig(Services={"svc:web": ServiceConfig(TCP={80: TCPPortHandler()})}))
    https = with_service_web(None, "svc:web", "web.ts.net", 80, True, "127.0.0.1:5")
    with pytest.raises(ServeConfigError, match="already serving 'http' for svc:web"):
        validate_update(ok, https)  # Go: a service port keeps its serve type
    validate_update(ok, with_service_web(None, "svc:web", "web.ts.net", 81, True, "127.0.0.1:5"))


def test_config_edits_add_and_remove_only_their_own() -> None:
    base = ServeConfig(TCP={443: TCPPortHandler(HTTPS=True)})
    cfg = with_service_web(base, "svc:web", "web.ts.net", 80, False, "127.0.0.1:5")
    cfg = with_service_web(cfg, "svc:web", "web.ts.net", 81, True, "127.0.0.1:6")
    assert cfg.TCP == base.TCP and set(cfg.Services["svc:web"].TCP) == {80, 81}
    assert without_service_web(cfg, "svc:web", "web.ts.net", 80, "127.0.0.1:9") == cfg  # not ours: kept
    one = without_service_web(cfg, "svc:web", "web.ts.net", 80, "127.0.0.1:5")
    assert one is not None and set(one.Services["svc:web"].TCP) == {81}
    assert set(one.Services["svc:web"].Web) == {"web.ts.net:81"}
    none = without_service_web(one, "svc:web", "web.ts.net", 81, "127.0.0.1:6")
    assert none == base  # the emptied service goes (Go's cascade)
    with pytest.raises(ServiceUnavailable):  # a port with a non-loopback handler is someone else's
        with_service_web(ServeConfig(Services={"svc:web": ServiceConfig(
            TCP={80: TCPPortHandler(HTTP=True)},
            Web={"web.ts.net:80": WebServerConfig(Handlers={"/": HTTPHandler(Proxy="10.0.0.1:80")})})}),
            "svc:web", "web.ts.net", 80, False, "127.0.0.1:5")


# -- HTTPS with the node's own ACME certificate (pebble, in a namespace with no route out) ------------------
@pytest.mark.root
@pytest.mark.interop
def test_https_service_with_a_pebble_certificate_for_its_fqdn(netns: Netns, tmp_path: Path) -> None:
    """localnet puts the FQDN of each service a node hosts in its ``CertDomains`` (as Go's control,
    whose ``resolveCertDomain`` only issues those) and accepts its set-dns for it; the node's ACME
    client gets the service's certificate from pebble, and ``curl --cacert <pebble root>`` through a
    peer's SOCKS5 proxy verifies ``https://app.<domain>/`` (the VIP by MagicDNS) and reaches the app."""
    services = {"svc:app": ServiceDef(ports=("tcp:443",), tags=("tag:web",))}
    with pebble_tailnet(netns, tmp_path, services=services) as rig:
        host, alpha = rig.device("host", tags=["tag:web"]), rig.device("alpha")
        rig.running(host, alpha)
        assert host.serve_cert_provider is None
        lst = host.listen_service_blocking("svc:app", ServiceModeHTTP(port=443, https=True))
        rig.stack.callback(lst.close)
        wait_until(lambda: bool(lst.vips()), 20, "VIP assigned")
        wait_until(lambda: lst.fqdn in host.cert_domains(), 20, "control lists the service in CertDomains")
        seen: list[dict[str, object]] = []
        t = _app(lst, seen)
        code, body, err = socks_curl(alpha, "--cacert", str(rig.root), f"https://{lst.fqdn}/")
        assert (code, body) == (0, "from the app"), err
        t.join(10)
        assert _values(seen[0], "x-forwarded-for") == [alpha.tailscale_ips()[0]]
        code, _, _ = socks_curl(alpha, f"https://{lst.fqdn}/")  # without the pebble root: verified for real
        assert code == 60
