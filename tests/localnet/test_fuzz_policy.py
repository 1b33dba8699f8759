"""Fuzzed policy files: ``Policy.load``/``Policy.parse`` give a usable Policy or a ``PolicyError``.

"Usable" is checked, not assumed: an accepted policy compiles (``filter_rules``) against a small
tailnet into strict JSON. Input is raw text (HuJSON-ish comments and trailing commas, NaN, deep
nesting, invalid UTF-8), arbitrary JSON, and policy-shaped objects whose fields hold anything.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pytsnet.actors.wgengine.filter_rules import rules_from_tailcfg
from pytsnet.localnet.policy import POLICY_FILE, Policy, PolicyError
from pytsnet.localnet.store import Node, User
from pytsnet.wire.tailcfg.filter import FilterRule

FUZZ = settings(max_examples=300, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

USERS = [User(1, "alice@localnet", "Alice", 0.0), User(2, "bob@localnet", "Bob", 0.0)]
NODES = [Node(1, "n1", "mkey:1", "nodekey:1", "discokey:1", 1, "a", "100.64.0.1", "fd7a:115c:a1e0::1",
              True, False),
         Node(2, "n2", "mkey:2", "nodekey:2", "discokey:2", 2, "b", "100.64.0.2", "", True, False,
              tags=["tag:web"])]
GOOD = {"groups": {"group:eng": ["alice@localnet"]},
        "acls": [{"action": "accept", "src": ["group:eng", "tag:ci", "10.0.0.0/8"],
                  "dst": ["tag:web:80,443", "*:22-23", "bob@localnet:*", "autogroup:member:1"]}]}


def check(parse: Callable[[], Policy]) -> bool:
    """Run one parse; an accepted policy must compile into strict JSON filter rules. True: accepted."""
    try:
        pol = parse()
    except PolicyError as e:
        assert "\n" not in str(e) and len(str(e)) < 1000, str(e)[:200]  # one bounded log line
        return False
    assert isinstance(pol, Policy)
    rules = pol.filter_rules(NODES, USERS)
    json.dumps(rules, allow_nan=False)
    # every node must accept the filter it is sent: one it refuses leaves it with none (nothing inbound)
    rules_from_tailcfg([FilterRule.model_validate(r) for r in rules])
    return True


# -- strategies --------------------------------------------------------------------------------
_selectors = st.sampled_from(["*", "tag:web", "tag:", "group:eng", "group:none", "autogroup:member",
                              "autogroup:admin", "alice@localnet", "@", "10.0.0.0/8", "::1", "fe80::1%eth0",
                              "192.0.2.4/33", "100.64.0.1", "", " ", "x" * 300, "10.1.2.3/8",
                              "10.0.0.0/255.0.0.0", "10.0.0.0/08", "::ffff:192.0.2.4", "fe80::1%eth0/64",
                              "192.0.2.4-192.0.2.9"])
_ports = st.one_of(st.sampled_from(["*", "0", "65535", "65536", "80,443", "1-2", "2-1", "-1", "+5", " 5",
                                    "٣", "5_0", "", ",", "9" * 5000, "1-", "-", "1--2"]),
                   st.text(max_size=12))
_leaf = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True), st.text(max_size=12),
                  _selectors)
_json = st.recursive(_leaf, lambda inner: st.one_of(
    st.lists(inner, max_size=4),
    st.dictionaries(st.one_of(st.text(max_size=8), _selectors), inner, max_size=4)),
    max_leaves=12)
_dst = st.one_of(st.builds(lambda s, p: f"{s}:{p}", _selectors, _ports), _json)
_acl = st.one_of(st.fixed_dictionaries({}, optional={
    "action": st.one_of(st.just("accept"), _json),
    "src": st.one_of(st.lists(st.one_of(_selectors, _json), max_size=4), _json),
    "dst": st.one_of(st.lists(_dst, max_size=4), _json),
    "extra": _json}), _json)
_groups = st.one_of(st.dictionaries(st.one_of(st.just("group:eng"), st.text(max_size=8)),
                                    st.one_of(st.lists(st.one_of(_selectors, _json), max_size=3), _json),
                                    max_size=3), _json)
_policy_doc = st.one_of(
    st.fixed_dictionaries({}, optional={"groups": _groups, "tagOwners": _json,
                                        "acls": st.one_of(st.lists(_acl, max_size=3), _json)}),
    _json)


@st.composite
def _hujson_ish(draw: st.DrawFn) -> bytes:
    """Policy text as a human edits it: comments, trailing commas, NaN, cut short, mangled bytes."""
    text = json.dumps(draw(st.one_of(st.just(GOOD), _policy_doc)), indent=1)
    for _ in range(draw(st.integers(0, 3))):
        i = draw(st.integers(0, len(text)))
        text = text[:i] + draw(st.sampled_from(["// note\n", "/* c */", ",", "}", "]", "NaN", "Infinity",
                                                "\x00", "'", '"', "\\u12", "[" * 3000])) + text[i:]
    raw = text.encode()
    if draw(st.booleans()):
        raw = raw[:draw(st.integers(0, len(raw)))]
    if draw(st.booleans()):
        raw += draw(st.binary(max_size=8))
    return raw


_nested = st.builds(lambda n, doc: b"[" * n + json.dumps(doc).encode() + b"]" * n,
                    st.integers(0, 5000), st.one_of(st.just(GOOD), _policy_doc))


# -- tests -------------------------------------------------------------------------------------
def test_good_policy_is_accepted_and_compiles() -> None:
    """The mutations' starting point is accepted (else the fuzz below would only prove refusals)."""
    pol = Policy.parse(GOOD)
    assert pol.rules is not None and pol.filter_rules(NODES, USERS)


