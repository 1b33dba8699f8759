"""The LocalAPI's ``tka/*`` endpoints (Go ipn/localapi/tailnetlock.go at v1.90.9): Tailnet Lock for
``pytsnet lock …`` and any Go ``local.Client``.

Paths, methods, request and answer bodies, status codes and error texts are Go's: ``tka/status``
(GET, ``ipnstate.NetworkLockStatus``), ``tka/init`` (POST ``{Keys, DisablementValues,
SupportDisablement}``, answers the status), ``tka/sign`` (POST ``{NodeKey, RotationPublic}``),
``tka/modify`` (POST ``{AddKeys, RemoveKeys}``, 204), ``tka/disable`` (POST, the raw secret as body),
``tka/log`` (GET ``?limit=``, ``[]NetworkLockUpdate``), ``tka/wrap-preauth-key`` (POST ``{TSKey,
TKAKey}``, the wrapped key as text: pure signing, done here). The work is the device's ``lock_*``
(the TKA actor); this module only translates. Go answers a failure with its wrapped error text
(``signing failed: …``); so do we, with the typed error's text.

``tka/affected-sigs`` (POST, the raw key ID as body, the signatures resting on it as base64 JSON,
each checked against our authority as Go's ``NetworkLockAffectedSigs``; 21i) serves ``lock remove``'s
re-signing. Not served (501 "… is not supported by pytsnet", never a fake answer):
``force-local-disable``, ``verify-deeplink`` and the recovery AUM endpoints
(``generate-``/``cosign-``/``submit-recovery-aum``).

Permissions: Go checks ``PermitRead`` for status and verify-deeplink and ``PermitWrite`` for the rest,
except ``log`` and ``affected-sigs``, which Go serves to anyone who reaches the LocalAPI; here those
two need read access (stricter, never looser). A disablement secret in a request body is never
logged or echoed.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from collections.abc import Sequence
from typing import Any, Protocol, TypeVar

from pydantic import BaseModel, ValidationError

from pytsnet.errors import TailnetLockError
from pytsnet.localapi.server import MAX_BODY, Handler, LocalApi, LocalRequest, LocalResponse
from pytsnet.localapi.types import (
    GoModel,
    NetworkLockStatus,
    NetworkLockUpdate,
    NodeKeySignatureJSON,
    TKAKey,
    TkaKeyJSON,
    TKAPeer,
)
from pytsnet.messages.dataplane import DataplaneInfo
from pytsnet.messages.peers import PeerInfo
from pytsnet.messages.tka import TkaLogEntry
from pytsnet.tka import FilteredPeer, LockKey, LockStatus, tailscale_ips
from pytsnet.wire.keys import KeyParseError, NLPrivate, NLPublic, NodePublic
from pytsnet.wire.tka import KeyKind, NodeKeySignature, SigKind, TkaError, aum_hash_from_text

__all__ = ["NOT_SUPPORTED", "TkaBackend", "network_lock_status", "nks_json", "register", "wrap_auth_key"]

NOT_SUPPORTED = ("force-local-disable", "verify-deeplink", "generate-recovery-aum",
                 "cosign-recovery-aum", "submit-recovery-aum")
"""Go's ``tka/*`` endpoints this node answers 501."""

AFFECTED_MAX_BODY = 2048
"""Go's ``MaxBytesReader`` for ``affected-sigs`` (a key ID)."""
WRAP_MAX_BODY = 12 * 1024
"""Go's ``MaxBytesReader`` for ``wrap-preauth-key``."""
MAX_LOG = 10_000
"""At most this many log entries per request (Go has no bound; each is a store read here)."""
LOCK_TIMEOUT = 120.0
"""How long one lock operation may take (init signs every node and waits for control)."""

_ZERO_NL = "nlpub:" + "00" * 32
_ZERO_NODE = "nodekey:" + "00" * 32


