"""Tailnet Lock as control keeps it: the tailnet's authority (its AUM chain), every node's NL key and
node-key signature, and the answers to the ``/machine/tka/*`` calls (Go ``ipn/ipnlocal/network-lock.go``
is the client; Tailscale's control is closed source, so this does what its docs and that client expect).

Control is not the lock's enforcer. It stores and relays; every node verifies. Control does NOT filter
peers by signature: maps carry every node with its ``KeySignature`` (base64 of the serialized
NodeKeySignature), the self node gets ``CAPABILITY_TAILNET_LOCK`` and ``TKAInfo {Head}``, and each node
drops the peers whose signature its own authority does not accept (Go ``tkaFilterNetmapLocked``; that is
what the end-to-end tests prove). What control does check, so it never relays garbage: an AUM is
adopted only if it verifies against the current authority (a bad one is refused with 4xx and nothing
is adopted), a submitted signature is stored only if the authority authorizes it, the genesis must be
a valid checkpoint signed by the requesting node's own NL key, and the lock is disabled only by a
secret whose KDF is one of the state's disablement values.

Calls, as Go's client makes them (GET with a JSON body over Noise; anything but 200 is an error whose
body the client shows):

* ``init/begin`` (``TKAInitBeginRequest``): validate the genesis, keep it pending, answer
  ``NeedSignatures`` (every node: ID, node key, ``RotationPubkey`` = its NL key from register).
* ``init/finish``: every listed node's signature must verify under the pending genesis; then the lock is
  on, the signatures stored.
* ``bootstrap``: ``GenesisAUM`` while enabled, ``DisablementSecret`` after a disable.
* ``sync/offer`` / ``sync/send``: Go's sync (offer heads/ancestors, send the AUMs the other lacks).
* ``sign``: store a NodeKeySignature (Direct or Rotation) as its node's ``KeySignature``.
* ``disable``: the right secret turns the lock off (maps then carry ``TKAInfo {Disabled: true}``).
* ``affected-sigs``: every stored signature whose authorizing key is ``KeyID``.

Node-key rotation (register with ``OldNodeKey``, no signature) of a signed node is answered with its
old signature in ``RegisterResponse.NodeKeySignature``, so the client re-signs (Go ``tka.ResignNKS``) and
registers again; that signature must verify (else a register ``Error``). A client that cannot re-sign
(its signature has no rotation key) gets the rotation on its second try, unsigned.

State persists in the store's ``meta`` table (key ``tka``): the adopted AUMs in adoption order, the
status, the disablement secret once used, and per node its NL key and signature. A corrupt record
stops the server from starting (:class:`TkaStoreError`) rather than forgetting the lock.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
from dataclasses import dataclass, field
from typing import Any, Literal

from pytsnet.localnet.store import Node, Store
from pytsnet.wire.errors import WireError
from pytsnet.wire.keys import KeyParseError, NLPublic, NodePublic
from pytsnet.wire.tailcfg.base import TailcfgParseError
from pytsnet.wire.tailcfg.tka import (
    TKABootstrapRequest,
    TKABootstrapResponse,
    TKADisableRequest,
    TKAInitBeginRequest,
    TKAInitBeginResponse,
    TKAInitFinishRequest,
    TKASignaturesUsingKeyRequest,
    TKASignaturesUsingKeyResponse,
    TKASignInfo,
    TKASubmitSignatureRequest,
    TKASyncOfferRequest,
    TKASyncOfferResponse,
    TKASyncSendRequest,
    TKASyncSendResponse,
)
from pytsnet.wire.tka import AUM, AUMKind, NodeKeySignature, aum_hash_text
from pytsnet.wire.tka.authority import Authority
from pytsnet.wire.tka.chonk import MemChonk
from pytsnet.wire.tka.errors import TkaError
from pytsnet.wire.tka.sync import sync_offer_from_text, sync_offer_to_text

__all__ = ["MAX_AUMS_PER_SEND", "META_KEY", "ControlTka", "TkaRefused", "TkaStatus", "TkaStoreError"]

log = logging.getLogger(__name__)
META_KEY = "tka"
MAX_AUMS_PER_SEND = 1024
"""Most AUMs one ``sync/send`` may carry (ours; the 1 MiB request cap bounds it too)."""
NODE_KEY_BINARY_PREFIX = b"np"
"""Go ``key.NodePublic.MarshalBinary``: the node key inside a NodeKeySignature is ``np`` + 32 bytes."""

Status = Literal["off", "enabled", "disabled"]


class TkaRefused(Exception):
    """A ``/machine/tka/*`` call refused: ``status`` (4xx) and a one-line reason (the response body)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class TkaStoreError(RuntimeError):
    """The persisted lock record does not load (corrupt, or its chain no longer verifies)."""


@dataclass(frozen=True)
class TkaStatus:
    """What control holds (``LocalTailnet.tka_state()``, for tests and the admin)."""

    status: Status
    head: str
    """The authority's head as AUM-hash text ("" when off)."""
    signatures: dict[int, bytes]
    """Node ID → its stored NodeKeySignature (serialized)."""
    nl_keys: dict[int, str]
    """Node ID → its NL key (``nlpub:…``) from its last register."""
    aums: int
    node_heads: dict[int, str] = field(default_factory=dict)
    """Node ID → the head it last reported in a sync call (where its own verified chain is)."""
    calls: dict[str, int] = field(default_factory=dict)
    """``/machine/tka/*`` call (e.g. ``sync/send``) → how many were answered 200."""

    @property
    def enabled(self) -> bool:
        return self.status == "enabled"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(text: str) -> bytes:
    return base64.b64decode(text, validate=True)


def signed_node_key(sig: NodeKeySignature) -> NodePublic:
    """The node key a Direct or Rotation signature signs (``Pubkey`` = Go's ``np`` + 32 bytes)."""
    pub = sig.pubkey or b""
    if len(pub) != len(NODE_KEY_BINARY_PREFIX) + 32 or not pub.startswith(NODE_KEY_BINARY_PREFIX):
        raise TkaRefused(400, "signature does not sign a node key")
    return NodePublic.from_raw(pub[len(NODE_KEY_BINARY_PREFIX):])


def _parse(model: type[Any], body: bytes) -> Any:
    try:
        return model.from_json(body)
    except TailcfgParseError as e:
        raise TkaRefused(400, str(e)[:300]) from None


@dataclass
class _Pending:
    """An init/begin waiting for its init/finish."""

    genesis: AUM
    by_node: int
    need: dict[int, str]
    """Node ID → the node key it had at begin (each must be signed at finish)."""


@dataclass
class ControlTka:
    """The tailnet's lock. Single-threaded (the control server's loop); every change is persisted at once
    and reported by the caller's ``notify`` (returned ``True`` from the mutating calls)."""

    store: Store
    status: Status = "off"
    chonk: MemChonk = field(default_factory=MemChonk)
    authority: Authority | None = None
    aums: list[bytes] = field(default_factory=list)
    """Serialized AUMs in adoption order (the genesis first): what is persisted and replayed."""
    disablement_secret: bytes = b""
    sigs: dict[int, bytes] = field(default_factory=dict)
    nl_keys: dict[int, bytes] = field(default_factory=dict)
    pending: _Pending | None = None
    node_heads: dict[int, str] = field(default_factory=dict)
    calls: dict[str, int] = field(default_factory=dict)
    resign_offered: set[tuple[int, str]] = field(default_factory=set)
    """(node ID, old node key) already answered with its old signature (a second try rotates unsigned)."""

    # -- persistence -------------------------------------------------------------------------------
    @classmethod
    def load(cls, store: Store, now: float) -> ControlTka:
        """The lock as last persisted (off if never used); ``TkaStoreError`` if the record is bad."""
        tka = cls(store)
        raw = store.get_meta(META_KEY)
        if not raw:
            return tka
        try:
            doc = json.loads(raw)
            tka.status = doc["status"]
            if tka.status not in ("off", "enabled", "disabled"):
                raise ValueError(f"status {tka.status!r}")
            tka.disablement_secret = _unb64(doc.get("disablement_secret", ""))
            tka.sigs = {int(k): _unb64(v) for k, v in doc.get("sigs", {}).items()}
            tka.nl_keys = {int(k): bytes.fromhex(v) for k, v in doc.get("nl_keys", {}).items()}
            aums = [_unb64(a) for a in doc.get("aums", [])]
        except (ValueError, KeyError, TypeError, AttributeError, binascii.Error) as e:
            raise TkaStoreError(f"tailnet lock record in the store is corrupt: {e}") from None
        if tka.status == "enabled":
            try:
                tka._adopt_genesis(AUM.unserialize(aums[0]), now)
                if aums[1:]:
                    tka._inform([AUM.unserialize(a) for a in aums[1:]], now)
            except (TkaError, WireError, IndexError) as e:
                raise TkaStoreError(f"tailnet lock chain in the store does not verify: {e}") from None
        return tka

    def _save(self) -> None:
        doc = {"status": self.status, "aums": [_b64(a) for a in self.aums],
               "disablement_secret": _b64(self.disablement_secret),
               "sigs": {str(k): _b64(v) for k, v in sorted(self.sigs.items())},
               "nl_keys": {str(k): v.hex() for k, v in sorted(self.nl_keys.items())}}
        self.store.set_meta(META_KEY, json.dumps(doc, separators=(",", ":")))

    # -- chain ---------------------------------------------------------------------------------------
    def _adopt_genesis(self, genesis: AUM, now: float) -> None:
        chonk = MemChonk()
        self.authority = Authority.bootstrap(chonk, genesis, now)
        self.chonk = chonk
        self.aums = [genesis.serialize()]

    def _inform(self, aums: list[AUM], now: float) -> bool:
        """Adopt verified ``aums`` (all or none); True if the head moved."""
        assert self.authority is not None
        before = self.authority.head()
        self.authority = self.authority.inform_idempotent(self.chonk, aums, now)
        known = {AUM.unserialize(a).hash() for a in self.aums}
        self.aums += [a.serialize() for a in aums if a.hash() not in known]
        return self.authority.head() != before

    def head_text(self) -> str:
        return aum_hash_text(self.authority.head()) if self.authority is not None else ""

    # -- what maps carry -----------------------------------------------------------------------------
    def tka_info(self) -> dict[str, Any] | None:
        """MapResponse ``TKAInfo``: ``{Head}`` while enabled, ``{Disabled: true}`` after a disable."""
        if self.status == "enabled":
            return {"Head": self.head_text()}
        if self.status == "disabled":
            return {"Disabled": True}
        return None

    def key_signatures(self) -> dict[int, str]:
        """Node ID → ``KeySignature`` (base64) while the lock is on."""
        if self.status != "enabled":
            return {}
        return {k: _b64(v) for k, v in self.sigs.items()}

    def state(self) -> TkaStatus:
        return TkaStatus(status=self.status, head=self.head_text(), signatures=dict(self.sigs),
                         nl_keys={k: NLPublic.from_raw(v).to_text() for k, v in self.nl_keys.items()},
                         aums=len(self.aums), node_heads=dict(self.node_heads), calls=dict(self.calls))

    # -- register ------------------------------------------------------------------------------------
    def register_check(self, req: dict[str, Any], machine: str, node_key: str, old_key: str,
                       existing: Node | None, prev: Node | None) -> tuple[dict[str, Any] | None, bytes]:
        """Before a register is handled: ``(answer, verified signature)``. ``answer`` short-circuits it:
        a register ``Error`` for a signature the authority refuses, or the old signature for a signed
        node rotating its key without one (Go's client re-signs it). ``existing``: the node with
        ``node_key``; ``prev``: this machine's node with ``old_key`` (a rotation)."""
        if self.status != "enabled" or self.authority is None:
            return None, b""
        raw = req.get("NodeKeySignature")
        if raw:
            try:
                sig = _unb64(str(raw))
                self.authority.node_key_authorized(NodePublic.from_text(node_key), sig)
            except (binascii.Error, ValueError, TkaError, WireError) as e:
                log.info("control: tka: register from %s: node-key signature refused: %s", machine[:20], e)
                return {"Error": f"tailnet lock: node-key signature refused: {str(e)[:200]}"}, b""
            return None, sig
        if existing is None and prev is not None and prev.id in self.sigs:
            offer = (prev.id, old_key)
            if offer not in self.resign_offered:
                self.resign_offered.add(offer)
                return {"NodeKeySignature": _b64(self.sigs[prev.id])}, b""
        return None, b""

    def register_done(self, node: Node, req: dict[str, Any], sig: bytes) -> bool:
        """After a successful register of ``node``: record its NL key and the verified signature (a
        rotated node without one loses its stale signature). True if anything changed."""
        changed = False
        nl = req.get("NLKey")
        if isinstance(nl, str) and nl:
            try:
                raw = NLPublic.from_text(nl).raw
            except KeyParseError:
                raw = b""
            if raw and self.nl_keys.get(node.id) != raw:
                self.nl_keys[node.id] = raw
                changed = True
        # offers whose rotation is done (the node no longer has that old key) are finished
        self.resign_offered = {o for o in self.resign_offered if o[0] != node.id or o[1] == node.node_key}
        if sig:
            self.sigs[node.id] = sig
            changed = True
        elif node.id in self.sigs and not self._signs(self.sigs[node.id], node.node_key):
            del self.sigs[node.id]
            changed = True
        if changed:
            self._save()
        return changed

    @staticmethod
    def _signs(sig: bytes, node_key: str) -> bool:
        try:
            return signed_node_key(NodeKeySignature.unserialize(sig)).to_text() == node_key
        except (TkaRefused, TkaError, WireError):
            return False

    def forget(self, node_id: int) -> None:
        """A deleted node: its key and signature go."""
        if self.sigs.pop(node_id, None) is not None or self.nl_keys.pop(node_id, None) is not None:
            self._save()

    # -- /machine/tka/* ------------------------------------------------------------------------------
    def init_begin(self, body: bytes, caller: Node, nodes: list[Node], now: float) -> bytes:
        req: TKAInitBeginRequest = _parse(TKAInitBeginRequest, body)
        if self.status == "enabled":
            raise TkaRefused(409, "tailnet lock is already enabled")
        if not req.GenesisAUM:
            raise TkaRefused(400, "no GenesisAUM")
        try:
            genesis = AUM.unserialize(req.GenesisAUM)
        except (TkaError, WireError) as e:
            raise TkaRefused(400, f"genesis AUM: {e}") from None
        if genesis.message_kind != AUMKind.CHECKPOINT or genesis.prev_aum_hash:
            raise TkaRefused(400, "genesis AUM must be a checkpoint with no parent")
        mine = self.nl_keys.get(caller.id)
        if mine is None or not any(s.key_id == mine for s in genesis.signatures):
            raise TkaRefused(403, "genesis AUM is not signed by this node's tailnet-lock key")
        try:
            Authority.bootstrap(MemChonk(), genesis, now)  # checkpoint state valid, signatures verify
        except (TkaError, WireError) as e:
            raise TkaRefused(400, f"genesis AUM refused: {e}") from None
        need = [TKASignInfo(NodeID=n.id, NodePublic=NodePublic.from_text(n.node_key),
                            RotationPubkey=self.nl_keys.get(n.id)) for n in nodes]
        self.pending = _Pending(genesis=genesis, by_node=caller.id, need={n.id: n.node_key for n in nodes})
        log.info("control: tka: init begun by node %d: %d node(s) to sign", caller.id, len(need))
        return TKAInitBeginResponse(NeedSignatures=need).to_json()

    def init_finish(self, body: bytes, caller: Node, nodes: list[Node], now: float) -> bytes:
        req: TKAInitFinishRequest = _parse(TKAInitFinishRequest, body)
        pending = self.pending
        if self.status == "enabled":
            raise TkaRefused(409, "tailnet lock is already enabled")
        if pending is None or pending.by_node != caller.id:
            raise TkaRefused(409, "no tailnet lock initialization in progress for this node")
        chonk = MemChonk()
        authority = Authority.bootstrap(chonk, pending.genesis, now)
        current = {n.id: n for n in nodes}
        sigs = dict(req.Signatures or {})
        unknown = sorted(set(sigs) - set(current))
        if unknown:
            raise TkaRefused(400, f"signatures for unknown node(s) {unknown[:10]}")
        missing = sorted(i for i in pending.need if i in current and i not in sigs)
        if missing:
            raise TkaRefused(400, f"no signature for node(s) {missing[:10]}")
        for node_id, sig in sigs.items():
            try:
                authority.node_key_authorized(NodePublic.from_text(current[node_id].node_key), sig)
            except (TkaError, WireError) as e:
                raise TkaRefused(403, f"signature for node {node_id} refused: {e}") from None
        self.authority, self.chonk = authority, chonk
        self.aums = [pending.genesis.serialize()]
        self.status, self.sigs, self.disablement_secret = "enabled", sigs, b""
        self.pending = None
        self.resign_offered.clear()
        self._save()
        log.info("control: tka: enabled by node %d, head %s, %d signature(s)", caller.id, self.head_text(),
                 len(sigs))
        return b"{}"

    def bootstrap(self, body: bytes) -> bytes:
        _parse(TKABootstrapRequest, body)
        if self.status == "enabled":
            return TKABootstrapResponse(GenesisAUM=self.aums[0]).to_json()
        if self.status == "disabled":
            return TKABootstrapResponse(DisablementSecret=self.disablement_secret).to_json()
        return TKABootstrapResponse().to_json()

    def _enabled(self) -> Authority:
        if self.status != "enabled" or self.authority is None:
            raise TkaRefused(409, "tailnet lock is not enabled")
        return self.authority

    def sync_offer(self, body: bytes, caller: Node) -> bytes:
        req: TKASyncOfferRequest = _parse(TKASyncOfferRequest, body)
        authority = self._enabled()
        self.node_heads[caller.id] = req.Head
        try:
            theirs = sync_offer_from_text(req.Head, list(req.Ancestors or []))
            missing = authority.missing_aums(self.chonk, theirs)
        except (TkaError, WireError) as e:
            raise TkaRefused(400, f"sync offer: {e}") from None
        head, ancestors = sync_offer_to_text(authority.sync_offer(self.chonk))
        return TKASyncOfferResponse(Head=head, Ancestors=list(ancestors),
                                    MissingAUMs=[a.serialize() for a in missing]).to_json()

    def sync_send(self, body: bytes, caller: Node, now: float) -> tuple[bytes, bool]:
        """Adopt the node's AUMs if every one verifies; ``(answer, head moved)``."""
        req: TKASyncSendRequest = _parse(TKASyncSendRequest, body)
        self._enabled()
        self.node_heads[caller.id] = req.Head
        raw = req.MissingAUMs or []
        if len(raw) > MAX_AUMS_PER_SEND:
            raise TkaRefused(400, f"more than {MAX_AUMS_PER_SEND} AUMs in one send")
        moved = False
        if raw:
            try:
                aums = [AUM.unserialize(a) for a in raw]
                moved = self._inform(aums, now)
            except (TkaError, WireError) as e:
                raise TkaRefused(403, f"AUMs refused: {e}") from None
            self._save()
            if moved:
                log.info("control: tka: head now %s (%d AUM(s) sent)", self.head_text(), len(aums))
        return TKASyncSendResponse(Head=self.head_text()).to_json(), moved

    def disable_check(self, body: bytes) -> tuple[Authority, bytes]:
        """The authority and the offered secret (the KDF runs off the loop: ``disable``)."""
        req: TKADisableRequest = _parse(TKADisableRequest, body)
        return self._enabled(), req.DisablementSecret or b""

    def disable(self, authority: Authority, secret: bytes, valid: bool) -> bytes:
        """Turn the lock off if ``valid`` (``authority.valid_disablement(secret)``, computed by the caller
        off the loop; refused if the authority changed meanwhile)."""
        if self.authority is not authority:
            raise TkaRefused(409, "the tailnet lock changed meanwhile: try again")
        if not valid:
            raise TkaRefused(403, "incorrect disablement secret")
        self.status, self.disablement_secret = "disabled", secret
        self.authority, self.chonk, self.aums, self.sigs = None, MemChonk(), [], {}
        self.pending = None
        self._save()
        log.info("control: tka: disabled with a valid disablement secret")
        return b"{}"

    def sign(self, body: bytes, node_by_key: dict[str, Node]) -> bytes:
        """Store a signature the authority authorizes as its node's ``KeySignature``."""
        req: TKASubmitSignatureRequest = _parse(TKASubmitSignatureRequest, body)
        authority = self._enabled()
        raw = req.Signature or b""
        try:
            sig = NodeKeySignature.unserialize(raw)
        except (TkaError, WireError) as e:
            raise TkaRefused(400, f"signature: {e}") from None
        key = signed_node_key(sig)
        node = node_by_key.get(key.to_text())
        if node is None:
            raise TkaRefused(404, "the signed node key is not a node of this tailnet")
        try:
            authority.node_key_authorized(key, raw)
        except (TkaError, WireError) as e:
            raise TkaRefused(403, f"signature refused: {e}") from None
        self.sigs[node.id] = raw
        self._save()
        log.info("control: tka: node %d signed", node.id)
        return b"{}"

    def affected_sigs(self, body: bytes, live: set[int]) -> bytes:
        req: TKASignaturesUsingKeyRequest = _parse(TKASignaturesUsingKeyRequest, body)
        self._enabled()
        key_id = req.KeyID or b""
        out = []
        for node_id, raw in sorted(self.sigs.items()):
            if node_id not in live:
                continue
            try:
                if NodeKeySignature.unserialize(raw).authorizing_key_id() == key_id:
                    out.append(raw)
            except (TkaError, WireError):
                continue
        return TKASignaturesUsingKeyResponse(Signatures=out).to_json()

