"""Tailnet Lock at the trust chokepoint: which peers a verified TKA ``State`` lets into the table.

Pure logic (no actor, no clock), so Go's tests port one for one. Mirrors Go's
``ipnlocal.tkaFilterNetmapLocked`` and ``rotationTracker`` (``ipn/ipnlocal/network-lock.go``, v1.90.9):

- a peer without a ``KeySignature`` is dropped ("missing signature");
- a peer whose signature does not verify against the State is dropped ("failed signature check: …",
  21b's ``node_key_authorized_with_details``: the signature must be by a trusted key, for this node key,
  rotation signatures checked down their chain);
- rotation: every rotation signature makes the node keys of its chain (``prev_node_keys``) obsolete;
  of several chains rooted in one ``SigDirect`` signature with the same wrapping key (a cloned node),
  the one with the most previous keys is kept and the others dropped, and all of them on a tie
  ("key rotation");
- our own key is checked too: unauthorized → locked out (Go's ``healthmsg.LockedOut``), peers are
  still admitted (they are what we could reach once signed; they will not accept us meanwhile).

``UnsignedPeerAPIOnly`` (21h): as Go, such a peer is not subject to the lock: admitted without a
signature check (a signature it carries is not looked at, nor is it part of rotation tracking). Its
confinement is elsewhere, as in Go: the engine lets it open TCP to our peerAPI port and nothing else,
and drops the whole packet filter (deny all new inbound, Go's ``invalid-packet-filter`` health) if
control's filter would let its AllowedIPs in (``actors/wgengine/filter_rules.py``); peerAPI handlers
that Go refuses it are refused (``actors/peerapi``). The confinement holds with the lock off too (Go
checks the filter whatever the lock's state); only the signature check is the lock's.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from pytsnet.messages.peers import PeerInfo
from pytsnet.messages.tka import TkaAuthorityUpdate
from pytsnet.wire.keys import KeyParseError, NodePublic
from pytsnet.wire.tka import RotationDetails, SigKind, State, TkaError, TkaVerifyError
from pytsnet.wire.tka.authority import node_key_authorized_with_details

__all__ = ["LOCKED_OUT", "MISSING_SIGNATURE", "NO_AUTHORITY", "ROTATED",
           "HeldAuthority", "LockVerdict", "RotationTracker", "SignatureCache", "filter_peers"]

LOCKED_OUT = ("this node is locked out; it will not have connectivity until it is signed. "
              "For more info, see https://tailscale.com/s/locked-out")
"""Go's ``healthmsg.LockedOut``, word for word (shown as the status Health line)."""

MISSING_SIGNATURE = "missing signature"
FAILED_CHECK = "failed signature check"
ROTATED = "key rotation"
NO_AUTHORITY = "tailnet lock: no verified authority"


@dataclass(frozen=True)
class HeldAuthority:
    """A verified authority as the tracker holds it: the State to check signatures with, its head, and
    the heads it has passed through (a netmap naming one of them is older than this authority)."""

    state: State
    head: str
    ancestors: frozenset[str] = frozenset()

    @classmethod
    def from_update(cls, msg: TkaAuthorityUpdate) -> HeldAuthority | None:
        """None when the update says the lock is off. Raises ``TkaError`` for a State that does not
        parse (the tracker then holds no authority: fail closed)."""
        if not msg.enabled:
            return None
        return cls(State.from_cbor(msg.state), msg.head, frozenset(msg.ancestors))

    def covers(self, netmap_head: str) -> bool:
        """This authority is at least as new as a netmap naming ``netmap_head``."""
        return bool(netmap_head) and (netmap_head == self.head or netmap_head in self.ancestors)


@dataclass(frozen=True)
class LockVerdict:
    """The lock's word on one netmap: peers it admits (in order), why the others are refused, and
    whether our own key is authorized."""

    admitted: list[PeerInfo]
    rejected: dict[int, str]
    locked_out: bool
    notes: list[str] = field(default_factory=list)
    """Go's log lines ("Network lock is dropping peer …"), for the tracker's log."""


@dataclass
class RotationTracker:
    """Go's ``rotationTracker``: node keys made obsolete by key rotation."""

    obsolete: set[NodePublic] = field(default_factory=set)
    by_wrapping_key: dict[bytes, list[tuple[NodePublic, int]]] = field(default_factory=dict)
    logf: Callable[[str], None] = field(default=lambda _s: None)

    def add_rotation_details(self, np: NodePublic, d: RotationDetails) -> None:
        self.obsolete.update(d.prev_node_keys)
        if d.initial_sig is None or d.initial_sig.sig_kind != SigKind.DIRECT:
            # Chains from a SigCredential may share a wrapping key (one reusable auth key, many nodes).
            return
        wp = bytes(d.initial_sig.wrapping_pubkey or b"")
        self.by_wrapping_key.setdefault(wp, []).append((np, len(d.prev_node_keys)))

    def obsolete_keys(self) -> set[NodePublic]:
        for chains in self.by_wrapping_key.values():
            live = [c for c in chains if c[0] not in self.obsolete]
            if not live:
                continue
            live.sort(key=lambda c: -c[1])  # stable: most previous keys first
            if len(live) >= 2 and live[0][1] == live[1][1]:
                self.logf(f"at least two nodes ({live[0][0]} and {live[1][0]}) have equally valid rotation "
                          "signatures with the same wrapping pubkey, rejecting")
                self.obsolete.update(np for np, _ in live)
            else:
                self.obsolete.update(np for np, _ in live[1:])
        return self.obsolete


