"""The LocalAPI of a running Python node: in-process, on its unix socket and on the loopback listener.

Two nodes on a LocalTailnet; alpha serves its LocalAPI on a unix socket too. Every answer is decoded
strictly into the Go-mirror models (field names, types, required fields: ``test_localapi_types``
proves those models against Go's struct tags).
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import stat
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pytsnet.errors import LocalApiError
from pytsnet.localapi.client import LocalClient
from pytsnet.localapi.server import MaskedPrefs
from pytsnet.localapi.types import PingResult, Status, WhoIsResponse
from pytsnet.testing.tailnet import Tailnet, local_tailnet

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def sockdir() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="la", dir="/tmp"))  # AF_UNIX paths are short (108 bytes)
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module")
def tn(tmp_path_factory: pytest.TempPathFactory, sockdir: Path) -> Iterator[Tailnet]:
    tmp = tmp_path_factory.mktemp("localapi")
    with local_tailnet(tmp, ["alpha", "beta"]) as net:
        yield net


@pytest.fixture(scope="module")
def alpha_sock(tn: Tailnet, sockdir: Path) -> Path:
    """A third device would need its own tailnet slot: alpha's socket is served by a second device
    on the same tailnet, started here with ``local_api_socket``."""
    from pytsnet.testing.tailnet import new_device, wait_for_peers
    path = sockdir / "gamma.sock"
    dev = new_device(tn.net, Path(tempfile.mkdtemp(dir=sockdir)), "gamma", local_api_socket=path).start()
    tn.devices["gamma"] = dev
    dev.wait_until_running_blocking(30)
    wait_for_peers(dev, ["alpha", "beta"])
    return path


def raw_http(addr: tuple[str, int] | str, request: bytes, *, half_close: bool = False) -> tuple[int, bytes]:
    """Send ``request`` (``half_close``: then shut our side, so a body cut short stays cut); the
    answer's status and body."""
    family = socket.AF_UNIX if isinstance(addr, str) else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.settimeout(10)
        s.connect(addr)
        s.sendall(request)
        if half_close:
            s.shutdown(socket.SHUT_WR)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
    head, _, body = out.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


def test_status_decodes_strictly_with_peers(tn: Tailnet) -> None:
    alpha, beta = tn["alpha"], tn["beta"]
    raw = alpha.local_client().request("GET", "status")
    st = Status.model_validate_json(raw)  # strict: every Go field, Go's types, nothing extra
    assert st.BackendState == "Running"
    assert st.TailscaleIPs == alpha.tailscale_ips()
    assert st.Self is not None and st.Self.DNSName == tn.name(alpha)
    assert st.Self.PublicKey == alpha.dataplane_info().state.node_key
    assert st.Peer is not None
    by_host = {p.HostName: p for p in st.Peer.values()}
    assert by_host["beta"].TailscaleIPs == beta.tailscale_ips()
    assert by_host["beta"].DNSName == tn.name(beta)
    assert st.User is not None and str(st.Self.UserID) in st.User
    assert st.CurrentTailnet is not None and st.MagicDNSSuffix == tn.name(alpha).rstrip(".").split(".", 1)[1]
    doc = json.loads(raw)
    assert "HaveNodeKey" in doc and "AltSharerUserID" not in doc["Self"]  # omitempty as Go


def test_status_without_peers(tn: Tailnet) -> None:
    st = tn["alpha"].local_client().status(peers=False)
    assert st.Peer is None and st.Self is not None


LIVE = {"Node": {"Endpoints", "DERP", "HomeDERP", "Online", "LastSeen", "Hostinfo"}}
"""What may change between two lookups of one node (its paths, presence and netcheck move on)."""


def same_node(a: WhoIsResponse, b: WhoIsResponse) -> bool:
    return a.model_dump(exclude=LIVE) == b.model_dump(exclude=LIVE)


