"""How a DERP map node is dialed (Go derphttp: TLS; InsecureForTests skips the certificate check;
TS_DEBUG_USE_DERP_HTTP=1 speaks plain HTTP), plus the local tailnet's relay on a plain control listener."""

from __future__ import annotations

import pytest

from pytsnet.actors.dataplane.netmap import derp_regions, plain_http_origin
from pytsnet.wire.tailcfg import DERPMap


def _map(**node: object) -> DERPMap:
    base = {"Name": "1a", "RegionID": 1, "HostName": "derp.example", "IPv4": "192.0.2.7"}
    return DERPMap.model_validate({"Regions": {"1": {"RegionID": 1, "RegionCode": "x", "RegionName": "x",
                                                     "Nodes": [{**base, **node}]}}})


@pytest.fixture(autouse=True)
def _no_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TS_DEBUG_USE_DERP_HTTP", raising=False)


def test_production_node_is_tls_on_443_with_verification() -> None:
    (r,) = derp_regions(_map())
    assert (r.host, r.port, r.tls, r.insecure_for_tests, r.stun_port) == ("192.0.2.7", 443, True, False, 3478)


def test_insecure_for_tests_is_still_tls_just_unverified() -> None:
    (r,) = derp_regions(_map(InsecureForTests=True, DERPPort=8443), plain_http_origin("http://192.0.2.7:80"))
    assert (r.port, r.tls, r.insecure_for_tests) == (8443, True, True)


def test_relay_mounted_on_the_plain_control_listener_is_plain_http() -> None:
    origin = plain_http_origin("http://192.0.2.7:8080")
    (r,) = derp_regions(_map(InsecureForTests=True, DERPPort=8080), origin)
    assert (r.port, r.tls) == (8080, False)
    (r,) = derp_regions(_map(DERPPort=8080), origin)  # not a test node: never downgraded
    assert r.tls
    assert plain_http_origin("https://192.0.2.7:8080") is None
    local = _map(InsecureForTests=True, DERPPort=8080, IPv4="127.0.0.1")
    assert not derp_regions(local, plain_http_origin("http://localhost:8080"))[0].tls  # one host
    assert derp_regions(local, plain_http_origin("http://localhost:9090"))[0].tls  # another listener


def test_debug_env_forces_plain_http_and_port_80(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TS_DEBUG_USE_DERP_HTTP", "1")
    (r,) = derp_regions(_map())
    assert (r.port, r.tls) == (80, False)
