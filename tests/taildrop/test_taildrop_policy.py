"""localnet's ``taildrop`` policy entry compiled into CapGrants, and the netmap's file-sharing capability."""

from __future__ import annotations

import ipaddress

import pytest

from pytsnet.actors.peerapi.ingress import peer_caps
from pytsnet.actors.taildrop.put import CAP_FILE_SHARING, PEER_CAP_FILE_SEND, PEER_CAP_FILE_TARGET
from pytsnet.localnet.netmap import DEFAULT_CAPMAP
from pytsnet.localnet.policy import Policy, PolicyError
from pytsnet.localnet.store import Node, User
from pytsnet.messages.wgengine import WgFilterRule


def _node(i: int, user: int, tags: list[str] | None = None) -> Node:
    return Node(id=i, stable_id=f"n{i}", machine_key="", node_key=f"nodekey:{i:064x}", disco_key="",
                user_id=user, hostname=f"n{i}", ipv4=f"100.64.0.{i}", ipv6=f"fd7a:115c:a1e0::{i}",
                authorized=True, ephemeral=False, tags=tags or [])


def _caps(rules: list[dict[str, object]], src: str, dst: str) -> set[str]:
    pf = [WgFilterRule.model_validate({**r, "CapGrant": [{"Dsts": g["Dsts"], "Caps": list(g["CapMap"])}
                                                         for g in r.get("CapGrant", [])]})  # type: ignore[attr-defined]
          for r in rules]
    return peer_caps(pf, ipaddress.ip_address(src), [ipaddress.ip_address(dst)])


def test_taildrop_entry_grants_both_sides_one_way() -> None:
    users = [User(id=1, login_name="alice@x", display_name="", created=0.0),
             User(id=2, login_name="bob@x", display_name="", created=0.0)]
    nodes = [_node(1, 1), _node(2, 2), _node(3, 2, ["tag:inbox"])]
    for acls in (None, [{"action": "accept", "src": ["*"], "dst": ["*:*"]}]):
        doc: dict[str, object] = {"taildrop": [{"src": ["alice@x"], "dst": ["tag:inbox"]}]}
        if acls is not None:
            doc["acls"] = acls
        rules = Policy.parse(doc).filter_rules(nodes, users)
        # alice's node sees the inbox as a file target; the inbox lets alice's node put files
        assert PEER_CAP_FILE_TARGET in _caps(rules, "100.64.0.3", "100.64.0.1")
        assert PEER_CAP_FILE_SEND in _caps(rules, "100.64.0.1", "100.64.0.3")
        assert PEER_CAP_FILE_SEND in _caps(rules, "fd7a:115c:a1e0::1", "fd7a:115c:a1e0::3")
        # one way, and nobody else
        assert _caps(rules, "100.64.0.3", "100.64.0.1") == {PEER_CAP_FILE_TARGET}
        assert _caps(rules, "100.64.0.1", "100.64.0.2") == set()
        assert _caps(rules, "100.64.0.2", "100.64.0.3") == set()
    assert Policy.parse({}).filter_rules(nodes, users) == Policy.allow_all().filter_rules(nodes, users)


@pytest.mark.parametrize("bad", [{}, [{"src": "alice@x", "dst": []}], [{"src": [], "dst": [], "app": 1}],
                                 [{"src": ["nope!"], "dst": ["*"]}], [1]])
def test_malformed_taildrop_entries_refused(bad: object) -> None:
    with pytest.raises(PolicyError):
        Policy.parse({"taildrop": bad})


def test_every_node_has_the_file_sharing_capability() -> None:
    assert CAP_FILE_SHARING in DEFAULT_CAPMAP and "file-sharing" in DEFAULT_CAPMAP
