"""The sans-IO SSHPolicy evaluator: Go's TestMatchRule / TestEvalSSHPolicy cases, plus the pre-banner
``admit`` decision and the model's Go JSON."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from pytsnet.wire.ssh_policy import Caller, EvalResult, admit, evaluate, map_local_user
from pytsnet.wire.tailcfg.base import TailcfgParseError
from pytsnet.wire.tailcfg.ssh import SSHAction, SSHPolicy, SSHPrincipal, SSHRule

NOW = datetime(2026, 1, 1, tzinfo=UTC)
ANY = [SSHPrincipal(any=True)]
ACCEPT = SSHAction(accept=True)
ALICE = Caller(src_ip="100.64.0.9", node_stable_id="nALICE", login_name="alice@example.com")


def one(rule: SSHRule, user: str = "alice", caller: Caller = ALICE) -> tuple[EvalResult, str]:
    d = evaluate(SSHPolicy(rules=[rule]), caller, user, NOW)
    return d.result, d.local_user


@pytest.mark.parametrize(("rule", "want"), [
    (SSHRule(principals=ANY, sshUsers={"*": "ubuntu"}), (EvalResult.ACCEPTED, "ubuntu")),  # ok-wildcard
    (SSHRule(principals=[None, SSHPrincipal(any=True)], sshUsers={"*": "ubuntu"}, action=ACCEPT),
     (EvalResult.ACCEPTED, "ubuntu")),  # ok-wildcard-and-nil-principal
    (SSHRule(principals=ANY, sshUsers={"*": "ubuntu", "alice": "thealice"}, action=ACCEPT),
     (EvalResult.ACCEPTED, "thealice")),  # ok-exact
    (SSHRule(principals=ANY, sshUsers={"*": "="}, action=ACCEPT),
     (EvalResult.ACCEPTED, "alice")),  # ssh-user-equal
    (SSHRule(principals=ANY, action=SSHAction(reject=True)),
     (EvalResult.ACCEPTED, "")),  # no-users-for-reject
    (SSHRule(principals=[SSHPrincipal(nodeIP="100.64.0.9")], sshUsers={"*": "u"}, action=ACCEPT),
     (EvalResult.ACCEPTED, "u")),
    (SSHRule(principals=[SSHPrincipal(node="nALICE")], sshUsers={"*": "u"}, action=ACCEPT),
     (EvalResult.ACCEPTED, "u")),
    (SSHRule(principals=[SSHPrincipal(userLogin="alice@example.com")], sshUsers={"*": "u"}, action=ACCEPT),
     (EvalResult.ACCEPTED, "u")),
    (SSHRule(principals=ANY, sshUsers={"*": "ubuntu"}), (EvalResult.REJECTED, "")),  # nil-action
    (SSHRule(principals=ANY, sshUsers={"*": "u"}, action=ACCEPT, ruleExpires=datetime(1970, 1, 1, 0, 1, 40,
                                                                                       tzinfo=UTC)),
     (EvalResult.REJECTED, "")),  # expired
    (SSHRule(sshUsers={"*": "ubuntu"}, action=ACCEPT), (EvalResult.REJECTED, "")),  # no-principal
    (SSHRule(principals=ANY, action=ACCEPT), (EvalResult.REJECTED_USER, "")),  # no-user-match
    (SSHRule(principals=[SSHPrincipal(nodeIP="100.64.0.10"), SSHPrincipal(userLogin="bob@example.com"),
                         SSHPrincipal(node="nBOB")], sshUsers={"*": "u"}, action=ACCEPT),
     (EvalResult.REJECTED, "")),
])
def test_match_rule_as_go(rule: SSHRule, want: tuple[EvalResult, str]) -> None:
    if rule.action is None and want[0] is EvalResult.ACCEPTED:
        rule = rule.model_copy(update={"action": ACCEPT})
    assert one(rule) == want


def test_first_match_wins_and_accept_env_as_go() -> None:
    """Go's multiple-matches-picks-first-match and no-user-matches-returns-rejected-user."""
    a = SSHAction()
    pol = SSHPolicy(rules=[
        SSHRule(principals=ANY, sshUsers={"other": "other1"}, action=a),
        SSHRule(principals=ANY, sshUsers={"*": "ubuntu", "alice": "thealice"}, action=a,
                acceptEnv=["EXAMPLE", "?_?", "TEST_*"]),
        SSHRule(principals=ANY, sshUsers={"*": "ubuntu", "alice": "thealice", "mark": "markthe"}, action=a,
                acceptEnv=["*"]),
    ])
    d = evaluate(pol, ALICE, "alice", NOW)
    assert (d.result, d.local_user) == (EvalResult.ACCEPTED, "thealice")
    assert d.accept_env == ("EXAMPLE", "?_?", "TEST_*")
    assert not d.accepted  # an empty action is neither accept nor reject: never a session
    only_others = SSHPolicy(rules=[SSHRule(principals=ANY, sshUsers={"fedora": "ubuntu"}, action=a),
                                   SSHRule(principals=ANY, sshUsers={"mark": "markthe"}, action=a)])
    assert evaluate(only_others, ALICE, "alice", NOW).result is EvalResult.REJECTED_USER
    assert evaluate(SSHPolicy(rules=[]), ALICE, "alice", NOW).result is EvalResult.REJECTED
    assert evaluate(None, ALICE, "alice", NOW).result is EvalResult.NO_POLICY


