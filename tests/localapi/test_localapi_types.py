"""The Go-mirror models against JSON written by hand from Go's struct tags at tailscale.com v1.90.9.

The fixtures are what Go's ``encoding/json`` writes for these structs (never our own output): every
field without ``omitempty`` present (``null`` for a nil slice/map/pointer, ``0001-01-01T00:00:00Z``
for a zero ``time.Time``), ``omitempty`` fields left out when empty. Sources:
ipn/ipnstate/ipnstate.go:32 (Status), :162 (TailnetStatus), :180 (ExitNodeStatus), :224 (PeerStatus),
:696 (PingResult); client/tailscale/apitype/apitype.go:35 (WhoIsResponse); tailcfg/tailcfg.go:277
(UserProfile), :332 (Node), :829 (Hostinfo).
"""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from pydantic import ValidationError

from pytsnet.localapi.types import Node, PeerStatus, PingResult, Status, UserProfile, WhoIsResponse

NK1 = "nodekey:" + "11" * 32
NK2 = "nodekey:" + "22" * 32
ZERO = "0001-01-01T00:00:00Z"


def go_peer(nk: str, host: str, ip: str) -> dict[str, Any]:
    """ipnstate.go:224-331: the non-omitempty fields of PeerStatus, plus Tags/KeyExpiry (omitempty, set)."""
    return {
        "ID": "nStable1", "PublicKey": nk, "HostName": host, "DNSName": f"{host}.tail1234.ts.net.",
        "OS": "linux", "UserID": 123, "TailscaleIPs": [ip, "fd7a:115c:a1e0::1"],
        "AllowedIPs": [f"{ip}/32"], "Tags": ["tag:web"],
        "Addrs": None, "CurAddr": "", "Relay": "fra", "PeerRelay": "", "RxBytes": 0, "TxBytes": 0,
        "Created": "2025-01-02T03:04:05.123456789Z", "LastWrite": ZERO, "LastSeen": ZERO,
        "LastHandshake": ZERO, "Online": True, "ExitNode": False, "ExitNodeOption": False,
        "Active": False, "PeerAPIURL": None, "TaildropTarget": 0, "NoFileSharingReason": "",
        "InNetworkMap": True, "InMagicSock": False, "InEngine": False,
        "KeyExpiry": "2026-06-01T00:00:00Z",
    }


GO_STATUS: dict[str, Any] = {  # ipnstate.go:32-88; HaveNodeKey/ExitNodeStatus are omitempty
    "Version": "1.90.9-t1234abcd", "TUN": False, "BackendState": "Running", "HaveNodeKey": True,
    "AuthURL": "", "TailscaleIPs": ["100.64.0.1", "fd7a:115c:a1e0::1"],
    "Self": go_peer(NK1, "self", "100.64.0.1"), "Health": None, "MagicDNSSuffix": "tail1234.ts.net",
    "CurrentTailnet": {"Name": "user@example.test", "MagicDNSSuffix": "tail1234.ts.net",
                       "MagicDNSEnabled": True},
    "CertDomains": None, "Peer": {NK2: go_peer(NK2, "peer", "100.64.0.2")},
    "User": {"123": {"ID": 123, "LoginName": "user@example.test", "DisplayName": "User"}},
    "ClientVersion": None,
}

GO_WHOIS: dict[str, Any] = {  # apitype.go:35; Node per tailcfg.go:332-519, omitempty fields left out
    "Node": {
        "ID": 7, "StableID": "nStable7", "Name": "peer.tail1234.ts.net.", "User": 123, "Key": NK2,
        "KeyExpiry": ZERO, "Machine": "mkey:" + "33" * 32, "DiscoKey": "discokey:" + "44" * 32,
        "Addresses": ["100.64.0.2/32"], "AllowedIPs": ["100.64.0.2/32"],
        "Endpoints": ["192.0.2.1:41641"], "HomeDERP": 1,
        "Hostinfo": {"OS": "linux", "Hostname": "peer"}, "Created": ZERO, "Online": True,
        "MachineAuthorized": True, "ComputedName": "peer", "ComputedNameWithHost": "peer",
    },
    "UserProfile": {"ID": 123, "LoginName": "user@example.test", "DisplayName": "User"},
    "CapMap": None,
}


def test_go_status_fixture_decodes() -> None:
    st = Status.model_validate(GO_STATUS)
    assert st.Self is not None and st.Self.PublicKey == NK1
    assert st.Peer is not None and st.Peer[NK2].HostName == "peer"
    assert st.User is not None and st.User["123"].LoginName == "user@example.test"


def test_go_whois_fixture_decodes() -> None:
    w = WhoIsResponse.model_validate(GO_WHOIS)
    assert w.Node.Hostinfo is not None and w.Node.Hostinfo.Hostname == "peer"
    assert w.UserProfile.ID == 123


def test_go_ping_fixture_decodes() -> None:  # ipnstate.go:696: PeerAPIPort/PeerAPIURL/IsLocalIP omitempty
    PingResult.model_validate({"IP": "100.64.0.2", "NodeIP": "100.64.0.2", "NodeName": "peer", "Err": "",
                               "LatencySeconds": 0.0123, "Endpoint": "192.0.2.1:41641", "PeerRelay": "",
                               "DERPRegionID": 0, "DERPRegionCode": ""})


@pytest.mark.parametrize(("model", "doc", "path"), [
    (Status, GO_STATUS, ("Health",)),  # no omitempty: Go always writes it
    (Status, GO_STATUS, ("Self", "InEngine")),
    (Status, GO_STATUS, ("CurrentTailnet", "MagicDNSEnabled")),
    (WhoIsResponse, GO_WHOIS, ("CapMap",)),
    (WhoIsResponse, GO_WHOIS, ("Node", "Created")),
    (WhoIsResponse, GO_WHOIS, ("UserProfile", "DisplayName")),
])
def test_missing_required_field_is_refused(model: type[Status | WhoIsResponse], doc: dict[str, Any],
                                           path: tuple[str, ...]) -> None:
    bad = copy.deepcopy(doc)
    where = bad
    for p in path[:-1]:
        where = where[p]
    del where[path[-1]]
    with pytest.raises(ValidationError):
        model.model_validate(bad)


@pytest.mark.parametrize(("model", "doc"), [(Status, GO_STATUS), (WhoIsResponse, GO_WHOIS)])
def test_unknown_field_is_refused(model: type[Status | WhoIsResponse], doc: dict[str, Any]) -> None:
    with pytest.raises(ValidationError, match="Extra inputs"):
        model.model_validate({**doc, "NotAGoField": 1})


def test_wrong_types_are_refused() -> None:
    with pytest.raises(ValidationError):  # UserID is a JSON number in Go
        UserProfile.model_validate({"ID": "123", "LoginName": "a", "DisplayName": "b"})
    with pytest.raises(ValidationError):  # keys are nodekey:<64 hex>
        PeerStatus.model_validate({**go_peer(NK1, "x", "100.64.0.9"), "PublicKey": "11" * 32})
    with pytest.raises(ValidationError):  # time.Time is RFC 3339
        Node.model_validate({**GO_WHOIS["Node"], "Created": 0})


def test_round_trip_keeps_go_names() -> None:
    st = Status.model_validate(GO_STATUS)
    again = json.loads(st.model_dump_json(exclude_defaults=False))
    assert Status.model_validate(again) == st
