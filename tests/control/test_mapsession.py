"""Map session: Go's delta order and nil-means-unchanged semantics (control/controlclient/map.go)."""

from __future__ import annotations

import json

import pytest

from pytsnet.wire.keys import DiscoPrivate, NodePrivate
from pytsnet.wire.mapsession import MapSession, MapSessionError
from pytsnet.wire.tailcfg import MapResponse

NK = [NodePrivate.generate().public().to_text() for _ in range(4)]
DK = [DiscoPrivate.generate().public().to_text() for _ in range(4)]


def node(i: int, **extra: object) -> dict[str, object]:
    return {"ID": i, "StableID": f"n{i}", "Name": f"h{i}.ts.net.", "User": 1, "Key": NK[i], "DiscoKey": DK[i],
            "Addresses": [f"100.64.0.{i}/32"], "Endpoints": [f"192.0.2.{i}:41641"], **extra}


def apply(s: MapSession, doc: dict[str, object], now: float = 1000.0):  # type: ignore[no-untyped-def]
    return s.apply(MapResponse.from_json(json.dumps(doc)), now)


FULL = {
    "Node": node(0, MachineAuthorized=True, DERP="127.3.3.40:7"),
    "Peers": [node(2), node(1, DERP="127.3.3.40:1")],
    "DERPMap": {"Regions": {"1": {"RegionID": 1, "RegionCode": "a", "RegionName": "A", "Nodes": []}},
                "HomeParams": {"RegionScore": {"1": 1.5}}},
    "PacketFilter": [{"SrcIPs": ["*"], "DstPorts": [{"IP": "*", "Ports": {"First": 0, "Last": 65535}}]}],
    "DNSConfig": {"Domains": ["ts.net"]}, "Domain": "example.ts.net",
    "UserProfiles": [{"ID": 1, "LoginName": "u@x", "DisplayName": "U"}],
}


def test_first_response_needs_node() -> None:
    with pytest.raises(MapSessionError):
        apply(MapSession(), {"Peers": [node(1)]})


def test_keepalive_changes_nothing() -> None:
    s = MapSession()
    apply(s, FULL)
    assert apply(s, {"KeepAlive": True, "PeersRemoved": [1]}) is None
    assert [p.ID for p in s.netmap().peers] == [1, 2]


def test_full_map_sorted_upgraded() -> None:
    nm = apply(MapSession(), FULL)
    assert [p.ID for p in nm.peers] == [1, 2]
    assert nm.self_node.HomeDERP == 7 and nm.peers[0].HomeDERP == 1  # legacy DERP string upgraded
    assert nm.peers[1].AllowedIPs == ["100.64.0.2/32"]  # nil AllowedIPs = Addresses
    assert nm.domain == "example.ts.net" and nm.user_profiles[1].LoginName == "u@x"
    assert nm.packet_filter_set and len(nm.packet_filter) == 1


def test_nil_fields_keep_previous_state() -> None:
    s = MapSession()
    apply(s, FULL)
    nm = apply(s, {"PeersChanged": [node(3)]})
    assert nm.self_node.ID == 0 and nm.domain == "example.ts.net"
    assert nm.dns_config is not None and nm.dns_config.Domains == ["ts.net"]
    assert len(nm.packet_filter) == 1 and nm.derp_map is not None and 1 in nm.derp_map.Regions
    assert [p.ID for p in nm.peers] == [1, 2, 3]


def test_delta_order_removed_then_changed_then_seen_online_patch() -> None:
    s = MapSession()
    apply(s, FULL)
    # 2 is removed and re-added in one response: Go removes first, then applies PeersChanged.
    nm = apply(s, {"PeersRemoved": [2, 1], "PeersChanged": [node(2, Endpoints=["198.51.100.2:1"])],
                   "OnlineChange": {"2": True, "1": True}, "PeerSeenChange": {"2": True},
                   "PeersChangedPatch": [{"NodeID": 2, "Online": False}, {"NodeID": 1, "DERPRegion": 9}]})
    assert [p.ID for p in nm.peers] == [2]  # the patch for removed peer 1 is dropped
    p2 = nm.peers[0]
    assert p2.Endpoints == ["198.51.100.2:1"]
    assert p2.Online is False  # OnlineChange then PeersChangedPatch: the patch wins
    assert p2.LastSeen is not None and p2.LastSeen.timestamp() == 1000.0