def test_whois_by_ip_port_nodekey_and_proto(tn: Tailnet) -> None:
    lc, beta = tn["alpha"].local_client(), tn["beta"]
    ip = tn.ip(beta)
    by_ip = lc.whois(ip)
    assert by_ip.Node.Name == tn.name(beta) and by_ip.Node.Hostinfo is not None
    assert by_ip.Node.Hostinfo.Hostname == "beta"
    assert same_node(lc.whois(f"{ip}:443"), by_ip)
    assert same_node(lc.whois(f"{ip}:443", proto="tcp"), by_ip)
    assert same_node(lc.whois(by_ip.Node.Key), by_ip)
    raw = lc.request("GET", "whois", {"addr": ip})
    assert same_node(WhoIsResponse.model_validate_json(raw), by_ip)
    assert lc.whois(tn.ip(tn["alpha"])).Node.Hostinfo.Hostname == "alpha"  # type: ignore[union-attr]


@pytest.mark.parametrize(("addr", "status", "text"), [
    ("100.127.255.254", 404, "no match for IP:port"),
    ("nodekey:" + "ab" * 32, 404, "no match for IP:port"),
    ("nodekey:zz", 400, "invalid nodekey in 'addr' parameter"),
    ("not-an-ip", 400, "invalid 'addr' parameter"),
    ("", 400, "missing 'addr' parameter"),
])
def test_whois_errors_as_go(tn: Tailnet, addr: str, status: int, text: str) -> None:
    with pytest.raises(LocalApiError) as e:
        tn["alpha"].local_client().whois(addr)
    assert e.value.status == status and text in str(e.value)


def test_prefs_get_and_patch(tn: Tailnet) -> None:
    lc = tn["alpha"].local_client()
    assert lc.prefs().RouteAll is False
    assert lc.edit_prefs(MaskedPrefs(RouteAllSet=True, RouteAll=True)).RouteAll is True
    assert tn["alpha"].route_prefs().accept_routes is True
    assert lc.edit_prefs(MaskedPrefs(RouteAllSet=True, RouteAll=False)).RouteAll is False
    with pytest.raises(LocalApiError) as e:  # a pref this port lacks is refused, not ignored
        lc.request("PATCH", "prefs", body=b'{"ShieldsUpSet":true,"ShieldsUp":true}')
    assert e.value.status == 400


def test_disco_ping_reports_path_and_latency(tn: Tailnet) -> None:
    lc, beta = tn["alpha"].local_client(), tn["beta"]
    raw = lc.request("POST", "ping", {"ip": tn.ip(beta), "type": "disco"})
    pr = PingResult.model_validate_json(raw)  # strict: Go's PingResult
    assert pr.Err == "" and pr.NodeIP == tn.ip(beta) and pr.NodeName == "beta"
    assert 0 < pr.LatencySeconds < 5
    assert bool(pr.Endpoint) != bool(pr.DERPRegionID)  # direct ip:port, or the DERP region it came through
    if pr.Endpoint:  # a direct pong comes from one of beta's endpoints
        assert pr.Endpoint in next(p.endpoints for p in tn["alpha"].peers() if p.hostname == "beta")


@pytest.mark.parametrize(("query", "status", "text"), [
    ({"type": "disco"}, 400, "missing 'ip' parameter"),
    ({"ip": "nope", "type": "disco"}, 400, "invalid IP"),
    ({"ip": "100.64.0.9"}, 400, "missing 'type' parameter"),
    ({"ip": "100.64.0.9", "type": "peerapi"}, 400, "not supported"),
    ({"ip": "100.64.0.9", "type": "icmp"}, 400, "not supported"),  # Go's PingType is case-sensitive
])
def test_ping_refusals(tn: Tailnet, query: dict[str, str], status: int, text: str) -> None:
    with pytest.raises(LocalApiError) as e:
        tn["alpha"].local_client().request("POST", "ping", query)
    assert e.value.status == status and text in str(e.value)


