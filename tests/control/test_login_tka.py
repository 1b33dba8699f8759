"""The login machine's Tailnet Lock duties, sans-IO: the node's lock key (made once, persisted with the
node record, given to a record from before the lock), ``RegisterRequest.NLKey``, ``MapRequest.TKAHead``
(and a lite update when the adopted head changes: Go ``SetTKAHead``), and the re-signed node-key
signature on a rotation control asks for (Go ``doLogin``'s ``NodeKeySignature`` → ``tka.ResignNKS``)."""

from __future__ import annotations

import base64
import dataclasses
import json

import pytest
from test_login_machine import AUTH_KEY, Drive

import pytsnet.wire.control as lm
from pytsnet.wire.keys import NLPrivate, NodePrivate
from pytsnet.wire.tka import Key, KeyKind, NodeKeySignature, SigKind, State, TkaError, sign_direct
from pytsnet.wire.tka.authority import node_key_authorized_with_details

HEAD = "A" * 52


def _record(d: Drive) -> lm.NodeRecord:
    rec = lm.NodeRecord.from_blob(d.one(lm.PersistNode).blob)
    assert rec is not None
    return rec


def test_fresh_node_makes_and_persists_its_lock_key_and_sends_it() -> None:
    d = Drive()
    rec = _record(d)
    assert rec.nl is not None and rec.nl.public() == d.m.nl_key.public()
    assert "nlpriv:" in d.one(lm.PersistNode).blob.decode()  # Go's text form
    assert "nlpriv" not in repr(rec)  # a signing key: never in a repr
    d.send(lm.Connected(1))
    assert d.one(lm.SendRegister).request.NLKey == rec.nl.public()
    d.register_ok()
    assert _record(d).nl == rec.nl  # the logged-in record keeps it


def test_stored_lock_key_is_reused_and_an_old_record_gets_one() -> None:
    first = Drive()
    blob = first.one(lm.PersistNode).blob
    again = Drive(stored_node=blob)
    again.none(lm.PersistNode)  # nothing to complete
    assert again.m.nl_key.public() == first.m.nl_key.public()
    old = json.dumps({"NodePrivate": NodePrivate.generate().to_text(), "LoggedIn": True}).encode()
    d = Drive(stored_node=old)
    rec = _record(d)  # completed and stored at start (Go doLogin: "if persist.NetworkLockKey.IsZero()")
    assert rec.nl is not None and rec.logged_in and rec.node == d.m.node
    bad = json.dumps({"NodePrivate": NodePrivate.generate().to_text(),
                      "NetworkLockKey": "nlpriv:zz"}).encode()
    assert _record(Drive(stored_node=bad)).nl is not None  # unreadable: a new one, the node key kept


def test_lock_key_survives_rotation_and_logout() -> None:
    d = Drive()
    nl = d.m.nl_key.public()
    d.send(lm.Connected(1))
    d.register_with(NodeKeyExpired=True)
    assert _record(d).nl is not None and d.one(lm.SendRegister).request.NLKey == nl
    d.register_ok()
    d.send(lm.MapPollAnswered(d.m.stream, 200))
    d.frame()
    d.send(lm.LogoutAsked(1))
    d.send(lm.Connected(d.m.conn))
    assert d.one(lm.SendRegister).request.NLKey == nl  # Go's logout goes through doLogin too
    d.send(lm.RegisterAnswered(d.m.conn, 200, b"{}"))
    rec = _record(d)
    assert not rec.logged_in and rec.nl is not None and rec.nl.public() == nl


def test_tka_head_rides_in_map_requests_and_a_change_is_sent_at_once() -> None:
    d = Drive()
    d.send(lm.TkaHeadAdopted(1, HEAD))  # before any session: kept for the first poll
    d.one(lm.LiteUpdateFinished)
    d.send(lm.Connected(1))
    d.register_ok()
    assert d.one(lm.OpenMapPoll).request.TKAHead == HEAD
    d.send(lm.MapPollAnswered(d.m.stream, 200))
    d.frame()
    d.send(lm.TkaHeadAdopted(2, HEAD))  # unchanged: nothing to tell control
    assert not d.one(lm.LiteUpdateFinished).ok
    d.none(lm.SendLiteUpdate)
    d.send(lm.TkaHeadAdopted(3, "B" * 52))
    lite = d.one(lm.SendLiteUpdate)
    assert lite.token == 3 and lite.request.TKAHead == "B" * 52 and not lite.request.Stream
    d.send(lm.LiteUpdateAnswered(3, 200))
    assert d.one(lm.LiteUpdateFinished).ok


