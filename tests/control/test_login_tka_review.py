"""Review of the login machine's re-sign (issue 21, r1): a malicious control server must not get a node's
lock key to sign node keys that were never ours.

Go's ``ResignNKS`` trims a rotation chain of more than 15 keys by re-signing its inner layers with the
node's lock key, trusting the layers control sent back. Without a check, control can slip a key of its own
into those layers (with garbage signatures) and get them re-signed: the re-signed inner layer is then a
valid rotation signature for control's key, rooted in our real Direct signature, that every locked peer
accepts. The machine re-signs only a chain whose rotation layers each verify under the key they nest.
"""

from __future__ import annotations

import base64
import dataclasses

import pytest
from test_login_machine import Drive

import pytsnet.wire.control as lm
from pytsnet.wire.keys import NLPrivate, NodePrivate, NodePublic
from pytsnet.wire.tka import Key, KeyKind, NodeKeySignature, SigKind, State, TkaError, sign_direct
from pytsnet.wire.tka.authority import node_key_authorized_with_details
from pytsnet.wire.tka.sig import node_public_binary


def _state(admin: NLPrivate) -> State:
    return State(last_aum_hash=None, disablement_secrets=(b"\x02" * 32,),
                 keys=(Key(kind=KeyKind.KEY25519, votes=1, public=admin.public().raw),))


def _layers(sig: NodeKeySignature) -> list[NodeKeySignature]:
    out: list[NodeKeySignature] = []
    cur: NodeKeySignature | None = sig
    while cur is not None:
        out.append(cur)
        cur = cur.nested
    return out


def _chain(direct: NodeKeySignature, pubkeys: list[NodePublic], signer: NLPrivate | None) -> bytes:
    """Rotation layers over ``direct``, ``pubkeys`` newest first; signed by ``signer`` or with garbage."""
    sig = direct
    for pk in reversed(pubkeys):
        sig = NodeKeySignature(sig_kind=SigKind.ROTATION, pubkey=node_public_binary(pk), nested=sig)
        body = signer.sign(sig.sig_hash()) if signer is not None else b"\x07" * 64
        sig = dataclasses.replace(sig, signature=body)
    return sig.serialize()


def test_forged_long_chain_does_not_get_a_foreign_key_signed() -> None:
    admin = NLPrivate.generate()
    d = Drive()
    ours = d.m.node.public()
    direct = sign_direct(NodePrivate.generate().public(), admin, wrapping_pubkey=d.m.nl_key.public().raw)
    victim = NodePrivate.generate().public()  # control's own node
    # 15 rotation layers + the Direct: 16 keys (> 15: trimmed), 16 CBOR levels (Go's decode limit)
    pubkeys = [ours, victim] + [NodePrivate.generate().public() for _ in range(13)]
    forged = _chain(direct, pubkeys, signer=None)
    d.send(lm.Connected(1))
    d.register_with(NodeKeySignature=base64.b64encode(forged).decode())
    req = d.one(lm.SendRegister).request
    state = _state(admin)
    if req.NodeKeySignature:
        sent = NodeKeySignature.unserialize(base64.b64decode(req.NodeKeySignature))
        for layer in _layers(sent):
            if layer.pubkey == node_public_binary(victim):
                with pytest.raises(TkaError):
                    node_key_authorized_with_details(state, victim, layer.serialize())
    assert req.NodeKeySignature is None  # the forged chain is not carried over at all
    assert any("failed re-signing" in n.text for n in d.out if isinstance(n, lm.Note))


def test_genuine_long_chain_is_still_resigned_and_trimmed() -> None:
    """Our own history of 15 rotations (each layer signed by our lock key) re-signs as Go does."""
    admin = NLPrivate.generate()
    d = Drive()
    ours = d.m.node.public()
    direct = sign_direct(NodePrivate.generate().public(), admin, wrapping_pubkey=d.m.nl_key.public().raw)
    pubkeys = [ours] + [NodePrivate.generate().public() for _ in range(14)]
    genuine = _chain(direct, pubkeys, signer=d.m.nl_key)
    d.send(lm.Connected(1))
    d.register_with(NodeKeySignature=base64.b64encode(genuine).decode())
    req = d.one(lm.SendRegister).request
    assert req.NodeKeySignature
    details = node_key_authorized_with_details(_state(admin), req.NodeKey,
                                               base64.b64decode(req.NodeKeySignature))
    assert details is not None and details.prev_node_keys[:14] == tuple(pubkeys[:14])
    assert len(details.prev_node_keys) == 15  # trimmed: 14 re-signed layers + the Direct's key
