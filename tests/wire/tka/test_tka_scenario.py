"""Go tka/scenario_test.go, ported: several nodes and control syncing, forks, bad AUMs refused."""

from __future__ import annotations

import dataclasses
import functools

import pytest
from tka_chaintest import (
    TestChain,
    chain_key_25519,
    new_testchain,
    opt_key,
    opt_sign_all_using,
    opt_template,
    sign_25519,
)

from pytsnet.wire.tka.aum import AUM, AUMKind, Signature
from pytsnet.wire.tka.authority import Authority
from pytsnet.wire.tka.chonk import MemChonk
from pytsnet.wire.tka.errors import TkaError, TkaVerifyError
from pytsnet.wire.tka.key import Key, KeyKind, verify_25519
from pytsnet.wire.tka.state import State, disablement_kdf

NOW = 1_700_000_000.0


@functools.cache
def kdf123() -> bytes:
    return disablement_kdf(bytes([1, 2, 3]))


@dataclasses.dataclass
class ScenarioNode:
    name: str
    a: Authority
    aums: dict[str, AUM]
    storage: MemChonk


class Scenario:
    """Go ``scenarioTest``: an initial chain every node knows, then per-node forks."""

    def __init__(self, test_name: str, shared_chain: str, *opts: object) -> None:
        pub, priv = chain_key_25519(test_name, 1)
        self.default_key = Key(kind=KeyKind.KEY25519, votes=1, public=pub)
        self.default_priv = priv
        genesis = AUM(
            message_kind=AUMKind.CHECKPOINT,
            prev_aum_hash=None,
            state=State(last_aum_hash=None, disablement_secrets=(kdf123(),), keys=(self.default_key,)),
        )
        self.initial = new_testchain(
            shared_chain,
            *opts,  # type: ignore[arg-type]
            opt_template("genesis", genesis),
            opt_key("key", self.default_key, priv),
            opt_sign_all_using("key"),
        )
        self.nodes: dict[str, ScenarioNode] = {}

    def mk_node(self, name: str) -> ScenarioNode:
        storage = self.initial.chonk()
        n = ScenarioNode(name, Authority.open(storage), dict(self.initial.aums), storage)
        self.nodes[name] = n
        return n

    def mk_node_with_forks(
        self, name: str, sign_with_default: bool, chains: dict[str, TestChain]
    ) -> ScenarioNode:
        n = self.mk_node(name)
        for parent_name, chain in chains.items():
            chain.nodes[chain.first_ident].parent_hash = n.aums[parent_name].hash()
            if sign_with_default:
                chain.keys["default_key"] = self.default_key
                chain.key_privs["default_key"] = self.default_priv
                chain.sign_all_keys.append("default_key")
            chain.build_chain()
            n.aums.update(chain.aums)
            # Inform wants ancestors first: order by walking from the fork point.
            ordered: list[AUM] = []
            want = n.aums[parent_name].hash()
            pending = list(chain.aums.values())
            while pending:
                nxt = next(a for a in pending if a.parent() == want)
                ordered.append(nxt)
                pending.remove(nxt)
                want = nxt.hash()
            n.a.inform(n.storage, ordered, NOW)
        return n

    @staticmethod
    def sync_between(n1: ScenarioNode, n2: ScenarioNode) -> None:
        o1 = n1.a.sync_offer(n1.storage)
        o2 = n2.a.sync_offer(n2.storage)
        from1 = n1.a.missing_aums(n1.storage, o2)
        from2 = n2.a.missing_aums(n2.storage, o1)
        if from1:
            n2.a.inform(n2.storage, from1, NOW)
        if from2:
            n1.a.inform(n1.storage, from2, NOW)

    @staticmethod
    def check_have_consensus(n1: ScenarioNode, n2: ScenarioNode) -> None:
        assert n1.a.head() == n2.a.head(), f"node {n1.name} & {n2.name} are not in sync"


def test_scenario_helpers() -> None:
    s = Scenario("TestScenarioHelpers", "\n        G -> L1\n        G.template = genesis\n")
    control = s.mk_node("control")
    n = s.mk_node_with_forks("n", True, {"L1": new_testchain("L2 -> L3")})
    for name in ("G", "L1", "L2", "L3"):
        assert name in n.aums
    l3 = n.aums["L3"]
    assert verify_25519(s.default_key.public, l3.sig_hash(), l3.signatures[0].signature)
    s.sync_between(control, n)
    s.check_have_consensus(control, n)
    assert control.a.head() == l3.hash()


def test_normal_propagation() -> None:
    s = Scenario("TestNormalPropagation", "\n        G -> L1 -> L2\n        G.template = genesis\n")
    control = s.mk_node("control")
    n1 = s.mk_node_with_forks("n1", True, {"L2": new_testchain("L3 -> L4")})
    s.sync_between(control, n1)
    s.check_have_consensus(control, n1)
    # A new node learns everything via control.
    n2 = s.mk_node("n2")
    s.sync_between(control, n2)
    s.check_have_consensus(control, n2)
    s.check_have_consensus(n1, n2)


