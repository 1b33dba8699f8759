"""tailcfg JSON: Go shapes (control.md, tailcfg_test.go) round-trip; unknown fields ignored; no empty keys."""

from __future__ import annotations

import json

import pytest

from pytsnet.wire.keys import DiscoPrivate, MachinePrivate, NodePrivate
from pytsnet.wire.tailcfg import (
    LOGOUT_EXPIRY,
    EndpointType,
    MapRequest,
    MapResponse,
    Node,
    OverTLSPublicKeyResponse,
    RegisterRequest,
    RegisterResponse,
    TailcfgParseError,
)

NODE = NodePrivate.generate().public()
MACHINE = MachinePrivate.generate().public()
DISCO = DiscoPrivate.generate().public()


def test_endpoint_type_marshal_matches_go() -> None:
    """tailcfg_test.go TestEndpointTypeMarshal."""
    req = MapRequest(EndpointTypes=[EndpointType.UNKNOWN, EndpointType.LOCAL, EndpointType.STUN,
                                    EndpointType.PORTMAPPED, EndpointType.STUN4LOCALPORT])
    assert json.loads(req.to_json())["EndpointTypes"] == [0, 1, 2, 3, 4]


def test_go_map_request_parses_and_omits_false_fields() -> None:
    go = {"Version": 130, "Compress": "zstd", "KeepAlive": True, "NodeKey": NODE.to_text(),
          "DiscoKey": DISCO.to_text(), "Stream": True, "Hostinfo": {"Hostname": "gonode", "OS": "linux",
          "NetInfo": {"PreferredDERP": 1, "WorkingUDP": True, "DERPLatency": {"1-v4": 0.001}}},
          "Endpoints": ["10.88.0.2:41641"], "EndpointTypes": [1], "SomethingNew": {"x": 1}}
    req = MapRequest.from_json(json.dumps(go))
    assert req.NodeKey == NODE and req.DiscoKey == DISCO and req.Stream and not req.is_lite_update
    assert req.Hostinfo is not None and req.Hostinfo.NetInfo is not None
    assert req.Hostinfo.NetInfo.PreferredDERP == 1
    out = json.loads(req.to_json())
    del go["SomethingNew"]
    assert out == go
    lite = json.loads(MapRequest(Version=130, NodeKey=NODE, OmitPeers=True).to_json())
    assert "Stream" not in lite and "ReadOnly" not in lite and lite["OmitPeers"] is True


def test_empty_keys_read_as_none_and_are_never_written() -> None:
    node = Node.from_json(json.dumps({"ID": 5, "Key": "", "DiscoKey": "", "Machine": ""}))
    assert node.Key is None and node.DiscoKey is None and node.Machine is None
    out = node.to_json().decode()
    assert '""' not in out.replace('"StableID":""', "").replace('"Name":""', "")
    assert "Key" not in json.loads(out) and "DiscoKey" not in json.loads(out)


def test_register_request_from_go() -> None:
    go = {"Version": 130, "NodeKey": NODE.to_text(), "OldNodeKey": "", "NLKey": "nlpub:" + "ab" * 32,
          "Auth": {"AuthKey": "tskey-test"}, "Expiry": "0001-01-01T00:00:00Z", "Followup": "",
          "Hostinfo": {"Hostname": "h"}, "NodeKeySignature": None}
    req = RegisterRequest.from_json(json.dumps(go))
    assert req.Auth is not None and req.Auth.AuthKey == "tskey-test"
    assert req.NodeKey == NODE and req.OldNodeKey is None
    out = json.loads(req.to_json())
    assert out["NLKey"] == "nlpub:" + "ab" * 32 and "OldNodeKey" not in out
    assert out["Expiry"].startswith("0001-01-01T00:00:00")
    assert RegisterRequest(Expiry=LOGOUT_EXPIRY).to_json().find(b'"1970-01-01T00:02:03Z"') > 0


