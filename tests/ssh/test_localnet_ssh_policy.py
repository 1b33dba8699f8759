"""localnet's ``ssh`` section of policy.json → each node's MapResponse ``SSHPolicy`` (full map and
deltas), its parse errors, and the client-side parse of what arrives (bad policy → none: fail closed)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from pytsnet.actors.dataplane.netmap import ssh_policy
from pytsnet.localnet.netmap import SentState, Tailnet, delta, full_map
from pytsnet.localnet.policy import FILTER_ALLOW_ALL, Policy, PolicyError
from pytsnet.localnet.store import Node, Store
from pytsnet.wire.ssh_policy import Caller, EvalResult, evaluate
from pytsnet.wire.tailcfg.ssh import SSHPolicy


def _nodes(tmp: Path) -> tuple[Store, Node, Node, Node]:
    s = Store(tmp)
    alice = s.ensure_user("alice@example.com")
    s.ensure_user("bob@example.com")
    bob_id = next(u.id for u in s.users() if u.login_name == "bob@example.com")

    def add(n: int, host: str, user: int, tags: list[str] | None = None) -> Node:
        return s.add_node(machine_key="mkey:" + f"{n:02x}" * 32, node_key="nodekey:" + f"{n:02x}" * 32,
                          user_id=user, hostname=host, authorized=True, ephemeral=False, tags=tags)

    return s, add(1, "laptop", alice.id), add(2, "server", bob_id, ["tag:server"]), add(3, "desk", bob_id)


def _net(s: Store, p: Policy) -> Tailnet:
    nodes = s.nodes()
    return Tailnet(nodes=nodes, users=s.users(), online=set(), packet_filter=FILTER_ALLOW_ALL,
                   derp_map={"Regions": {}}, ssh_policies=p.ssh_policies(nodes, s.users()))


DOC = {"groups": {"group:eng": ["alice@example.com"]},
       "ssh": [{"action": "accept", "src": ["group:eng"], "dst": ["tag:server"],
                "users": ["autogroup:nonroot"], "acceptEnv": ["LANG"]},
               {"action": "accept", "src": ["*"], "dst": ["bob@example.com"], "users": ["root", "deploy"]}]}


def test_ssh_rules_compile_per_destination_node(tmp_path: Path) -> None:
    s, laptop, server, desk = _nodes(tmp_path)
    pols = Policy.parse(DOC).ssh_policies(s.nodes(), s.users())
    assert pols[laptop.id] == {"rules": []}  # no rule targets alice's laptop
    srv = SSHPolicy.model_validate(pols[server.id])
    assert len(srv.rules) == 1  # tagged: not "bob@example.com"'s (a user selector is untagged nodes)
    assert srv.rules[0] is not None and srv.rules[0].sshUsers == {"*": "=", "root": ""}
    assert [p.nodeIP for p in srv.rules[0].principals if p] == [ip for ip in (laptop.ipv4, laptop.ipv6) if ip]
    assert srv.rules[0].acceptEnv == ["LANG"]
    dsk = SSHPolicy.model_validate(pols[desk.id])
    assert len(dsk.rules) == 1 and dsk.rules[0] is not None and dsk.rules[0].principals[0] is not None
    assert dsk.rules[0].principals[0].any and dsk.rules[0].sshUsers == {"root": "root", "deploy": "deploy"}
    # what the server then decides
    now = datetime.now(UTC)
    from_laptop = Caller(src_ip=laptop.ipv4)
    assert evaluate(srv, from_laptop, "alice", now).local_user == "alice"
    assert evaluate(srv, from_laptop, "root", now).result is EvalResult.REJECTED_USER
    assert evaluate(srv, Caller(src_ip=desk.ipv4), "alice", now).result is EvalResult.REJECTED


def test_sshpolicy_in_full_map_and_deltas(tmp_path: Path) -> None:
    s, laptop, server, _ = _nodes(tmp_path)
    st = SentState()
    assert "SSHPolicy" not in full_map(server.id, _net(s, Policy.parse({})), st)  # no ssh section: none
    d = delta(server.id, _net(s, Policy.parse(DOC)), st)
    assert d is not None and set(d) == {"SSHPolicy"} and len(d["SSHPolicy"]["rules"]) == 1
    assert delta(server.id, _net(s, Policy.parse(DOC)), st) is None
    d = delta(server.id, _net(s, Policy.parse({})), st)  # section removed: nil would mean "unchanged"
    assert d == {"SSHPolicy": {"rules": []}}
    st2 = SentState()
    assert full_map(laptop.id, _net(s, Policy.parse(DOC)), st2)["SSHPolicy"] == {"rules": []}


@pytest.mark.parametrize("bad", [
    {"ssh": {}},
    {"ssh": ["x"]},
    {"ssh": [{"action": "deny", "src": ["*"], "dst": ["*"], "users": ["root"]}]},
    {"ssh": [{"action": "check", "src": ["*"], "dst": ["*"], "users": ["root"], "checkPeriod": "soon"}]},
    {"ssh": [{"action": "accept", "src": [], "dst": ["*"], "users": ["root"]}]},
    {"ssh": [{"action": "accept", "src": ["*"], "dst": ["*"], "users": []}]},
    {"ssh": [{"action": "accept", "src": ["*"], "dst": ["*"], "users": ["bad user"]}]},
    {"ssh": [{"action": "accept", "src": ["*"], "dst": ["autogroup:internet"], "users": ["root"]}]},
    {"ssh": [{"action": "accept", "src": ["*"], "dst": ["*"], "users": ["root"], "checkPeriod": "1h"}]},
    {"ssh": [{"action": "accept", "src": ["not a selector"], "dst": ["*"], "users": ["root"]}]},
    {"ssh": [{"action": "accept", "src": ["*"], "dst": ["*"], "users": ["root"], "acceptEnv": [1]}]},
])
def test_bad_ssh_section_is_a_policy_error(bad: object) -> None:
    with pytest.raises(PolicyError, match="ssh"):
        Policy.parse(bad)


def test_client_parses_sshpolicy_fail_closed() -> None:
    assert ssh_policy(None) is None
    assert ssh_policy({"rules": "nope"}) is None  # unusable: no SSH at all, not "allow"
    got = ssh_policy({"rules": [{"principals": [{"any": True}], "sshUsers": {"*": "="},
                                 "action": {"accept": True}}]})
    assert got is not None and len(got.rules) == 1
