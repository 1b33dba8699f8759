"""``ServiceModeTCP(port, terminate_tls=…, proxy_protocol=…)`` (20h), Go's way: the service port in
the serve config's ``Services`` as a ``TCPForward`` to the listener's loopback address, TLS terminated
with the certificate for the service's FQDN and/or the PROXY header naming the tailnet caller, the
plaintext to the app. Closing takes the entry out; a bad version is refused before anything changes."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from pytsnet.device import ActorDevice
from pytsnet.localnet.services import ServiceDef
from pytsnet.services.listener import ForwardServiceListener, ServiceModeTCP
from pytsnet.testing.polling import wait_until
from pytsnet.testing.serve import TestCA
from pytsnet.testing.tailnet import tagged_host_and_peer
from pytsnet.wire.proxy_protocol import ProxyHeader, parse
from pytsnet.wire.serve import TCPPortHandler

pytestmark = pytest.mark.timeout(180)

SERVICES = {"svc:db": ServiceDef(ports=("tcp:5432",), tags=("tag:db",)),
            "svc:pp": ServiceDef(ports=("tcp:7000",), tags=("tag:db",))}


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ActorDevice, ActorDevice, TestCA]]:
    tmp = tmp_path_factory.mktemp("svctcptls")
    with tagged_host_and_peer(tmp, ("tag:db",), services=SERVICES) as (_net, host, peer):
        ca = TestCA()
        host.serve_cert_provider = ca.provider
        yield host, peer, ca


def _app(lst: object, got: list[bytes]) -> threading.Thread:
    """The app: reads what arrives on one forwarded connection, answers ``ok:`` + it, until EOF."""
    assert isinstance(lst, ForwardServiceListener)  # the forwarded TCP mode's listener

    def run() -> None:
        conn, _ = lst.accept(timeout=30)
        with conn:
            conn.settimeout(20)
            data = b""
            while len(data) < 200 and not data.endswith(b"END"):
                chunk = conn.recv(4096)
                if not chunk:
                    break
                data += chunk
            got.append(data)
            conn.sendall(b"ok")
    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def _v4(dev: ActorDevice) -> str:
    return next(a for a in dev.tailscale_ips() if ":" not in a)


def test_terminate_tls_with_the_service_fqdn_cert(rig: tuple[ActorDevice, ActorDevice, TestCA]) -> None:
    host, peer, ca = rig
    with host.listen_service_blocking("svc:db", ServiceModeTCP(port=5432, terminate_tls=True)) as lst:
        assert isinstance(lst, ForwardServiceListener)
        cfg, _ = host.get_serve_config_blocking()
        assert cfg is not None and cfg.Services["svc:db"].TCP[5432] == TCPPortHandler(
            TCPForward=lst.local_addr, TerminateTLS=lst.fqdn)  # Go's SetTCPForwardingForService
        wait_until(lambda: bool(lst.vips()), 30, "VIP assigned")
        got: list[bytes] = []
        t = _app(lst, got)
        raw = peer.connect_socket(lst.vips()[0], 5432, timeout=20)
        raw.settimeout(20)
        with ca.client_context().wrap_socket(raw, server_hostname=lst.fqdn) as tls:
            assert tls.getpeercert() is not None  # verified chain for the service FQDN
            tls.sendall(b"SELECT 1;END")
            assert tls.recv(10) == b"ok"
        t.join(10)
        assert got == [b"SELECT 1;END"]  # the app gets plaintext, no header
        assert lst.fqdn in ca.issued
    cfg, _ = host.get_serve_config_blocking()
    assert cfg is None or "svc:db" not in cfg.Services  # closing took the entry out


@pytest.mark.parametrize("version", [1, 2])
def test_proxy_protocol_names_the_caller(rig: tuple[ActorDevice, ActorDevice, TestCA], version: int) -> None:
    host, peer, _ca = rig
    with host.listen_service_blocking("svc:pp", ServiceModeTCP(port=7000, proxy_protocol=version)) as lst:
        wait_until(lambda: bool(lst.vips()), 30, "VIP assigned")
        got: list[bytes] = []
        t = _app(lst, got)
        with peer.tcp_connect_blocking(lst.vips()[0], 7000, timeout=20) as sock:
            sock.settimeout(20)
            sock.sendall(b"helloEND")
            assert sock.recv(10) == b"ok"
            sport = sock.getsockname()[1]
        t.join(10)
        parsed = parse(got[0])
        assert parsed is not None
        header, n = parsed
        assert header == ProxyHeader(version, (_v4(peer), sport), header.dst)
        assert header.dst is not None and header.dst[0] == _v4(host)  # Go: the node's own address
        assert got[0][n:] == b"helloEND"


def test_tls_and_proxy_protocol_together(rig: tuple[ActorDevice, ActorDevice, TestCA]) -> None:
    host, peer, ca = rig
    mode = ServiceModeTCP(port=5432, terminate_tls=True, proxy_protocol=2)
    with host.listen_service_blocking("svc:db", mode) as lst:
        wait_until(lambda: bool(lst.vips()), 30, "VIP assigned")
        got: list[bytes] = []
        t = _app(lst, got)
        raw = peer.connect_socket(lst.vips()[0], 5432, timeout=20)
        raw.settimeout(20)
        with ca.client_context().wrap_socket(raw, server_hostname=lst.fqdn) as tls:
            tls.sendall(b"xEND")
            assert tls.recv(10) == b"ok"
        t.join(10)
        parsed = parse(got[0])
        assert parsed is not None and parsed[0].src is not None and parsed[0].src[0] == _v4(peer)
        assert got[0][parsed[1]:] == b"xEND"


def test_bad_proxy_protocol_version_is_refused(rig: tuple[ActorDevice, ActorDevice, TestCA]) -> None:
    host, _peer, _ca = rig
    before = host.get_serve_config_blocking()
    with pytest.raises(ValueError, match="must be 1 or 2"):
        host.listen_service_blocking("svc:pp", ServiceModeTCP(port=7000, proxy_protocol=3))
    assert host.get_serve_config_blocking() == before


def test_forward_config_edits() -> None:
    """Go's ``SetTCPForwardingForService`` and its removal as pure edits: a loopback entry of an
    earlier run (forward or HTTP-mode web proxy) is replaced, someone else's refused; removal
    leaves a replaced entry alone."""
    from pytsnet.errors import ServiceUnavailable
    from pytsnet.services.serving_config import (
        with_service_forward,
        with_service_web,
        without_service_forward,
    )
    from pytsnet.wire.serve import ServeConfig, ServiceConfig, validate

    fqdn = "db.localnet.ts.net"
    cfg = with_service_forward(None, "svc:db", fqdn, 5432, "127.0.0.1:4000", True, 1)
    validate(cfg)
    assert cfg.Services["svc:db"].TCP[5432] == TCPPortHandler(TCPForward="127.0.0.1:4000", TerminateTLS=fqdn,
                                                              ProxyProtocol=1)
    again = with_service_forward(cfg, "svc:db", fqdn, 5432, "127.0.0.1:5000", False, 0)  # leftover: replaced
    assert again.Services["svc:db"].TCP[5432] == TCPPortHandler(TCPForward="127.0.0.1:5000")
    web = with_service_web(None, "svc:db", fqdn, 5432, False, "127.0.0.1:6000")
    replaced = with_service_forward(web, "svc:db", fqdn, 5432, "127.0.0.1:5000", False, 2)
    assert replaced.Services["svc:db"].Web == {}
    assert replaced.Services["svc:db"].TCP[5432].ProxyProtocol == 2
    foreign = ServeConfig(Services={"svc:db": ServiceConfig(
        TCP={5432: TCPPortHandler(TCPForward="10.0.0.1:1")})})
    with pytest.raises(ServiceUnavailable):
        with_service_forward(foreign, "svc:db", fqdn, 5432, "127.0.0.1:5000", False, 0)
    assert without_service_forward(again, "svc:db", 5432, "127.0.0.1:4000") == again  # not ours any more
    gone = without_service_forward(again, "svc:db", 5432, "127.0.0.1:5000")
    assert gone is not None and "svc:db" not in gone.Services
