"""Tailnet Lock's peer filter, pure: Go's ``TestTKAFilterNetmap`` and ``TestRotationTracker``
(``ipn/ipnlocal/network-lock_test.go``, v1.90.9) ported with real signatures made by ``wire/tka``,
plus the self-lockout check and the ``UnsignedPeerAPIOnly`` carve-out."""

from __future__ import annotations

import dataclasses

import pytest

from pytsnet.actors.peers.tka_filter import (
    MISSING_SIGNATURE,
    ROTATED,
    HeldAuthority,
    RotationTracker,
    filter_peers,
    self_locked_out,
)
from pytsnet.messages.peers import PeerInfo
from pytsnet.messages.tka import TkaAuthorityUpdate
from pytsnet.wire.keys import NLPrivate, NodePrivate, NodePublic
from pytsnet.wire.tka import (
    Key,
    KeyKind,
    NodeKeySignature,
    RotationDetails,
    SigKind,
    State,
    resign_nks,
    sign_by_credential,
    sign_direct,
)


def _peer(node_id: int, key: NodePublic, sig: bytes = b"", **kw: object) -> PeerInfo:
    return PeerInfo(node_id=node_id, stable_id=f"n{node_id}", node_key=key.to_text(), key_signature=sig, **kw)


def _credential_sig(signer: NLPrivate, wrapping: NLPrivate) -> NodeKeySignature:
    """What Go's ``NetworkLockWrapPreauthKey`` puts in a wrapped auth key: a SigCredential over the
    wrapping key, signed by a trusted lock key."""
    unsigned = NodeKeySignature(sig_kind=SigKind.CREDENTIAL, key_id=signer.key_id(),
                                wrapping_pubkey=wrapping.public().raw)
    return dataclasses.replace(unsigned, signature=signer.sign(unsigned.sig_hash()))


def _by_credential(wrapping: NLPrivate, cred: NodeKeySignature, node: NodePublic) -> bytes:
    """Go ``tka.SignByCredential``: a rotation signature for ``node`` nesting the credential."""
    return sign_by_credential(wrapping.raw, cred, node)


@pytest.fixture(scope="module")
def lock() -> tuple[NLPrivate, HeldAuthority]:
    nl = NLPrivate.generate()
    state = State(last_aum_hash=None, disablement_secrets=(bytes([0xA5]) * 32,),
                  keys=(Key(kind=KeyKind.KEY25519, votes=2, public=nl.public().raw),))
    return nl, HeldAuthority(state=state, head="h")


def _ids(peers: list[PeerInfo]) -> list[int]:
    return [p.node_id for p in peers]


def test_tka_filter_netmap(lock: tuple[NLPrivate, HeldAuthority]) -> None:
    """Go's TestTKAFilterNetmap, all three netmaps."""
    nl, held = lock
    n1, n2, n3, n4, n5 = (NodePrivate.generate().public() for _ in range(5))
    n1_good = sign_direct(n1, nl).serialize()
    n4_sig = sign_direct(n4, nl)
    bad = bytearray(n4_sig.signature or b"")
    bad[3] = bad[4] = 42  # mess up the signature
    n4_bad = dataclasses.replace(n4_sig, signature=bytes(bad)).serialize()
    n5nl = NLPrivate.generate()
    n5_initial = sign_direct(n5, nl, wrapping_pubkey=n5nl.public().raw).serialize()

    def resign(current: bytes) -> tuple[NodePublic, bytes]:
        nk = NodePrivate.generate().public()
        return nk, resign_nks(n5nl, nk, current)

    n5_rotated, n5_rotated_sig = resign(n5_initial)
    # Two nodes joined with the same wrapped auth key: both valid (credential chains are not unique).
    wrapping = NLPrivate.generate()
    cred = _credential_sig(nl, wrapping)
    n60, n61 = NodePrivate.generate().public(), NodePrivate.generate().public()
    n60_sig, n61_sig = _by_credential(wrapping, cred, n60), _by_credential(wrapping, cred, n61)

    me = _peer(99, NodePrivate.generate().public())
    peers = [_peer(1, n1, n1_good), _peer(2, n2), _peer(3, n3, n1_good), _peer(4, n4, n4_bad),
             _peer(50, n5, n5_initial), _peer(51, n5_rotated, n5_rotated_sig),
             _peer(60, n60, n60_sig), _peer(61, n61, n61_sig)]
    v = filter_peers(peers, me, held)
    assert _ids(v.admitted) == [1, 51, 60, 61]
    assert v.rejected[2] == MISSING_SIGNATURE
    assert v.rejected[3].startswith("failed signature check: ")
    assert v.rejected[4].startswith("failed signature check: ")
    assert v.rejected[50] == ROTATED
    assert any("dropping peer 50(n50) due to key rotation" in n for n in v.notes)
    assert any("dropping peer 2(n2) due to missing signature" in n for n in v.notes)

    # Two more signatures with n5's wrapping key, from the same chain: both filtered out.
    n7, n7_sig = resign(n5_rotated_sig)
    n8, n8_sig = resign(n5_rotated_sig)
    peers = [_peer(1, n1, n1_good), _peer(2, n2), _peer(3, n3, n1_good), _peer(4, n4, n4_bad),
             _peer(50, n5, n5_initial), _peer(51, n5_rotated, n5_rotated_sig),
             _peer(7, n7, n7_sig), _peer(8, n8, n8_sig)]
    v = filter_peers(peers, me, held)
    assert _ids(v.admitted) == [1]
    assert v.rejected[7] == v.rejected[8] == v.rejected[51] == ROTATED
    assert any("equally valid rotation signatures" in n for n in v.notes)

    # Repeated rotation (the signature is trimmed, Go keeps 15 previous keys) still works.
    for _ in range(100):
        n5_rotated, n5_rotated_sig = resign(n5_rotated_sig)
    n51, n51_sig = resign(n5_rotated_sig)
    v = filter_peers([_peer(1, n1, n1_good), _peer(5, n5_rotated, n5_rotated_sig), _peer(51, n51, n51_sig)],
                     me, held)
    assert _ids(v.admitted) == [1, 51]
    assert v.rejected == {5: ROTATED}