def test_register_response_always_has_go_fields() -> None:
    out = json.loads(RegisterResponse(MachineAuthorized=True).to_json())
    assert out == {"User": {"ID": 0, "DisplayName": ""},
                   "Login": {"ID": 0, "Provider": "", "LoginName": "", "DisplayName": ""},
                   "NodeKeyExpired": False, "MachineAuthorized": True, "AuthURL": "", "Error": ""}


def test_map_response_round_trip_testcontrol_shape() -> None:
    go = {
        "Node": {"ID": 1, "StableID": "TESTCTRL00000001", "Name": "gonode.tail-scale.ts.net.", "User": 1,
                 "Key": NODE.to_text(), "Machine": MACHINE.to_text(), "DiscoKey": DISCO.to_text(),
                 "Addresses": ["100.64.0.1/32", "fd7a:115c:a1e0::1/128"],
                 "AllowedIPs": ["100.64.0.1/32", "fd7a:115c:a1e0::1/128"], "HomeDERP": 1,
                 "DERP": "127.3.3.40:1",
                 "Cap": 130, "CapMap": {"https": None, "funnel-ports?ports=8080,443": None},
                 "MachineAuthorized": True, "Online": False},
        "DERPMap": {"Regions": {"1": {"RegionID": 1, "RegionCode": "test", "RegionName": "Test",
                                      "Nodes": [{"Name": "1a", "RegionID": 1, "HostName": "127.0.0.1",
                                                 "IPv4": "127.0.0.1", "STUNPort": -1, "DERPPort": 8443,
                                                 "InsecureForTests": True}]}},
                    "omitDefaultRegions": True},
        "Domain": "fake-control.example.net", "CollectServices": True,
        "PacketFilter": [{"SrcIPs": ["*"], "DstPorts": [{"IP": "*", "Ports": {"First": 0, "Last": 65535}}]}],
        "DNSConfig": {"Proxied": True, "Domains": ["tail-scale.ts.net"]},
        "UserProfiles": [{"ID": 1, "LoginName": "user-1@fake-control.example.net", "DisplayName": "u"}],
        "PeersChangedPatch": [{"NodeID": 2, "DERPRegion": 1, "Online": False}],
        "PeerSeenChange": {"2": True},
        "ControlTime": "2020-08-03T00:00:00.000001Z",
    }
    resp = MapResponse.from_json(json.dumps(go))
    assert resp.Node is not None and resp.Node.Key == NODE and resp.Node.LegacyDERPString == "127.3.3.40:1"
    assert resp.DERPMap is not None and resp.DERPMap.Regions is not None
    assert resp.DERPMap.Regions[1].Nodes is not None and resp.DERPMap.Regions[1].Nodes[0].STUNPort == -1
    assert resp.PeerSeenChange == {2: True}
    assert json.loads(resp.to_json()) == go


def test_keep_alive_and_empty_packet_filter() -> None:
    assert MapResponse(KeepAlive=True).to_json() == b'{"KeepAlive":true}'
    assert json.loads(MapResponse(PacketFilter=[]).to_json()) == {"PacketFilter": []}
    assert MapResponse.from_json(b"{}").PacketFilter is None


def test_key_response_json() -> None:
    body = OverTLSPublicKeyResponse(LegacyPublicKey=MachinePrivate.generate().public(), PublicKey=MACHINE)
    parsed = json.loads(body.to_json())
    assert parsed["publicKey"] == MACHINE.to_text() and parsed["legacyPublicKey"].startswith("mkey:")
    assert OverTLSPublicKeyResponse.from_json(body.to_json()).PublicKey == MACHINE


@pytest.mark.parametrize("bad", [b"", b"[", b"[]", b'{"ID":"x"}', b'{"Key":"mkey:00"}',
                                 b'{"Key":"nodekey:' + b"zz" * 32 + b'"}', b'{"Key":5}', b"\xff\xfe"])
def test_bad_json_is_one_typed_error(bad: bytes) -> None:
    with pytest.raises(TailcfgParseError):
        Node.from_json(bad)


def test_oversized_json_is_refused_before_parsing() -> None:
    with pytest.raises(TailcfgParseError):
        MapResponse.from_json(b" " * 101, max_len=100)