def test_ping_unknown_and_self(tn: Tailnet) -> None:
    lc = tn["alpha"].local_client()
    assert lc.ping("100.127.255.254").Err == "no matching peer"
    me = lc.ping(tn.ip(tn["alpha"]))
    assert me.IsLocalIP and me.Err == "is local Tailscale IP"
    with pytest.raises(LocalApiError) as e:  # Go: POST only
        lc.request("GET", "ping", {"ip": tn.ip(tn["beta"]), "type": "disco"})
    assert e.value.status == 400


def wg_view(tn: Tailnet) -> dict[str, object]:
    """Each node's non-zero drops and its peers' paths and sessions: what a failed ping message shows."""
    view: dict[str, object] = {}
    for name in ("alpha", "beta"):
        st = tn[name].status()
        view[name] = ({k: v for k, v in st.drops.items() if v},
                      [(p.hostname, p.path, p.has_session, p.bytes_in, p.bytes_out) for p in st.peers])
    return view


def test_icmp_ping_answered_by_the_peers_netstack(tn: Tailnet) -> None:
    """Go ``sendICMPEchoRequest``: an echo from alpha's netstack through WireGuard to beta's IP,
    answered by beta's netstack; ``NodeIP`` is the pinged IP, no path fields (Go fills none)."""
    lc, beta = tn["alpha"].local_client(), tn["beta"]
    before = tn["alpha"].status().drops.get("netstack_icmp_ignored", 0)
    raw = lc.request("POST", "ping", {"ip": tn.ip(beta), "type": "ICMP"})
    pr = PingResult.model_validate_json(raw)
    assert pr.Err == "" and pr.IP == pr.NodeIP == tn.ip(beta) and pr.NodeName == "beta", (pr, wg_view(tn))
    assert 0 < pr.LatencySeconds < 5
    assert (pr.Endpoint, pr.DERPRegionID, pr.DERPRegionCode, pr.IsLocalIP) == ("", 0, "", False)
    assert tn["alpha"].status().drops.get("netstack_icmp_ignored", 0) == before  # the reply was ours, taken


@pytest.mark.parametrize("kind", ["ICMP", "TSMP"])
def test_icmp_and_tsmp_ping_refusals_as_go(tn: Tailnet, kind: str) -> None:
    lc = tn["alpha"].local_client()
    assert lc.ping("100.127.255.254", kind).Err == "no matching peer"
    assert lc.ping("192.0.2.1", kind).Err == "no matching peer"  # not a tailnet IP at all
    me = lc.ping(tn.ip(tn["alpha"]), kind)
    assert me.IsLocalIP and me.Err.endswith("is local Tailscale IP")


def test_tsmp_ping_answered_by_the_peers_netstack(tn: Tailnet) -> None:
    """Go ``sendTSMPPing``: a TSMP ping (IP protocol 99) through WireGuard, beta's netstack pongs."""
    lc, beta = tn["alpha"].local_client(), tn["beta"]
    before = tn["alpha"].status().drops.get("netstack_tsmp_ignored", 0)
    pr = PingResult.model_validate_json(lc.request("POST", "ping", {"ip": tn.ip(beta), "type": "TSMP"}))
    assert pr.Err == "" and pr.IP == pr.NodeIP == tn.ip(beta) and pr.NodeName == "beta", pr
    assert 0 < pr.LatencySeconds < 5
    assert (pr.Endpoint, pr.DERPRegionID) == ("", 0)
    assert pr.PeerAPIPort == beta.peerapi_port > 0  # beta's pong names its PeerAPI port, as Go's
    assert tn["alpha"].status().drops.get("netstack_tsmp_ignored", 0) == before