def test_rotation_with_control_supplied_signature_is_resigned() -> None:
    """Control answers with our old ``NodeKeySignature``: rotate the node key and register again with a
    rotation signature by our lock key, which a lock trusting the original signer accepts."""
    admin = NLPrivate.generate()
    d = Drive()
    old = d.m.node.public()
    old_sig = sign_direct(old, admin, wrapping_pubkey=d.m.nl_key.public().raw).serialize()
    d.send(lm.Connected(1))
    d.register_with(NodeKeySignature=base64.b64encode(old_sig).decode())
    rec = _record(d)
    assert rec.node.public() != old and rec.old_node == old
    req = d.one(lm.SendRegister).request
    assert req.NodeKey == rec.node.public() and req.OldNodeKey == old
    assert req.Auth is not None and req.Auth.AuthKey == AUTH_KEY
    assert req.NodeKeySignature
    nks = base64.b64decode(req.NodeKeySignature)
    state = State(last_aum_hash=None, disablement_secrets=(b"\x02" * 32,),
                  keys=(Key(kind=KeyKind.KEY25519, votes=1, public=admin.public().raw),))
    details = node_key_authorized_with_details(state, rec.node.public(), nks)
    assert details is not None and details.prev_node_keys == (old,)
    assert details.initial_sig.sig_kind == SigKind.DIRECT
    with pytest.raises(TkaError):  # it is for the new key only
        node_key_authorized_with_details(state, old, nks)
    d.register_ok()
    stored = _record(d)
    assert stored.logged_in and stored.old_node is None
    d.send(lm.MapPollAnswered(d.m.stream, 200))
    d.frame()
    assert d.status.state == "Running"


def test_unresignable_signature_registers_without_one() -> None:
    """Go logs "Failed re-signing node-key signature" and registers anyway (control decides)."""
    d = Drive()
    d.send(lm.Connected(1))
    d.register_with(NodeKeySignature=base64.b64encode(b"\xa1\x01\x09 not a signature").decode())
    assert d.one(lm.SendRegister).request.NodeKeySignature is None
    assert any("failed re-signing" in n.text for n in d.out if isinstance(n, lm.Note))
    # Asked to rotate again in the same login: not a loop, a retry with backoff.
    d.register_with(NodeKeySignature=base64.b64encode(b"x").decode())
    d.none(lm.SendRegister)
    d.one(lm.WakeAt)


def test_wrapped_auth_key_signs_the_node_key_by_credential() -> None:
    """Go ``NetworkLockWrapPreauthKey`` → ``doLogin``: control gets the plain auth key; the register
    carries a credential-rooted signature of our node key that the lock accepts."""
    admin = NLPrivate.generate()
    wrapping = NLPrivate.generate()
    cred = NodeKeySignature(sig_kind=SigKind.CREDENTIAL, key_id=admin.key_id(),
                            wrapping_pubkey=wrapping.public().raw)
    cred = dataclasses.replace(cred, signature=admin.sign(cred.sig_hash()))
    suffix = (base64.b64encode(cred.serialize()).decode().rstrip("=") + "-"
              + base64.b64encode(wrapping.raw).decode().rstrip("="))
    d = Drive(auth_key=f"{AUTH_KEY}--TL{suffix}")
    d.send(lm.Connected(1))
    req = d.one(lm.SendRegister).request
    assert req.Auth is not None and req.Auth.AuthKey == AUTH_KEY
    assert req.NodeKeySignature
    state = State(last_aum_hash=None, disablement_secrets=(b"\x02" * 32,),
                  keys=(Key(kind=KeyKind.KEY25519, votes=1, public=admin.public().raw),))
    nks = base64.b64decode(req.NodeKeySignature)
    details = node_key_authorized_with_details(state, d.m.node.public(), nks)
    assert details is not None and details.initial_sig is not None
    assert details.initial_sig.sig_kind == SigKind.CREDENTIAL
    # A server echoing the plain key back never puts it in our state or log.
    d.register_with(Error=f"bad key {AUTH_KEY}")
    assert AUTH_KEY not in d.status.error and "redacted" in d.status.error


def test_resign_after_an_expired_key_rotation_keeps_the_key_control_knows() -> None:
    """NodeKeyExpired → rotate → control answers the rotation with our old signature: the re-signed
    register names the key control knows as ``OldNodeKey`` (not the one just tried), as Go's second
    ``doLogin`` does from its unchanged persist."""
    admin = NLPrivate.generate()
    d = Drive()
    original = d.m.node.public()
    old_sig = sign_direct(original, admin, wrapping_pubkey=d.m.nl_key.public().raw).serialize()
    d.send(lm.Connected(1))
    d.register_with(NodeKeyExpired=True)
    tried = d.one(lm.SendRegister).request.NodeKey
    assert tried != original
    d.register_with(NodeKeySignature=base64.b64encode(old_sig).decode())
    req = d.one(lm.SendRegister).request
    assert req.OldNodeKey == original and req.NodeKey not in (original, tried)
    assert req.NodeKeySignature
    state = State(last_aum_hash=None, disablement_secrets=(b"\x02" * 32,),
                  keys=(Key(kind=KeyKind.KEY25519, votes=1, public=admin.public().raw),))
    details = node_key_authorized_with_details(state, req.NodeKey, base64.b64decode(req.NodeKeySignature))
    assert details is not None and details.prev_node_keys == (original,)
    d.register_ok()
    assert _record(d).logged_in


def test_signature_without_our_rotation_key_is_not_resigned() -> None:
    """Signed without a rotation key (``lock sign <node>`` alone): our lock key cannot carry it over, so
    the rotation registers unsigned (control decides) instead of sending a signature that cannot verify."""
    admin = NLPrivate.generate()
    d = Drive()
    old_sig = sign_direct(d.m.node.public(), admin).serialize()
    d.send(lm.Connected(1))
    d.register_with(NodeKeySignature=base64.b64encode(old_sig).decode())
    req = d.one(lm.SendRegister).request
    assert req.NodeKeySignature is None and req.OldNodeKey is not None
    assert any("not made with this node's lock key" in n.text for n in d.out if isinstance(n, lm.Note))
