"""``Config(advertise_exit_node=..., advertise_routes=...)``: validation, Hostinfo.RoutableIPs, the
peerapi-dns-proxy service, and the netstack's forward policy (issue 17, acting as exit node)."""

from __future__ import annotations

import ipaddress

import pytest

from pytsnet.actors.control.runner import RunnerConfig
from pytsnet.config import Config
from pytsnet.errors import ConfigError


def test_exit_node_advertises_both_default_routes_sorted_as_go() -> None:
    cfg = Config(advertise_exit_node=True, advertise_routes=["10.1.2.0/24", "fd00:1::/64", "10.0.0.5/32",
                                                            "10.1.2.0/24"]).resolved()
    assert cfg.routable_ips() == ("0.0.0.0/0", "10.0.0.5/32", "10.1.2.0/24", "::/0", "fd00:1::/64")
    policy = cfg.forward_policy()
    assert policy is not None and policy.exit_node
    want = ("10.1.2.0/24", "fd00:1::/64", "10.0.0.5/32")
    assert policy.routes == tuple(ipaddress.ip_network(r) for r in want)


def test_nothing_advertised_means_no_forwarding() -> None:
    cfg = Config().resolved()
    assert cfg.routable_ips() == () and cfg.forward_policy() is None


@pytest.mark.parametrize(("route", "message"), [
    ("10.1.2.3/24", "non-address bits set; expected 10.1.2.0/24"),
    ("garbage", "not an IP prefix"),
    ("10.1.2.3", "no prefix length"),
    ("0.0.0.0/0", "advertise_exit_node"),
    ("100.64.0.0/12", "tailnet"),
    ("fd7a:115c:a1e0::/64", "tailnet"),
])
def test_bad_routes_are_typed_config_errors(route: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Config(advertise_routes=[route]).resolved()


def test_a_single_string_is_refused() -> None:
    with pytest.raises(ConfigError, match="list of prefixes"):
        Config(advertise_routes="10.0.0.0/8").resolved()  # type: ignore[arg-type]


def test_hostinfo_carries_routable_ips_and_services() -> None:
    rc = RunnerConfig(control_url="http://127.0.0.1:1", hostname="x", routable_ips=("0.0.0.0/0", "::/0"),
                      services=(("peerapi4", 4000), ("peerapi-dns-proxy", 1)))
    hi = rc.login_config().hostinfo
    assert hi.RoutableIPs == ["0.0.0.0/0", "::/0"]
    assert [(s.Proto, s.Port) for s in hi.Services] == [("peerapi4", 4000), ("peerapi-dns-proxy", 1)]
    assert hi.model_dump(by_alias=True, exclude_defaults=True)["RoutableIPs"] == ["0.0.0.0/0", "::/0"]