def test_forking_propagation() -> None:
    pub, priv = chain_key_25519("TestForkingPropagation", 2)
    key = Key(kind=KeyKind.KEY25519, votes=2, public=pub)
    add_key2 = AUM(message_kind=AUMKind.ADD_KEY, prev_aum_hash=None, key=key)
    s = Scenario(
        "TestForkingPropagation",
        """
        G -> AddSecondKey -> L1 -> L2
        G.template = genesis
        AddSecondKey.template = addKey2
        """,
        opt_key("key2", key, priv),
        opt_template("addKey2", add_key2),
    )
    control = s.mk_node("control")
    n1 = s.mk_node_with_forks("n1", True, {"L2": new_testchain("L3 -> L4")})
    s.sync_between(control, n1)
    s.check_have_consensus(control, n1)
    # A forking update from L1 signed by key2 (2 votes) removing the default key (1 vote).
    n2 = s.mk_node_with_forks(
        "n2",
        False,
        {
            "L1": new_testchain(
                "F1 -> F2\n             F1.template = removeKey1",
                opt_sign_all_using("key2"),
                opt_key("key2", key, priv),
                opt_template(
                    "removeKey1",
                    AUM(
                        message_kind=AUMKind.REMOVE_KEY,
                        prev_aum_hash=None,
                        key_id=s.default_key.id(),
                    ),
                ),
            )
        },
    )
    s.sync_between(control, n2)
    s.check_have_consensus(control, n2)
    s.sync_between(control, n1)
    s.check_have_consensus(n1, n2)
    assert not n1.a.key_trusted(s.default_key.id())
    assert n1.a.key_trusted(key.id())
    assert n1.a.head() == n2.aums["F2"].hash()


def _corrupt_node(s: Scenario, l4: AUM) -> ScenarioNode:
    """n1 with a well-formed L3 and a bad L4 forced into its store and head (Go's setup)."""
    n1 = s.mk_node_with_forks("n1", True, {"L2": new_testchain("L3")})
    n1.storage.commit_verified_aums([l4], NOW)
    state = dataclasses.replace(n1.a.state, last_aum_hash=l4.hash())
    n1.a = Authority(l4, n1.a.oldest_ancestor, state)
    return n1


def _scenario(name: str) -> tuple[Scenario, ScenarioNode]:
    s = Scenario(name, "\n        G -> L1 -> L2\n        G.template = genesis\n")
    return s, s.mk_node("control")


def _assert_control_untouched(control: ScenarioNode) -> None:
    # Not even the well-formed L3 was accepted.
    assert control.a.head() == control.aums["L2"].hash()
    assert control.storage.aum(control.a.head()) == control.aums["L2"]
    assert len(control.storage.all_aums()) == 3


def test_invalid_aum_propagation_rejected() -> None:
    s, control = _scenario("TestInvalidAUMPropagationRejected")
    n0 = s.mk_node_with_forks("tmp", True, {"L2": new_testchain("L3")})
    # An AddKey without a key: invalid.
    l4 = sign_25519(AUM(message_kind=AUMKind.ADD_KEY, prev_aum_hash=n0.aums["L3"].hash()), s.default_priv)
    n1 = _corrupt_node(s, l4)
    with pytest.raises(TkaError):
        s.sync_between(control, n1)
    _assert_control_untouched(control)


def test_unsigned_aum_propagation_rejected() -> None:
    s, control = _scenario("TestUnsignedAUMPropagationRejected")
    n0 = s.mk_node_with_forks("tmp", True, {"L2": new_testchain("L3")})
    l4 = AUM(message_kind=AUMKind.NO_OP, prev_aum_hash=n0.aums["L3"].hash())
    n1 = _corrupt_node(s, l4)
    with pytest.raises(TkaVerifyError, match=r"^update 1 invalid: unsigned AUM$"):
        s.sync_between(control, n1)
    _assert_control_untouched(control)


def test_bad_sig_aum_propagation_rejected() -> None:
    s, control = _scenario("TestBadSigAUMPropagationRejected")
    n0 = s.mk_node_with_forks("tmp", True, {"L2": new_testchain("L3")})
    l4 = sign_25519(AUM(message_kind=AUMKind.NO_OP, prev_aum_hash=n0.aums["L3"].hash()), s.default_priv)
    sig = bytearray(l4.signatures[0].signature)
    sig[3] = 42
    l4 = dataclasses.replace(l4, signatures=(Signature(l4.signatures[0].key_id, bytes(sig)),))
    n1 = _corrupt_node(s, l4)
    with pytest.raises(TkaVerifyError, match=r"^update 1 invalid: signature 0: invalid signature$"):
        s.sync_between(control, n1)
    _assert_control_untouched(control)