def test_peers_non_empty_replaces_all_and_ignores_deltas() -> None:
    s = MapSession()
    apply(s, FULL)
    nm = apply(s, {"Peers": [node(3)], "PeersRemoved": [3], "PeersChanged": [node(1)]})
    assert [p.ID for p in nm.peers] == [3]


def test_peers_changed_patch_fields() -> None:
    s = MapSession()
    apply(s, FULL)
    new_key, new_disco = NodePrivate.generate().public(), DiscoPrivate.generate().public()
    nm = apply(s, {"PeersChangedPatch": [
        {"NodeID": 1, "DERPRegion": 4, "Endpoints": ["203.0.113.1:9"], "Key": new_key.to_text(),
         "DiscoKey": new_disco.to_text(), "Online": True, "LastSeen": "2026-01-02T03:04:05Z",
         "KeyExpiry": "2027-01-01T00:00:00Z", "Cap": 120, "CapMap": {"x": None}},
        {"NodeID": 2, "Endpoints": []},
        {"NodeID": 99, "DERPRegion": 3},
    ]})
    p1, p2 = nm.peers
    assert (p1.HomeDERP, p1.Endpoints, p1.Key, p1.DiscoKey, p1.Online, p1.Cap) == \
        (4, ["203.0.113.1:9"], new_key, new_disco, True, 120)
    assert p1.LastSeen is not None and p1.LastSeen.year == 2026 and p1.KeyExpiry is not None
    assert p1.CapMap == {"x": None} and p1.Addresses == ["100.64.0.1/32"]  # untouched fields kept
    assert p2.Endpoints == []  # a present-but-empty slice is applied (non-nil in Go)
    assert 99 not in [p.ID for p in nm.peers]


def test_derp_map_changes() -> None:
    s = MapSession()
    apply(s, FULL)
    # Regions null: keep regions; HomeParams with RegionScore absent keeps the old scores.
    nm = apply(s, {"DERPMap": {"Regions": None, "HomeParams": {}}})
    assert nm.derp_map is not None and set(nm.derp_map.Regions or {}) == {1}
    assert nm.derp_map.HomeParams is not None and nm.derp_map.HomeParams.RegionScore == {1: 1.5}
    # New regions replace the old set; HomeParams absent keeps the previous one.
    region = {"RegionID": 2, "RegionCode": "b", "RegionName": "B",
              "Nodes": [{"Name": "2a", "RegionID": 2, "HostName": "d"}]}
    nm = apply(s, {"DERPMap": {"Regions": {"2": region}}})
    assert set(nm.derp_map.Regions or {}) == {2}
    assert nm.derp_map.HomeParams is not None and nm.derp_map.HomeParams.RegionScore == {1: 1.5}


def test_packet_filters_named_and_wildcard_clear() -> None:
    s = MapSession()
    apply(s, FULL)
    rule = {"SrcIPs": ["100.64.0.9"], "DstPorts": [{"IP": "*", "Ports": {"First": 22, "Last": 22}}]}
    nm = apply(s, {"PacketFilters": {"extra": [rule]}})
    assert [r.SrcIPs for r in nm.packet_filter] == [["*"], ["100.64.0.9"]]  # "base" < "extra"
    nm = apply(s, {"PacketFilters": {"*": None, "z": [rule]}})
    assert [r.SrcIPs for r in nm.packet_filter] == [["100.64.0.9"]]
    nm = apply(s, {"PacketFilter": []})
    assert [r.SrcIPs for r in nm.packet_filter] == [["100.64.0.9"]]  # base is now empty
    assert apply(MapSession(), {"Node": node(0)}).packet_filter_set is False


def test_self_node_replaced_and_profiles_accumulate() -> None:
    s = MapSession()
    apply(s, FULL)
    nm = apply(s, {"Node": node(0, Addresses=["100.64.0.50/32"]),
                   "UserProfiles": [{"ID": 2, "LoginName": "v@x", "DisplayName": "V"}]})
    assert nm.self_node.Addresses == ["100.64.0.50/32"]
    assert set(nm.user_profiles) == {1, 2}