class TkaBackend(Protocol):
    """The device as the lock endpoints see it (``ActorDevice`` is one): its ``lock_*`` API (the
    blocking twins: a handler runs on its request's thread) and, for the status, its peers and netmap."""

    def lock_status(self, timeout: float = ...) -> LockStatus: ...
    def lock_log(self, limit: int = ..., timeout: float = ...) -> list[TkaLogEntry]: ...
    def lock_init_blocking(self, keys: Sequence[LockKey], disablement_secrets: Sequence[bytes | str] = ..., *,
                           support_disablement: bytes = ..., timeout: float = ...) -> str: ...
    def lock_sign_blocking(self, node_key: str, rotation_key: bytes | str | None = ..., *,
                           timeout: float = ...) -> None: ...
    def lock_modify_blocking(self, add: Sequence[LockKey] = ..., remove: Sequence[str] = ..., *,
                             timeout: float = ...) -> str: ...
    def lock_disable_blocking(self, secret: bytes | str, *, timeout: float = ...) -> None: ...
    def lock_affected_sigs_blocking(self, key: str | bytes, *, timeout: float = ...) -> list[bytes]: ...
    def peers(self, timeout: float = ...) -> list[PeerInfo]: ...
    def dataplane_info(self) -> DataplaneInfo: ...


# -- Go JSON of the lock's values ---------------------------------------------------------------------
def _b64(b: bytes | None) -> str | None:
    return None if b is None else base64.b64encode(b).decode()


def _unb64(s: str | None) -> bytes:
    return b"" if s is None else base64.b64decode(s, validate=True)


def nks_json(sig: NodeKeySignature | None) -> NodeKeySignatureJSON:
    """Go's ``tka.NodeKeySignature`` in JSON; None as its zero value (what Go shows for a missing or
    undecodable signature)."""
    if sig is None:
        return NodeKeySignatureJSON(SigKind=0, Pubkey=None, KeyID=None, Signature=None, Nested=None,
                                    WrappingPubkey=None)
    return NodeKeySignatureJSON(SigKind=int(sig.sig_kind), Pubkey=_b64(sig.pubkey), KeyID=_b64(sig.key_id),
                                Signature=_b64(sig.signature),
                                Nested=nks_json(sig.nested) if sig.nested else None,
                                WrappingPubkey=_b64(sig.wrapping_pubkey))


def _decode_nks(raw: bytes) -> NodeKeySignature | None:
    if not raw:
        return None
    try:
        return NodeKeySignature.unserialize(raw)
    except TkaError:
        return None


def _nlpub_text(cli_text: str) -> str:
    """``tlpub:…`` (how the facade names keys) → ``nlpub:…`` (Go's JSON, ``MarshalText``)."""
    return NLPublic.from_text(cli_text).to_text() if cli_text else _ZERO_NL


def _tka_peer(p: PeerInfo) -> TKAPeer:
    """Go ``tkaStateFromPeer``: the peer's single-IP addresses and its decoded signature."""
    return TKAPeer(Name=p.name, ID=p.node_id, StableID=p.stable_id,
                   TailscaleIPs=list(tailscale_ips(p.addresses)), NodeKey=p.node_key or _ZERO_NODE,
                   NodeKeySignature=nks_json(_decode_nks(p.key_signature)))


def _filtered_peer(f: FilteredPeer) -> TKAPeer:
    """Go ``tkaStateFromPeer`` for a peer the lock filtered (plus, beyond Go, the refusal's ``Reason``)."""
    return TKAPeer(Name=f.name, ID=f.node_id, StableID=f.stable_id, TailscaleIPs=list(f.tailscale_ips),
                   NodeKey=f.node_key or _ZERO_NODE, NodeKeySignature=nks_json(f.signature), Reason=f.reason)


