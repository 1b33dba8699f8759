"""localnet's DNS settings: policy.json's ``dns`` section → every netmap's ``DNSConfig`` (and deltas)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pytsnet.actors.dataplane.netmap import dns_settings
from pytsnet.localnet.netmap import SentState, Tailnet, delta, full_map
from pytsnet.localnet.policy import FILTER_ALLOW_ALL, Policy, PolicyError
from pytsnet.localnet.store import Store
from pytsnet.wire.tailcfg import DNSConfig

DOC = {"dns": {"searchDomains": ["corp.example"],
               "routes": {"corp.example": ["100.64.0.5", "[fd7a:115c:a1e0::5]:5353"], "lab.internal": []},
               "extraRecords": [{"name": "app.lab.internal", "type": "A", "value": "100.64.0.3"},
                                {"name": "v6.lab.internal", "value": "fd7a:115c:a1e0::3"}]}}


def test_policy_dns_becomes_dnsconfig() -> None:
    cfg = Policy.parse(DOC).dns.dns_config("localnet.ts.net")
    assert cfg == {
        "Domains": ["localnet.ts.net", "corp.example"], "Proxied": True, "Resolvers": [],
        "Routes": {"corp.example": [{"Addr": "100.64.0.5"}, {"Addr": "[fd7a:115c:a1e0::5]:5353"}],
                   "lab.internal": []},
        "ExtraRecords": [{"Name": "app.lab.internal", "Type": "A", "Value": "100.64.0.3"},
                         {"Name": "v6.lab.internal", "Type": "", "Value": "fd7a:115c:a1e0::3"}]}
    # What a client makes of it (the netmap → resolver path).
    s = dns_settings(DNSConfig.model_validate(cfg))
    assert s is not None and s.proxied and s.routes["lab.internal"] == ()
    assert [r.name for r in s.extra_records] == ["app.lab.internal", "v6.lab.internal"]
    assert Policy.parse({}).dns.dns_config("x.ts.net") == {"Domains": ["x.ts.net"], "Proxied": True,
                                                           "Resolvers": []}
    assert Policy.parse({"dns": {"magicDNS": False}}).dns.dns_config("x.ts.net")["Proxied"] is False


@pytest.mark.parametrize("bad", [
    {"dns": []}, {"dns": {"bogus": 1}}, {"dns": {"magicDNS": "yes"}}, {"dns": {"searchDomains": ["a b"]}},
    {"dns": {"routes": {"corp.example": ["https://dns.example/dns-query"]}}},
    {"dns": {"routes": {"corp.example": "100.64.0.5"}}},
    {"dns": {"extraRecords": [{"name": "x.internal", "value": "not-an-ip"}]}},
    {"dns": {"extraRecords": [{"name": "x.internal", "type": "AAAA", "value": "100.64.0.3"}]}},
    {"dns": {"extraRecords": [{"name": "", "value": "100.64.0.3"}]}},
])
def test_bad_dns_policy_is_a_policy_error(bad: object) -> None:
    with pytest.raises(PolicyError):
        Policy.parse(bad)


def test_dns_change_reaches_streams_as_a_delta(tmp_path: Path) -> None:
    s = Store(tmp_path)
    s.ensure_user()
    a = s.add_node(machine_key="mkey:" + "01" * 32, node_key="nodekey:" + "01" * 32, user_id=1,
                   hostname="a", authorized=True, ephemeral=False)

    def net(policy: Policy) -> Tailnet:
        return Tailnet(nodes=s.nodes(), users=s.users(), online=set(), packet_filter=FILTER_ALLOW_ALL,
                       derp_map={"Regions": {}}, dns=policy.dns.dns_config("localnet.ts.net"))

    st = SentState()
    m = full_map(a.id, net(Policy.parse({})), st)
    assert m["DNSConfig"]["Proxied"] is True and "ExtraRecords" not in m["DNSConfig"]
    assert delta(a.id, net(Policy.parse({})), st) is None
    d = delta(a.id, net(Policy.parse(DOC)), st)
    assert d is not None and set(d) == {"DNSConfig"}
    assert d["DNSConfig"]["ExtraRecords"][0]["Name"] == "app.lab.internal"
    assert delta(a.id, net(Policy.parse(DOC)), st) is None