def test_fuzz_parse_structured_docs() -> None:
    outcomes: set[bool] = set()

    @FUZZ
    @given(doc=_policy_doc)
    def probe(doc: object) -> None:
        outcomes.add(check(lambda: Policy.parse(doc)))

    probe()
    assert outcomes == {True, False}  # both accepted policies (compiled) and refusals were exercised


def test_fuzz_load_policy_text(tmp_path: Path) -> None:
    outcomes: set[bool] = set()

    @FUZZ
    @given(raw=st.one_of(_hujson_ish(), st.binary(max_size=200), _nested))
    def probe(raw: bytes) -> None:
        (tmp_path / POLICY_FILE).write_bytes(raw)
        outcomes.add(check(lambda: Policy.load(tmp_path)))

    probe()
    assert outcomes == {True, False}


@pytest.mark.parametrize("doc", [
    {"groups": {"group:eng": [["alice@localnet"]]}, "acls": [{"src": ["group:eng"], "dst": ["*:*"]}]},
    {"groups": {"group:eng": [{"a": 1}]}, "acls": [{"src": ["group:eng"], "dst": ["*:*"]}]},
    {"groups": {"group:eng": [5, None]}, "acls": []},
    {"acls": [{"src": ["*"], "dst": ["*:" + "9" * 5000]}]},
    {"acls": [{"src": ["*"], "dst": ["*: 80"]}]},
    {"acls": [{"src": ["x" * 100_000], "dst": ["*:*"]}]},
    {"acls": [{"src": ["10.1.2.3/8"], "dst": ["*:*"]}]},  # host bits set: every node refused the filter
    {"acls": [{"src": ["*"], "dst": ["10.0.0.0/255.0.0.0:22"]}]},
    {"acls": [{"src": ["fe80::1%eth0"], "dst": ["*:*"]}]},
])
def test_known_crashers(doc: object) -> None:
    check(lambda: Policy.parse(doc))


def test_deeply_nested_policy_file_is_a_policy_error(tmp_path: Path) -> None:
    (tmp_path / POLICY_FILE).write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(PolicyError):
        Policy.load(tmp_path)


@pytest.mark.parametrize("ports", ["+5", " 5", "٣", "5_0", "1-+2"])
def test_ports_are_plain_ascii_decimal(ports: str) -> None:
    """Go's ``strconv.ParseUint``: no sign, space, underscore or non-ASCII digit slips through."""
    with pytest.raises(PolicyError):
        Policy.parse({"acls": [{"src": ["*"], "dst": [f"*:{ports}"]}]})


@pytest.mark.parametrize(("sel", "sent"), [
    ("10.0.0.0/255.0.0.0", "10.0.0.0/8"), ("10.0.0.0/08", "10.0.0.0/8"),
    ("fd7a:115c:a1e0:0:0::1", "fd7a:115c:a1e0::1"), ("100.64.0.1", "100.64.0.1")])
def test_ip_selectors_are_sent_in_canonical_form(sel: str, sent: str) -> None:
    """Go parses filter IPs with ``netip.ParsePrefix``/``ParseAddr``: no netmask or zero-padded bits."""
    rules = Policy.parse({"acls": [{"src": [sel], "dst": [f"{sel}:22"]}]}).filter_rules(NODES, USERS)
    assert rules == [{"SrcIPs": [sent], "DstPorts": [{"IP": sent, "Ports": {"First": 22, "Last": 22}}]}]


@pytest.mark.parametrize("sel", ["10.1.2.3/8", "fe80::1%eth0", "fe80::1%eth0/64"])
def test_ip_selectors_with_host_bits_or_zones_are_refused(sel: str) -> None:
    with pytest.raises(PolicyError):
        Policy.parse({"acls": [{"src": [sel], "dst": ["*:*"]}]})