class SignatureCache:
    """Verdicts of ``node_key_authorized_with_details`` by (authority head, node key, signature).

    Why: every netmap repeats every peer's signature, and an Ed25519 verification (two down a rotation
    chain) is the lock's cost per peer per netmap; the verdict depends only on the authority's State —
    named by its head, a hash of the chain — the node key and the signature bytes, so a repeat is
    answered from here. Failures are kept too (their message), so a bad signature repeated by every
    netmap is not re-verified either. Bounded: the least recently used entry goes past ``limit``.
    """

    def __init__(self, limit: int = 4096) -> None:
        self.limit = limit
        self._entries: OrderedDict[tuple[str, str, bytes], RotationDetails | str | None] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    def verify(self, authority: HeldAuthority, node_key: str, sig: bytes) -> RotationDetails | None:
        """As ``node_key_authorized_with_details`` (raising ``TkaError``/``KeyParseError`` alike)."""
        k = (authority.head, node_key, sig)
        if k in self._entries:
            self._entries.move_to_end(k)
            self.hits += 1
            got = self._entries[k]
            if isinstance(got, str):
                raise TkaVerifyError(got)
            return got
        self.misses += 1
        try:
            details = node_key_authorized_with_details(authority.state, NodePublic.from_text(node_key), sig)
        except (TkaError, KeyParseError) as e:
            self._store(k, str(e))
            raise
        self._store(k, details)
        return details

    def _store(self, k: tuple[str, str, bytes], v: RotationDetails | str | None) -> None:
        self._entries[k] = v
        while len(self._entries) > self.limit:
            self._entries.popitem(last=False)


def filter_peers(peers: Sequence[PeerInfo], self_node: PeerInfo, authority: HeldAuthority,
                 cache: SignatureCache | None = None) -> LockVerdict:
    """Go's ``tkaFilterNetmapLocked`` over ``peers`` with a verified authority (order preserved);
    ``cache`` answers signatures an earlier netmap had under the same authority."""
    verify = (cache if cache is not None else SignatureCache(limit=len(peers) + 1)).verify
    notes: list[str] = []
    tracker = RotationTracker(logf=notes.append)
    rejected: dict[int, str] = {}
    dropped: set[int] = set()
    """Positions in ``peers`` refused (Go keys its toDelete by index: two entries sharing a node ID are
    judged each on its own)."""
    keys: dict[int, NodePublic] = {}
    """Position → the verified node key (absent: an unsigned peerAPI-only peer, not rotation-tracked)."""
    for i, p in enumerate(peers):
        if p.unsigned_peer_api_only:  # not subject to the lock (Go); confined to our peerAPI by the engine
            continue
        if not p.key_signature:
            notes.append(f"Network lock is dropping peer {p.node_id}({p.stable_id}) due to missing signature")
            rejected[p.node_id] = MISSING_SIGNATURE
            dropped.add(i)
            continue
        try:
            details = verify(authority, p.node_key, p.key_signature)
            key = NodePublic.from_text(p.node_key)
        except (TkaError, KeyParseError) as e:
            notes.append(f"Network lock is dropping peer {p.node_id}({p.stable_id}) due to failed "
                         f"signature check: {e}")
            rejected[p.node_id] = f"{FAILED_CHECK}: {e}"
            dropped.add(i)
            continue
        keys[i] = key
        if details is not None:
            tracker.add_rotation_details(key, details)
    obsolete = tracker.obsolete_keys()
    admitted: list[PeerInfo] = []
    for i, p in enumerate(peers):
        if i in dropped:
            continue
        tracked = keys.get(i)
        if tracked is not None and tracked in obsolete:
            notes.append(f"Network lock is dropping peer {p.node_id}({p.stable_id}) due to key rotation")
            rejected[p.node_id] = ROTATED
            continue
        admitted.append(p)
    try:
        verify(authority, self_node.node_key, self_node.key_signature)
        locked_out = False
    except (TkaError, KeyParseError):  # our own key is not authorized: Go's ``LockedOut`` health warning
        locked_out = True
    return LockVerdict(admitted, rejected, locked_out, notes)


def self_locked_out(self_node: PeerInfo, state: State) -> bool:
    """Our own key is not authorized by the lock (Go sets the ``LockedOut`` health warning)."""
    try:
        key = NodePublic.from_text(self_node.node_key)
        node_key_authorized_with_details(state, key, self_node.key_signature)
    except (TkaError, KeyParseError):
        return True
    return False


def refuse_all(peers: Iterable[PeerInfo], reason: str = NO_AUTHORITY) -> dict[int, str]:
    """Every peer refused for ``reason`` (the lock is on but no verified authority covers the netmap)."""
    return {p.node_id: reason for p in peers}
