"""Fuzzed Tailnet Lock calls against control's authority: any body gets an answer or a ``TkaRefused``
(a 4xx), never another exception, and nothing it sends changes the lock unless it verifies."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pytsnet.localnet.store import Node, Store
from pytsnet.localnet.tka import ControlTka, TkaRefused
from pytsnet.wire.keys import NLPrivate, NodePrivate
from pytsnet.wire.tka import AUM, AUMKind, Key, KeyKind, State, disablement_kdf, sign_direct

FUZZ = settings(max_examples=300, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
ADMIN = NLPrivate.generate()
NODE = NodePrivate.generate().public()
GENESIS = AUM(message_kind=AUMKind.CHECKPOINT, prev_aum_hash=None, state=State(
    last_aum_hash=None, disablement_secrets=(disablement_kdf(b"s" * 32),),
    keys=(Key(kind=KeyKind.KEY25519, votes=1, public=ADMIN.public().raw),))).signed(ADMIN)
SIG = sign_direct(NODE, ADMIN).serialize()
OPS = ("init/begin", "init/finish", "bootstrap", "sync/offer", "sync/send", "sign", "affected-sigs",
       "disable")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ControlTka, Node]]:
    store = Store(tmp_path_factory.mktemp("tkafuzz"))
    node = store.add_node(machine_key="mkey:" + "11" * 32, node_key=NODE.to_text(), user_id=1, hostname="n",
                          authorized=True, ephemeral=False)
    tka = ControlTka(store)
    tka.nl_keys[node.id] = ADMIN.public().raw
    tka.init_begin(json.dumps({"GenesisAUM": base64.b64encode(GENESIS.serialize()).decode()}).encode(),
                   node, [node], 0.0)
    tka.init_finish(json.dumps({"Signatures": {str(node.id): base64.b64encode(SIG).decode()}}).encode(),
                    node, [node], 0.0)
    yield tka, node
    store.close()


def _b64(b: bytes) -> str:
    return base64.b64encode(b).decode()


_scalar = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.text(max_size=40),
                    st.binary(max_size=200).map(_b64))
_near_valid = st.one_of(st.just(_b64(GENESIS.serialize())), st.just(_b64(SIG)),
                        st.binary(max_size=300).map(lambda b: _b64(GENESIS.serialize()[: len(b) % 200] + b)),
                        st.binary(max_size=300).map(lambda b: _b64(SIG[: len(b) % 90] + b)))
_value = st.one_of(_scalar, _near_valid, st.lists(st.one_of(_scalar, _near_valid), max_size=4),
                   st.dictionaries(st.text(max_size=5), st.one_of(_scalar, _near_valid), max_size=3))
_fields = st.sampled_from(["GenesisAUM", "Signatures", "Head", "Ancestors", "MissingAUMs", "Signature",
                           "KeyID", "DisablementSecret", "NodeKey", "Version"])
_bodies = st.one_of(st.binary(max_size=200),
                    st.dictionaries(_fields, _value, max_size=5).map(lambda d: json.dumps(d).encode()))


def _call(tka: ControlTka, node: Node, op: str, body: bytes) -> None:
    if op == "init/begin":
        tka.init_begin(body, node, [node], 0.0)
    elif op == "init/finish":
        tka.init_finish(body, node, [node], 0.0)
    elif op == "bootstrap":
        tka.bootstrap(body)
    elif op == "sync/offer":
        tka.sync_offer(body, node)
    elif op == "sync/send":
        tka.sync_send(body, node, 0.0)
    elif op == "sign":
        tka.sign(body, {node.node_key: node})
    elif op == "affected-sigs":
        tka.affected_sigs(body, {node.id})
    else:
        authority, secret = tka.disable_check(body)
        tka.disable(authority, secret, authority.valid_disablement(secret))


@FUZZ
@given(op=st.sampled_from(OPS), body=_bodies)
def test_any_body_is_answered_or_refused(world: Any, op: str, body: bytes) -> None:
    tka, node = world
    head = tka.head_text()
    try:
        _call(tka, node, op, body)
    except TkaRefused as e:
        assert 400 <= e.status < 500
    assert tka.status == "enabled" and tka.head_text() == head  # nothing forged got in
    assert tka.sigs == {node.id: SIG} or op == "sign"


@FUZZ
@given(req=st.dictionaries(st.sampled_from(["NodeKeySignature", "NLKey", "OldNodeKey"]), _value, max_size=3))
def test_register_fields_are_checked_or_refused(world: Any, req: dict[str, Any]) -> None:
    tka, node = world
    answer, sig = tka.register_check(req, "mkey:" + "11" * 32, node.node_key, "", node, None)
    assert answer is None or set(answer) <= {"Error", "NodeKeySignature"}
    assert sig in (b"", SIG)  # only a signature that verifies is kept


def test_store_file_round_trip(tmp_path: Path) -> None:
    """What the fuzzed authority persisted loads back to the same lock."""
    store = Store(tmp_path)
    node = store.add_node(machine_key="mkey:" + "22" * 32, node_key=NODE.to_text(), user_id=1, hostname="n",
                          authorized=True, ephemeral=False)
    tka = ControlTka(store)
    tka.nl_keys[node.id] = ADMIN.public().raw
    tka.init_begin(json.dumps({"GenesisAUM": _b64(GENESIS.serialize())}).encode(), node, [node], 0.0)
    tka.init_finish(json.dumps({"Signatures": {str(node.id): _b64(SIG)}}).encode(), node, [node], 0.0)
    again = ControlTka.load(store, 0.0)
    assert (again.status, again.head_text(), again.sigs) == ("enabled", tka.head_text(), {node.id: SIG})
    store.close()