def test_map_local_user() -> None:
    assert map_local_user({"root": "", "*": "="}, "root") == ""  # autogroup:nonroot's shape
    assert map_local_user({"root": "", "*": "="}, "bob") == "bob"
    assert map_local_user({}, "bob") == ""


def test_ipv4_mapped_source_matches_node_ip() -> None:
    rule = SSHRule(principals=[SSHPrincipal(nodeIP="100.64.0.9")], sshUsers={"*": "u"}, action=ACCEPT)
    assert one(rule, caller=Caller(src_ip="::ffff:100.64.0.9"))[0] is EvalResult.ACCEPTED
    assert one(rule, caller=Caller(src_ip="not-an-ip"))[0] is EvalResult.REJECTED


def test_admit_before_banner() -> None:
    accept_bob = SSHRule(principals=[SSHPrincipal(userLogin="bob@example.com")], sshUsers={"*": "="},
                         action=ACCEPT)
    reject_alice = SSHRule(principals=[SSHPrincipal(userLogin="alice@example.com")],
                           action=SSHAction(reject=True))
    accept_any = SSHRule(principals=ANY, sshUsers={"*": "="}, action=ACCEPT)
    assert not admit(None, ALICE, NOW)
    assert not admit(SSHPolicy(rules=[accept_bob]), ALICE, NOW)  # nobody names alice
    assert not admit(SSHPolicy(rules=[reject_alice, accept_any]), ALICE, NOW)  # first match rejects
    assert admit(SSHPolicy(rules=[accept_bob, accept_any]), ALICE, NOW)
    assert not admit(SSHPolicy(rules=[SSHRule(principals=ANY, sshUsers={"root": ""}, action=ACCEPT)]),
                     ALICE, NOW)  # maps nobody
    check = SSHRule(principals=ANY, sshUsers={"*": "="}, action=SSHAction(holdAndDelegate="https://x/$SSH_USER"))
    assert admit(SSHPolicy(rules=[check]), ALICE, NOW)  # decided at auth (check mode: 22d)


def test_policy_json_go_names_and_omitempty() -> None:
    raw = json.dumps({"rules": [None, {"principals": [{"nodeIP": "100.64.0.1"}, None], "sshUsers": {"*": "="},
                                       "action": {"accept": True, "sessionDuration": 3_600_000_000_000},
                                       "ruleExpires": "2030-01-01T00:00:00Z", "unknownField": 1}]})
    pol = SSHPolicy.from_json(raw)
    rule = pol.rules[1]
    assert rule is not None and rule.action is not None and rule.action.sessionDuration == 3_600_000_000_000
    out = json.loads(SSHPolicy(rules=[SSHRule(principals=ANY, action=SSHAction(reject=True))]).to_json())
    assert out == {"rules": [{"principals": [{"any": True}], "sshUsers": {}, "action": {"reject": True}}]}
    assert json.loads(SSHPolicy().to_json()) == {"rules": []}
    with pytest.raises(TailcfgParseError):
        SSHPolicy.from_json('{"rules": [{"principals": "nope"}]}')