def test_icmp_ping_times_out_when_the_peers_filter_drops_it(tn: Tailnet) -> None:
    """beta's packet filter admits nothing from alpha (the policy only lets traffic reach alpha):
    beta drops the echo request, so alpha's ping ends in Go's timeout, never a pong."""
    alpha, beta = tn["alpha"], tn["beta"]
    tn.net.set_policy({"acls": [{"action": "accept", "src": ["*"], "dst": [f"{tn.ip(alpha)}:*"]}]})
    try:
        deadline = time.monotonic() + 30
        while True:  # the new filter reaches beta in its next map: ping until it drops
            pr = alpha.local_client().ping(tn.ip(beta), "ICMP")
            if pr.Err:
                break
            assert time.monotonic() < deadline, "beta's filter never dropped the echo"
            time.sleep(0.5)
        assert pr.Err.startswith("timeout") and pr.LatencySeconds == 0 and pr.NodeIP == "", pr
    finally:
        tn.net.set_policy({})
    deadline = time.monotonic() + 30
    while alpha.local_client().ping(tn.ip(beta), "ICMP").Err:  # allow-all again: pongs come back
        assert time.monotonic() < deadline


def test_down_refused_for_an_embedded_node(tn: Tailnet) -> None:
    with pytest.raises(LocalApiError) as e:  # only `pytsnet up` sets on_down: an app's node stays up
        tn["alpha"].local_client().edit_prefs(MaskedPrefs(WantRunningSet=True, WantRunning=False))
    assert e.value.status == 400
    assert tn["alpha"].local_client().status(peers=False).BackendState == "Running"


def test_netcheck_reports_the_nodes_derp(tn: Tailnet) -> None:
    report = json.loads(tn["alpha"].local_client().request("GET", "netcheck"))
    info = tn["alpha"].dataplane_info()
    assert report["PreferredDERP"] == info.preferred_derp
    assert report["RegionLatency"] == {str(r): round(s * 1e9) for r, s in info.region_latency.items()}


def test_unknown_endpoint_404(tn: Tailnet) -> None:
    with pytest.raises(LocalApiError) as e:
        tn["alpha"].local_client().request("GET", "no-such-endpoint")
    assert e.value.status == 404


# -- the loopback listener: Go tsnet's localSecHandler + RequiredPassword ------------------------------
def _lb(tn: Tailnet) -> tuple[tuple[str, int], str]:
    addr, _, cred = tn["alpha"].loopback()
    host, port = addr.rsplit(":", 1)
    return (host, int(port)), cred


def _basic(password: str, user: str = "") -> bytes:
    return b"Authorization: Basic " + base64.b64encode(f"{user}:{password}".encode()) + b"\r\n"


def test_loopback_localapi_credentials(tn: Tailnet) -> None:
    addr, cred = _lb(tn)
    host = f"Host: 127.0.0.1:{addr[1]}\r\n".encode()
    get = b"GET /localapi/v0/status HTTP/1.1\r\n" + host
    status, body = raw_http(addr, get + _basic(cred) + b"\r\n")
    assert status == 403 and body == b"missing 'Sec-Tailscale: localapi' header"
    sec = b"Sec-Tailscale: localapi\r\n"
    assert raw_http(addr, get + sec + b"\r\n") == (401, b"auth required\n")
    assert raw_http(addr, get + sec + _basic("0" * 32) + b"\r\n") == (403, b"bad password\n")
    assert raw_http(addr, get + sec + _basic(cred) + b"Origin: http://evil\r\n\r\n") == (
        403, b"invalid localapi request\n")
    bad_host = b"GET /localapi/v0/status HTTP/1.1\r\nHost: evil.example:80\r\n"
    assert raw_http(addr, bad_host + sec + _basic(cred) + b"\r\n")[0] == 403
    status, body = raw_http(addr, get + sec + _basic(cred, "anyuser") + b"\r\n")
    assert status == 200
    assert Status.model_validate_json(body).Self is not None
    status, _ = raw_http(addr, b"GET /localapi/v0/nope HTTP/1.1\r\n" + host + sec + _basic(cred) + b"\r\n")
    assert status == 404


