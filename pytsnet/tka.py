"""Tailnet Lock on the facade (Go ``tailscale lock …`` / ``LocalBackend.NetworkLock*``): the types and
conversions behind ``ActorDevice.lock_*`` (device.py stays thin).

The node's TKA actor (``actors/tka``) does the work; this module turns what an app passes (``tlpub:``
keys, ``disablement-secret:`` text or raw bytes) into its messages, its typed answers into
``TailnetLock*`` errors, and its status plus the PeerTracker's refusals into ``LockStatus``.
Disablement *values* (Go ``DisablementKDF``: Argon2i of the secret) are made here, so a secret never
reaches control at init: only its KDF is in the genesis AUM.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from pytsnet.actors.peers.tka_filter import LOCKED_OUT
from pytsnet.errors import (
    TailnetLockDisablementRefused,
    TailnetLockError,
    TailnetLockNotEnabled,
    TailnetLockNotTrusted,
)
from pytsnet.messages.peers import PeerTable
from pytsnet.messages.tka import (
    TkaAffectedSigsAnswer,
    TkaAnswer,
    TkaKeyInfo,
    TkaLogAnswer,
    TkaLogEntry,
    TkaStatus,
)
from pytsnet.wire.errors import WireError
from pytsnet.wire.keys import KeyParseError, NLPublic
from pytsnet.wire.tka import NodeKeySignature, TkaError, disablement_kdf
from pytsnet.wire.tka.sig import node_public_from_binary

__all__ = [
    "LOCK_REASONS",
    "REMOVE_SELF_WHILE_RESIGNING",
    "LockKey",
    "LockStatus",
    "disablement_secret",
    "disablement_values",
    "key_id",
    "key_info",
    "key_infos",
    "key_meta",
    "lock_status",
    "log_entries",
    "raise_for",
    "resign_targets",
    "rotation_public",
    "tailscale_ips",
]

LockKey = str | tuple[str, int] | tuple[str, int, Mapping[str, str]]
"""A key to trust: ``tlpub:…`` (or ``nlpub:…``) text, or (text, votes), or (text, votes, meta) with
Go's free-form key ``Meta`` (e.g. ``{"purpose": "pre-auth key", …}`` as ``lock sign tskey-auth-…``)."""

MAX_META = 32
"""At most this many ``Meta`` entries per key, each name and value at most ``MAX_META_TEXT`` characters
(Go sets no bound; the AUM carrying them goes to every node, so bad input is refused here)."""
MAX_META_TEXT = 256

SECRET_PREFIX = "disablement-secret:"
VALUE_PREFIX = "disablement:"

LOCK_REASONS = ("missing signature", "failed signature check", "key rotation", "tailnet lock")
"""How the PeerTracker's refusals for Tailnet Lock begin (Go's ``Network lock is dropping peer …``
reasons)."""


@dataclass(frozen=True)
class FilteredPeer:
    """A peer the lock keeps out (Go ``ipnstate.TKAPeer`` of ``FilteredPeers``) and why: its name,
    stable ID, Tailscale IPs (single-address prefixes, as Go's ``tkaStateFromPeer``), node key and
    its ``KeySignature`` (raw; ``signature`` decodes it)."""

    node_id: int
    reason: str
    name: str = ""
    stable_id: str = ""
    tailscale_ips: tuple[str, ...] = ()
    node_key: str = ""
    key_signature: bytes = b""

    @property
    def signature(self) -> NodeKeySignature | None:
        """The decoded ``KeySignature`` (None: none, or undecodable — why it was refused)."""
        if not self.key_signature:
            return None
        try:
            return NodeKeySignature.unserialize(self.key_signature)
        except TkaError:
            return None


def tailscale_ips(addresses: Iterable[str]) -> tuple[str, ...]:
    """Go ``tkaStateFromPeer``: the single-IP prefixes among a node's addresses, as bare IPs."""
    return tuple(a.split("/")[0] for a in addresses if a.endswith(("/32", "/128")) or "/" not in a)


@dataclass(frozen=True)
class LockStatus:
    """Go ``ipnstate.NetworkLockStatus``: ``enabled``, the chain ``head`` (base32), our ``public_key``
    (``tlpub:``), whether our node key is signed, the trusted keys, the peers the lock filters out, and
    ``locked_out`` (our own key not authorized: no connectivity until someone signs it)."""

    enabled: bool
    head: str = ""
    public_key: str = ""
    node_key: str = ""
    node_key_signed: bool = False
    trusted_keys: tuple[TkaKeyInfo, ...] = ()
    filtered_peers: tuple[FilteredPeer, ...] = ()
    locked_out: bool = False
    state_id: int = 0
    syncing: bool = False
    last_error: str = ""
    warnings: tuple[str, ...] = field(default=())




def key_info(k: LockKey) -> TkaKeyInfo:
    meta: Mapping[str, str] = {}
    if isinstance(k, str):
        text, votes = k, 1
    elif len(k) == 2:
        text, votes = k
    else:
        text, votes, meta = k
    try:
        pub = NLPublic.from_text(text)
    except KeyParseError as e:
        raise TailnetLockError(f"key {text[:80]!r}: {e} (want tlpub:… as dev.lock_key() prints)") from None
    return TkaKeyInfo(key=pub.cli_string(), votes=votes, meta=key_meta(meta))