def _nk(idx: int) -> NodePublic:
    return NodePublic.from_raw(bytes([idx]) + bytes(31))


def _rd(kind: SigKind, wrapping: bytes, *prev: NodePublic) -> RotationDetails:
    initial = NodeKeySignature(sig_kind=kind, pubkey=None, key_id=None, signature=None, nested=None,
                               wrapping_pubkey=wrapping)
    return RotationDetails(initial_sig=initial, prev_node_keys=tuple(prev))


N1, N2, N3, N4, N5 = (_nk(i) for i in range(1, 6))
PK1, PK2, PK3 = b"\x01", b"\x02", b"\x03"
D = SigKind.DIRECT


@pytest.mark.parametrize(("adds", "want"), [
    pytest.param([], set(), id="empty"),
    pytest.param([(N1, _rd(D, PK1, N2))], {N2}, id="single_prev_key"),
    pytest.param([(N1, _rd(D, PK1, N2)), (N3, _rd(D, PK2, N4)), (N2, _rd(D, PK1, N3, N4))], {N2, N3, N4},
                 id="several_prev_keys"),
    pytest.param([(N2, _rd(D, PK3, N1)), (N3, _rd(D, PK3, N1, N2)), (N4, _rd(D, PK3, N1, N2, N3)),
                  (N5, _rd(D, PK3, N4))], {N1, N2, N3, N4}, id="several_per_pubkey_latest_wins"),
    pytest.param([(N2, _rd(D, PK3, N1)), (N3, _rd(D, PK3, N1, N2)), (N4, _rd(D, PK3, N1, N2)),
                  (N5, _rd(D, PK3, N1, N2))], {N1, N2, N3, N4, N5},
                 id="several_per_pubkey_same_chain_length_all_rejected"),
    pytest.param([(N2, _rd(D, PK3, N1)), (N3, _rd(D, PK3, N1, N2)), (N4, _rd(D, PK3, N1, N2)),
                  (N5, _rd(D, PK3, N1, N2, N3))], {N1, N2, N3, N4}, id="several_per_pubkey_longest_wins"),
    # Not in Go's table: chains rooted in a credential may share a wrapping key (one reusable auth key).
    pytest.param([(N2, _rd(SigKind.CREDENTIAL, PK3, N1)), (N3, _rd(SigKind.CREDENTIAL, PK3, N4))], {N1, N4},
                 id="credential_chains_not_unique"),
])
def test_rotation_tracker(adds: list[tuple[NodePublic, RotationDetails]], want: set[NodePublic]) -> None:
    """Go's TestRotationTracker."""
    r = RotationTracker()
    for np, d in adds:
        r.add_rotation_details(np, d)
    assert r.obsolete_keys() == want


def test_self_lockout(lock: tuple[NLPrivate, HeldAuthority]) -> None:
    nl, held = lock
    me = NodePrivate.generate().public()
    assert self_locked_out(_peer(9, me), held.state)  # unsigned
    assert self_locked_out(_peer(9, me, sign_direct(NodePrivate.generate().public(), nl).serialize()),
                           held.state)  # someone else's signature
    untrusted = NLPrivate.generate()
    assert self_locked_out(_peer(9, me, sign_direct(me, untrusted).serialize()), held.state)
    assert not self_locked_out(_peer(9, me, sign_direct(me, nl).serialize()), held.state)
    assert filter_peers([], _peer(9, me), held).locked_out


