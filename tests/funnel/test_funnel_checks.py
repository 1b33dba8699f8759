"""Funnel's checks, pure: the ``/v0/ingress`` request parse (Go ``handleServeIngress``), the peer
capability grant (Go ``PeerCaps``), and Go's ``CheckFunnelAccess``/``CheckFunnelPort``."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pytsnet.actors.peerapi.ingress import PEER_CAP_INGRESS, IngressRoutes, ingress_sources, peer_caps
from pytsnet.errors import FunnelPortNotAllowed, FunnelUnavailable
from pytsnet.funnel.access import check_funnel_access, check_funnel_port, funnel_ports_attr
from pytsnet.messages.wgengine import WgCapGrant, WgFilterRule
from pytsnet.wire.errors import ParseError
from pytsnet.wire.peerapi import BadIngressRequest, PeerApiHttp, PeerApiRequest, ingress_request
from pytsnet.wire.tailcfg import FilterRule

SRC, TGT = "tailscale-ingress-src", "tailscale-ingress-target"
BAD_SRC = "Tailscale-Ingress-Src header invalid; want ip:port"
BAD_TGT = "Tailscale-Ingress-Target header invalid; want host:port"
GOOD = {"tailscale-ingress-src": "203.0.113.7:51234", "tailscale-ingress-target": "web.localnet.ts.net:443"}


def req(method: str = "POST", **headers: str) -> PeerApiRequest:
    return PeerApiRequest(method=method, target="/v0/ingress", headers=headers)


def test_well_formed_ingress_request() -> None:
    ing = ingress_request(req(**GOOD))
    assert ing.src == ("203.0.113.7", 51234)
    assert (ing.target_host, ing.target_port) == ("web.localnet.ts.net", 443)
    assert ing.target == "web.localnet.ts.net:443"
    v6 = ingress_request(req(**{**GOOD, SRC: "[2001:db8::1]:9"}))
    assert v6.src == ("2001:db8::1", 9)


@pytest.mark.parametrize(("method", "headers", "status", "text"), [
    ("GET", GOOD, 405, "only POST allowed"),
    ("POST", {"tailscale-ingress-target": "a:443"}, 400, "Tailscale-Ingress-Src header not set"),
    ("POST", {**GOOD, SRC: "203.0.113.7"}, 400, BAD_SRC),
    ("POST", {**GOOD, SRC: "host.test:80"}, 400, BAD_SRC),
    ("POST", {**GOOD, SRC: "2001:db8::1:80"}, 400, BAD_SRC),
    ("POST", {**GOOD, SRC: "192.0.2.4:99999"}, 400, BAD_SRC),
    ("POST", {"tailscale-ingress-src": "192.0.2.4:5"}, 400, "Tailscale-Ingress-Target header not set"),
    ("POST", {**GOOD, TGT: "web"}, 400, BAD_TGT),
    ("POST", {**GOOD, TGT: "a:b:443"}, 400, BAD_TGT),
    ("POST", {**GOOD, TGT: "web:http"}, 400, BAD_TGT),
    ("POST", {**GOOD, TGT: "[::1:443"}, 400, BAD_TGT),
])
def test_bad_ingress_requests_get_gos_status_and_text(method: str, headers: dict[str, str], status: int,
                                                      text: str) -> None:
    with pytest.raises(BadIngressRequest) as e:
        ingress_request(req(method, **headers))
    assert (e.value.status, e.value.public) == (status, text)
    assert e.value.response().body == text.encode() + b"\n"


@given(src=st.text(max_size=60), target=st.text(max_size=60), method=st.sampled_from(["POST", "GET", "PUT"]))
def test_hostile_headers_parse_or_raise_the_typed_error(src: str, target: str, method: str) -> None:
    try:
        ing = ingress_request(req(method, **{SRC: src, TGT: target}))
    except BadIngressRequest as e:
        assert isinstance(e, ParseError) and e.status in (400, 405)
        return
    assert 0 <= ing.src[1] <= 65535 and 0 <= ing.target_port <= 65535
    ipaddress.ip_address(ing.src[0])


def test_hijack_returns_the_bytes_after_the_request() -> None:
    http = PeerApiHttp()
    got = http.receive(b"POST /v0/ingress HTTP/1.1\r\nHost: 100.64.0.1:1\r\nContent-Length: 0\r\n\r\n"
                       b"\x16\x03\x01hello")
    assert got is not None and got.path == "/v0/ingress"
    assert http.hijack() == b"\x16\x03\x01hello"


def grant(src: list[str], dsts: list[str], caps: list[str]) -> WgFilterRule:
    return WgFilterRule(SrcIPs=src, CapGrant=[WgCapGrant(Dsts=dsts, Caps=caps)])


ME = [ipaddress.ip_address("100.64.0.2")]


def test_peer_caps_need_source_and_destination_covered() -> None:
    rules = [grant(["100.64.0.9"], ["100.64.0.2/32"], [PEER_CAP_INGRESS])]
    assert peer_caps(rules, ipaddress.ip_address("100.64.0.9"), ME) == {PEER_CAP_INGRESS}
    assert peer_caps(rules, ipaddress.ip_address("100.64.0.8"), ME) == set()
    assert peer_caps(rules, ipaddress.ip_address("100.64.0.9"), [ipaddress.ip_address("100.64.0.3")]) == set()
    assert peer_caps(None, ipaddress.ip_address("100.64.0.9"), ME) == set()
    assert ingress_sources(rules, ME) == ["100.64.0.9"]
    assert ingress_sources(rules, [ipaddress.ip_address("100.64.0.3")]) == []
    junk = [grant(["not-an-ip"], ["also/bad"], [PEER_CAP_INGRESS])]  # malformed entries grant nothing
    assert peer_caps(junk, ipaddress.ip_address("100.64.0.9"), ME) == set()


def test_capgrant_survives_the_netmap_conversion() -> None:
    fr = FilterRule.model_validate({"SrcIPs": ["100.64.0.9"], "CapGrant": [
        {"Dsts": ["100.64.0.2/32"], "CapMap": {PEER_CAP_INGRESS: None}}]})
    wg = WgFilterRule.from_tailcfg(fr)
    assert wg.CapGrant == [WgCapGrant(Dsts=["100.64.0.2/32"], Caps=[PEER_CAP_INGRESS])]
    assert WgFilterRule.model_validate_json(wg.model_dump_json()) == wg


ALL = ["https", "funnel", funnel_ports_attr()]


@pytest.mark.parametrize("port", [443, 8443, 10000])
def test_default_funnel_ports_allowed(port: int) -> None:
    check_funnel_access(port, ALL)


@pytest.mark.parametrize("port", [80, 444, 8080, 9999])
def test_other_ports_refused_with_gos_text(port: int) -> None:
    with pytest.raises(FunnelPortNotAllowed, match=f"port {port} is not allowed for funnel; allowed ports "
                       "are: 443,8443,10000"):
        check_funnel_access(port, ALL)


def test_missing_https_or_attr_is_unavailable_with_gos_text() -> None:
    with pytest.raises(FunnelUnavailable, match="HTTPS must be enabled"):
        check_funnel_access(443, ["funnel", funnel_ports_attr()])
    with pytest.raises(FunnelUnavailable, match='"funnel" node attribute not set'):
        check_funnel_access(443, ["https", funnel_ports_attr()])


def test_funnel_port_attribute_forms() -> None:
    check_funnel_port(5000, ["https://tailscale.com/cap/funnel-ports?ports=1-100,4000-6000"])
    with pytest.raises(FunnelPortNotAllowed, match=r"port 443 is not allowed for funnel$"):
        check_funnel_port(443, ["https", "funnel"])  # no ports attribute: no port
    with pytest.raises(FunnelPortNotAllowed, match=r"port 443 is not allowed for funnel$"):
        check_funnel_port(443, ["https://tailscale.com/cap/funnel-ports"])  # no ports= in it
    with pytest.raises(FunnelPortNotAllowed, match=r"port 443 is not allowed for funnel$"):
        check_funnel_port(443, ["https://tailscale.com/cap/funnel-portsX?ports=443"])
    with pytest.raises(FunnelPortNotAllowed):
        check_funnel_port(443, ["https://tailscale.com/cap/funnel-ports?ports=a-b,443x"])


def test_ingress_routes_one_listener_per_port() -> None:
    routes = IngressRoutes()

    def h(_: object) -> bool:
        return True

    routes.register(443, h)
    with pytest.raises(KeyError):
        routes.register(443, h)
    assert routes.handler(443) is h and routes.ports() == [443]
    routes.unregister(443, lambda _: True)  # not the registered one: kept
    assert routes.handler(443) is h
    routes.unregister(443, h)
    assert routes.handler(443) is None