# -- the unix socket ---------------------------------------------------------------------------------
def test_socket_mode_and_client(tn: Tailnet, alpha_sock: Path) -> None:
    mode = stat.S_IMODE(os.stat(alpha_sock).st_mode)
    assert stat.S_ISSOCK(os.stat(alpha_sock).st_mode) and mode == 0o600, oct(mode)
    lc = LocalClient.unix(str(alpha_sock))
    st = lc.status()
    assert st.Self is not None and st.Self.HostName == "gamma"
    assert st.Peer is not None and {p.HostName for p in st.Peer.values()} >= {"alpha", "beta"}
    assert lc.whois(tn.ip(tn["beta"])).Node.Name == tn.name(tn["beta"])
    with pytest.raises(LocalApiError) as e:
        lc.request("GET", "nope")
    assert e.value.status == 404


def test_socket_checks_host_as_go(alpha_sock: Path) -> None:
    ok = raw_http(str(alpha_sock), b"GET /localapi/v0/status?peers=false HTTP/1.1\r\n"
                                   b"Host: local-tailscaled.sock\r\n\r\n")
    assert ok[0] == 200 and Status.model_validate_json(ok[1]).Peer is None
    assert raw_http(str(alpha_sock), b"GET /localapi/v0/status HTTP/1.1\r\nHost: localhost:80\r\n\r\n") == (
        403, b"invalid localapi request\n")  # no password here: only the socket's own Host


def test_request_bodies_bounded_and_whole_on_both_listeners(
        tn: Tailnet, alpha_sock: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """One body reader (``wire.http1_body``) for both: over the cap → 413, cut short → 400."""
    from pytsnet.localapi import http as localapi_http
    monkeypatch.setattr(localapi_http, "MAX_BODY", 10)
    addr, cred = _lb(tn)
    heads: list[tuple[tuple[str, int] | str, bytes]] = [
        (str(alpha_sock), b"POST /localapi/v0/prefs HTTP/1.1\r\nHost: local-tailscaled.sock\r\n"),
        (addr, f"POST /localapi/v0/prefs HTTP/1.1\r\nHost: 127.0.0.1:{addr[1]}\r\n".encode()
         + b"Sec-Tailscale: localapi\r\n" + _basic(cred))]
    cases = [(b"Content-Length: 11\r\n\r\n" + b"x" * 11, 413),
             (b"Transfer-Encoding: chunked\r\n\r\n6\r\nxxxxxx\r\n6\r\nxxxxxx\r\n0\r\n\r\n", 413),
             (b"Content-Length: 10\r\n\r\nabc", 400),                  # cut short
             (b"Transfer-Encoding: chunked\r\n\r\nzz\r\n", 400)]         # a bad chunk
    for where, head in heads:
        for rest, want in cases:
            status, body = raw_http(where, head + rest, half_close=True)
            assert status == want, (where, rest)
            if want == 413:
                assert body == b"request body too large\n"


def test_socket_cuts_a_silent_client(alpha_sock: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pytsnet.localapi import unix
    monkeypatch.setattr(unix, "REQUEST_TIMEOUT", 0.5)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(10)
        s.connect(str(alpha_sock))
        s.sendall(b"GET /localapi/v0/status HTTP/1.1\r\n")  # never finished
        assert s.recv(100) == b""  # closed by the server, not left hanging
    ok = raw_http(str(alpha_sock), b"GET /localapi/v0/status?peers=false HTTP/1.1\r\nHost: \r\n\r\n")
    assert ok[0] == 200


def test_socket_closes_with_device(tn: Tailnet, alpha_sock: Path) -> None:
    tn["gamma"].close()
    assert not alpha_sock.exists()


def test_logout_over_local_client(tn: Tailnet) -> None:
    beta = tn["beta"]
    with pytest.raises(LocalApiError) as e:
        beta.local_client().request("GET", "logout")
    assert e.value.status == 405
    beta.local_client().logout()
    assert beta.local_client().status(peers=False).BackendState in ("NeedsLogin", "Stopped", "NoState")