def key_meta(meta: Mapping[str, str] | None) -> tuple[tuple[str, str], ...]:
    """Go ``tka.Key.Meta`` as the messages carry it (sorted pairs); ``TailnetLockError`` if not text
    or beyond ``MAX_META``/``MAX_META_TEXT``."""
    if not meta:
        return ()
    if len(meta) > MAX_META:
        raise TailnetLockError(f"key metadata: {len(meta)} entries (at most {MAX_META})")
    for name, value in meta.items():
        if not isinstance(name, str) or not isinstance(value, str):
            raise TailnetLockError("key metadata: names and values must be text")
        if len(name) > MAX_META_TEXT or len(value) > MAX_META_TEXT:
            raise TailnetLockError(f"key metadata {name[:40]!r}: longer than {MAX_META_TEXT} characters")
    return tuple(sorted(meta.items()))


def key_infos(keys: Iterable[LockKey]) -> tuple[TkaKeyInfo, ...]:
    return tuple(key_info(k) for k in keys)


def disablement_secret(secret: bytes | str) -> bytes:
    """Raw secret bytes from bytes or ``disablement-secret:HEX`` text (Go CLI's form)."""
    if isinstance(secret, bytes):
        return secret
    if not secret.startswith(SECRET_PREFIX):
        raise TailnetLockError("a disablement secret is bytes or 'disablement-secret:<hex>' text")
    try:
        return bytes.fromhex(secret[len(SECRET_PREFIX):])
    except ValueError:
        raise TailnetLockError("disablement secret: bad hex after 'disablement-secret:'") from None


def disablement_values(secrets: Sequence[bytes | str]) -> tuple[bytes, ...]:
    """The public values the genesis carries: the KDF of each secret, or a ``disablement:HEX`` value as is."""
    out = []
    for s in secrets:
        if isinstance(s, str) and s.startswith(VALUE_PREFIX):
            try:
                out.append(bytes.fromhex(s[len(VALUE_PREFIX):]))
            except ValueError:
                raise TailnetLockError("disablement value: bad hex after 'disablement:'") from None
        else:
            out.append(disablement_kdf(disablement_secret(s)))
    return tuple(out)


def rotation_public(key: bytes | str | None) -> bytes:
    if key is None:
        return b""
    if isinstance(key, bytes):
        if len(key) != 32:
            raise TailnetLockError("rotation key: want a 32-byte Ed25519 public key")
        return key
    try:
        return NLPublic.from_text(key).raw
    except KeyParseError as e:
        raise TailnetLockError(f"rotation key {key[:80]!r}: {e}") from None


REMOVE_SELF_WHILE_RESIGNING = ("cannot remove local trusted signing key while resigning; run command on a "
                               "different node or with --re-sign=false")
"""Go ``runNetworkLockRemove``'s refusal: re-signing uses our key, so it cannot be the one removed."""


def key_id(key: str | bytes) -> bytes:
    """A trusted key's ID (Go ``tka.Key.ID``: its 32-byte Ed25519 public key) from ``tlpub:`` text or
    the ID itself."""
    if isinstance(key, bytes):
        if len(key) != 32:
            raise TailnetLockError("key ID: want the 32 bytes of a trusted key")
        return key
    return NLPublic.from_text(key_info(key).key).raw


def resign_targets(sigs: Iterable[bytes]) -> list[tuple[str, bytes]]:
    """Go ``runNetworkLockRemove``'s loop: for each (already verified) signature, the node key it
    signs and its rotation key (``UnverifiedWrappingPublic``, b"" if none) to sign again."""
    out = []
    for raw in sigs:
        try:
            sig = NodeKeySignature.unserialize(raw)
            node_key = node_public_from_binary(sig.pubkey)
        except (TkaError, WireError) as e:
            raise TailnetLockError(f"failed decoding signature: {e}") from None
        out.append((node_key.to_text(), sig.wrapping_public() or b""))
    return out


def raise_for(ans: TkaAnswer | TkaLogAnswer | TkaAffectedSigsAnswer) -> None:
    """The typed error for a failed answer (none for success)."""
    if not ans.failure:
        return
    if ans.failure == "not_enabled":
        raise TailnetLockNotEnabled(ans.error)
    if ans.failure == "not_trusted":
        raise TailnetLockNotTrusted(ans.error)
    if ans.failure == "bad_secret":
        raise TailnetLockDisablementRefused(ans.error)
    raise TailnetLockError(ans.error)


def lock_status(st: TkaStatus, table: PeerTable | None, locked_out: bool) -> LockStatus:
    filtered = () if table is None else tuple(
        FilteredPeer(r.node_id, r.reason, name=r.name, stable_id=r.stable_id,
                     tailscale_ips=tailscale_ips(r.addresses), node_key=r.node_key,
                     key_signature=r.key_signature)
        for r in table.rejected if r.reason.startswith(LOCK_REASONS))
    out = locked_out or (st.enabled and bool(st.node_key) and not st.node_key_signed)
    return LockStatus(enabled=st.enabled, head=st.head, public_key=st.public_key, node_key=st.node_key,
                      node_key_signed=st.node_key_signed, trusted_keys=st.trusted_keys,
                      filtered_peers=filtered if st.enabled else (), locked_out=out and st.enabled,
                      state_id=st.state_id, syncing=st.syncing, last_error=st.last_error,
                      warnings=(LOCKED_OUT,) if out and st.enabled else ())


def log_entries(ans: TkaLogAnswer) -> list[TkaLogEntry]:
    raise_for(ans)
    return list(ans.entries)