def network_lock_status(b: TkaBackend) -> NetworkLockStatus:
    """Go ``LocalBackend.NetworkLockStatus`` from the device's ``lock_status()`` and netmap.

    ``FilteredPeers`` are Go's ``TKAPeer`` of each peer the lock refused (as the netmap named it) and,
    beyond Go, the refusal's ``Reason``."""
    st = b.lock_status()
    info = b.dataplane_info()
    nm = info.netmap
    node_key = st.node_key or info.state.node_key or None
    public = _nlpub_text(st.public_key)
    if not st.enabled:
        return NetworkLockStatus(Enabled=False, Head=None, PublicKey=public, NodeKey=node_key,
                                 NodeKeySigned=False, NodeKeySignature=None, TrustedKeys=None,
                                 VisiblePeers=None, FilteredPeers=None, StateID=0)
    head = list(aum_hash_from_text(st.head)) if st.head else None
    self_sig = nks_json(_decode_nks(nm.self_node.key_signature) if nm is not None else None)
    keys = [TKAKey(Key=_nlpub_text(k.key), Metadata=dict(k.meta) or None, Votes=k.votes)
            for k in st.trusted_keys]
    visible = [_tka_peer(p) for p in b.peers()] if nm is not None else None
    filtered = [_filtered_peer(f) for f in st.filtered_peers]
    return NetworkLockStatus(Enabled=True, Head=head, PublicKey=public, NodeKey=node_key,
                             NodeKeySigned=st.node_key_signed, NodeKeySignature=self_sig, TrustedKeys=keys,
                             VisiblePeers=visible, FilteredPeers=filtered, StateID=st.state_id)


def _update(e: TkaLogEntry) -> NetworkLockUpdate:
    return NetworkLockUpdate(Hash=list(aum_hash_from_text(e.hash)), Change=e.change, Raw=_b64(e.raw))


def wrap_auth_key(auth_key: str, signer: NLPrivate, wrapping_seed: bytes) -> str:
    """Go ``NetworkLockWrapPreauthKey``: a Credential signature by ``signer`` over a fresh Ed25519 key
    (from ``wrapping_seed``), appended to the auth key as ``--TL<sig>-<private>`` (raw std base64; the
    private key in Go's 64-byte form). A node registering with it signs its own node key with that
    private key (``sign_by_credential``)."""
    wrapping = NLPrivate.from_ed25519(wrapping_seed)
    sig = NodeKeySignature(sig_kind=SigKind.CREDENTIAL, key_id=signer.key_id(),
                           wrapping_pubkey=wrapping.public().raw)
    sig = NodeKeySignature(sig_kind=sig.sig_kind, key_id=sig.key_id, wrapping_pubkey=sig.wrapping_pubkey,
                           signature=signer.sign(sig.sig_hash()))

    def enc(b: bytes) -> str:
        return base64.b64encode(b).decode().rstrip("=")

    return f"{auth_key}--TL{enc(sig.serialize())}-{enc(wrapping.raw)}"


# -- requests -----------------------------------------------------------------------------------------
class _InitRequest(GoModel):
    Keys: list[TkaKeyJSON] | None = None
    DisablementValues: list[str] | None = None
    SupportDisablement: str | None = None


class _SignRequest(GoModel):
    NodeKey: str
    RotationPublic: str | None = None


class _ModifyRequest(GoModel):
    AddKeys: list[TkaKeyJSON] | None = None
    RemoveKeys: list[TkaKeyJSON] | None = None


class _WrapRequest(GoModel):
    TSKey: str
    TKAKey: str


_M = TypeVar("_M", bound=BaseModel)


class _BadBody(ValueError):
    pass


def _parse(model: type[_M], body: bytes) -> _M:
    """Go ``json.NewDecoder(r.Body).Decode``: an empty body is an error (EOF)."""
    try:
        return model.model_validate_json(body)
    except ValidationError:
        raise _BadBody from None