def test_unsigned_peer_api_only_is_admitted_without_a_signature_check(
        lock: tuple[NLPrivate, HeldAuthority]) -> None:
    """Go's ``tkaFilterNetmapLocked`` skips such peers: not subject to the lock, whatever they carry
    (none, a good or a garbage signature); the same peers without the flag are checked as always."""
    nl, held = lock
    k = NodePrivate.generate().public()
    peers = [_peer(3, k, unsigned_peer_api_only=True),
             _peer(4, k, sign_direct(k, nl).serialize(), unsigned_peer_api_only=True),
             _peer(5, k, b"\x00garbage", unsigned_peer_api_only=True),
             _peer(6, k), _peer(7, k, b"\x00garbage")]
    v = filter_peers(peers, _peer(9, NodePrivate.generate().public()), held)
    assert [p.node_id for p in v.admitted] == [3, 4, 5]
    assert v.rejected[6] == MISSING_SIGNATURE and v.rejected[7].startswith("failed signature check")
    assert not any("peer 3(" in n or "peer 4(" in n or "peer 5(" in n for n in v.notes)


def test_held_authority_from_update(lock: tuple[NLPrivate, HeldAuthority]) -> None:
    _, held = lock
    assert HeldAuthority.from_update(TkaAuthorityUpdate(enabled=False)) is None
    got = HeldAuthority.from_update(TkaAuthorityUpdate(enabled=True, head="H2", state=held.state.to_cbor(),
                                                       ancestors=["H1"]))
    assert got is not None and got.state == held.state
    assert got.covers("H2") and got.covers("H1") and not got.covers("H3") and not got.covers("")


def test_entries_sharing_a_node_id_are_judged_each_on_its_own(lock: tuple[NLPrivate, HeldAuthority]) -> None:
    """Go keys its drops by position in the peer list. Keyed by node ID, a stale entry with a key that a
    rotation made obsolete passed when a newer entry with the same ID followed it (r1 finding)."""
    nl, held = lock
    node_nl = NLPrivate.generate()
    old, new = NodePrivate.generate().public(), NodePrivate.generate().public()
    old_sig = sign_direct(old, nl, wrapping_pubkey=node_nl.public().raw).serialize()
    new_sig = resign_nks(node_nl, new, old_sig)
    stale, current = _peer(7, old, old_sig), _peer(7, new, new_sig)
    verdict = filter_peers([stale, current], _peer(1, NodePrivate.generate().public()), held)
    assert [p.node_key for p in verdict.admitted] == [new.to_text()], "the rotated-out key is dropped"


def test_signature_cache_answers_a_repeated_netmap_without_re_verifying(
        lock: tuple[NLPrivate, HeldAuthority], monkeypatch: pytest.MonkeyPatch) -> None:
    """Every netmap repeats every signature: under one authority head each is verified once, a bad
    one too; the same verdicts come back; a new head (a new State) verifies again; the cache is bounded."""
    from pytsnet.actors.peers import tka_filter

    nl, held = lock
    good = [NodePrivate.generate().public() for _ in range(3)]
    bad_key = NodePrivate.generate().public()
    peers = [_peer(i + 1, k, sign_direct(k, nl).serialize()) for i, k in enumerate(good)]
    peers.append(_peer(9, bad_key, b"\x01garbage"))
    self_node = peers[0]
    calls: list[str] = []
    real = tka_filter.node_key_authorized_with_details

    def counted(state: State, key: NodePublic, sig: bytes) -> RotationDetails | None:
        calls.append(key.to_text())
        return real(state, key, sig)

    monkeypatch.setattr(tka_filter, "node_key_authorized_with_details", counted)
    cache = tka_filter.SignatureCache(limit=16)
    first = filter_peers(peers, self_node, held, cache)
    assert len(calls) == 4 and _ids(first.admitted) == [1, 2, 3] and 9 in first.rejected
    again = filter_peers(peers, self_node, held, cache)
    assert len(calls) == 4  # nothing re-verified
    assert _ids(again.admitted) == [1, 2, 3] and again.rejected == first.rejected  # the same words
    newer = dataclasses.replace(held, head="h2")
    filter_peers(peers, self_node, newer, cache)
    assert len(calls) == 8  # another authority: verified afresh
    small = tka_filter.SignatureCache(limit=2)
    filter_peers(peers, self_node, held, small)
    assert len(small) == 2