def _key_text(k: TkaKeyJSON) -> str:
    """A 25519 ``tka.Key``'s public key as the facade takes it (``tlpub:…``); TailnetLockError for
    another kind."""
    if k.Kind != KeyKind.KEY25519:
        raise TailnetLockError(f"key kind {k.Kind} is not supported (25519 only)")
    try:
        pub = NLPublic(_unb64(k.Public))
    except (KeyParseError, binascii.Error, ValueError):
        raise TailnetLockError("key: want a 32-byte Ed25519 public key") from None
    return pub.cli_string()


def _lock_key(k: TkaKeyJSON) -> LockKey:
    """A ``tka.Key`` to trust, with its votes and Go's ``Meta`` (21i: carried into the AddKey AUM)."""
    return (_key_text(k), k.Votes, dict(k.Meta or {}))


def _err(e: Exception) -> str:
    return str(e) or type(e).__name__


# -- handlers -----------------------------------------------------------------------------------------
def register(api: LocalApi, backend: TkaBackend, *, timeout: float = LOCK_TIMEOUT) -> None:
    """Add ``/localapi/v0/tka/*`` to ``api``."""

    def want(req: LocalRequest, method: str) -> LocalResponse | None:
        return None if req.method == method else LocalResponse.error(405, f"use {method}")

    def status_json(st: NetworkLockStatus) -> LocalResponse:
        visible_without_reason = {"VisiblePeers": {"__all__": {"Reason"}}}
        return LocalResponse.json(st.model_dump(mode="json", exclude=visible_without_reason))

    def status(_api: LocalApi, req: LocalRequest) -> LocalResponse:
        return want(req, "GET") or status_json(network_lock_status(backend))

    def init(_api: LocalApi, req: LocalRequest) -> LocalResponse:
        if bad := want(req, "POST"):
            return bad
        try:
            r = _parse(_InitRequest, req.body)
            values = [_unb64(v) for v in r.DisablementValues or []]
            support = _unb64(r.SupportDisablement)
        except (_BadBody, binascii.Error, ValueError):
            return LocalResponse.error(400, "invalid JSON body")
        try:
            keys: list[LockKey] = [_lock_key(k) for k in r.Keys or []]
            backend.lock_init_blocking(keys, [f"disablement:{v.hex()}" for v in values],
                                       support_disablement=support, timeout=timeout)
        except Exception as e:  # the typed TailnetLock*/DeviceClosed/AskTimeout: Go's 500 with the text
            return LocalResponse.error(500, "initialization failed: " + _err(e))
        return status_json(network_lock_status(backend))

    def sign(_api: LocalApi, req: LocalRequest) -> LocalResponse:
        if bad := want(req, "POST"):
            return bad
        try:
            r = _parse(_SignRequest, req.body)
            node_key = NodePublic.from_text(r.NodeKey).to_text()
            rotation = _unb64(r.RotationPublic)
        except (_BadBody, KeyParseError, binascii.Error, ValueError):
            return LocalResponse.error(400, "invalid JSON body")
        try:
            backend.lock_sign_blocking(node_key, rotation or None, timeout=timeout)
        except Exception as e:
            return LocalResponse.error(500, "signing failed: " + _err(e))
        return LocalResponse(200)

    def modify(_api: LocalApi, req: LocalRequest) -> LocalResponse:
        if bad := want(req, "POST"):
            return bad
        try:
            r = _parse(_ModifyRequest, req.body)
        except _BadBody:
            return LocalResponse.error(400, "invalid JSON body")
        try:
            adds: list[LockKey] = [_lock_key(k) for k in r.AddKeys or []]
            removes = [_key_text(k) for k in r.RemoveKeys or []]
            backend.lock_modify_blocking(adds, removes, timeout=timeout)  # one batch of AUMs, as Go
        except Exception as e:
            return LocalResponse.error(500, "network-lock modify failed: " + _err(e))
        return LocalResponse(204)

    def disable(_api: LocalApi, req: LocalRequest) -> LocalResponse:
        if bad := want(req, "POST"):
            return bad
        secret = req.body[:MAX_BODY]
        try:
            backend.lock_disable_blocking(secret, timeout=timeout)
        except Exception as e:
            return LocalResponse.error(400, "network-lock disable failed: " + _err(e))
        return LocalResponse(200)

    def log(_api: LocalApi, req: LocalRequest) -> LocalResponse:
        if bad := want(req, "GET"):
            return bad
        limit = 50
        if text := req.query.get("limit", ""):
            try:
                limit = int(text, 10)
            except ValueError:
                return LocalResponse.error(400, f"parsing 'limit' parameter: strconv.Atoi: parsing {text!r}: "
                                                "invalid syntax")
        try:
            entries = backend.lock_log(max(0, min(limit, MAX_LOG)))
        except Exception as e:
            return LocalResponse.error(500, "reading log failed: " + _err(e))
        body: Any = [_update(e).model_dump(mode="json") for e in entries] if entries else None
        return LocalResponse(200, (json.dumps(body, indent="\t")).encode(), "application/json")

    def wrap(_api: LocalApi, req: LocalRequest) -> LocalResponse:
        if bad := want(req, "POST"):
            return bad
        if len(req.body) > WRAP_MAX_BODY:
            return LocalResponse.error(400, "invalid JSON body")
        try:
            r = _parse(_WrapRequest, req.body)
            priv = NLPrivate.from_text(r.TKAKey)
        except (_BadBody, KeyParseError):
            return LocalResponse.error(400, "invalid JSON body")
        try:
            enabled = backend.lock_status().enabled
        except Exception as e:
            return LocalResponse.error(500, _err(e))
        if not enabled:
            return LocalResponse.error(500, "network-lock is not active")
        return LocalResponse(200, wrap_auth_key(r.TSKey, priv, os.urandom(32)).encode())

    def affected_sigs(_api: LocalApi, req: LocalRequest) -> LocalResponse:
        """Go ``serveTKAAffectedSigs``: the raw key ID as body (at most 2048 bytes), the signatures as an
        indented JSON list of base64 (``[]tkatype.MarshaledSignature``)."""
        if bad := want(req, "POST"):
            return bad
        if len(req.body) > AFFECTED_MAX_BODY:
            return LocalResponse.error(400, "reading body")
        try:
            sigs = backend.lock_affected_sigs_blocking(req.body, timeout=timeout)
        except Exception as e:  # the typed TailnetLock*/DeviceClosed/AskTimeout: Go's 500 with the text
            return LocalResponse.error(500, _err(e))
        body = json.dumps([_b64(x) for x in sigs], indent="\t").encode()
        return LocalResponse(200, body, "application/json")

    def unsupported(name: str, method: str, json_body: bool) -> Handler:
        def serve(_api: LocalApi, req: LocalRequest) -> LocalResponse:
            if bad := want(req, method):
                return bad
            if json_body:
                try:
                    json.loads(req.body)
                except ValueError:
                    return LocalResponse.error(400, "invalid JSON body")
            return LocalResponse.error(501, f"tka/{name} is not supported by pytsnet")
        return serve

    api.route("tka/status", status, "read", "lock status")
    api.route("tka/init", init, "write", "lock init")
    api.route("tka/sign", sign, "write", "lock sign")
    api.route("tka/modify", modify, "write", "network-lock modify")
    api.route("tka/disable", disable, "write", "network-lock modify")
    api.route("tka/log", log, "read", "lock log")
    api.route("tka/wrap-preauth-key", wrap, "write", "network-lock modify")
    api.route("tka/affected-sigs", affected_sigs, "read", "lock affected-sigs")
    api.route("tka/force-local-disable", unsupported("force-local-disable", "POST", True), "write",
              "network-lock modify")
    api.route("tka/verify-deeplink", unsupported("verify-deeplink", "POST", True), "read",
              "signing deeplink verification")
    for name in ("generate-recovery-aum", "cosign-recovery-aum", "submit-recovery-aum"):
        api.route(f"tka/{name}", unsupported(name, "POST", name == "generate-recovery-aum"), "write",
                  "recovery AUM")
