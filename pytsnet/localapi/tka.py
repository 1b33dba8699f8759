"""The LocalAPI's Tailnet Lock endpoints (Go ``ipn/localapi/tailnetlock.go``): ``tka/status``,
``tka/init``, ``tka/sign``, ``tka/modify``, ``tka/disable``, ``tka/log``.

Methods, permissions, status codes, error texts and JSON are Go's: ``status`` is
``ipnstate.NetworkLockStatus`` (``Head`` a 32-number array as Go marshals ``[32]byte``, keys as
``nlpub:`` text), ``init``/``modify`` take ``tka.Key`` JSON (``Kind``, ``Votes``, ``Public`` base64),
``disable`` the raw secret as the body, ``log`` ``[]ipnstate.NetworkLockUpdate``. Filtered peers carry
``ID`` and, beyond Go, the refusal ``Reason``. The recovery, deeplink, wrap-preauth-key and
affected-sigs endpoints are not served (404). Everything goes through the device's ``lock_*`` methods,
so the LocalAPI and the Python API cannot drift.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from typing import Any, Protocol

from pytsnet.errors import TailnetLockError
from pytsnet.localapi.server import LocalApi, LocalRequest, LocalResponse
from pytsnet.messages.tka import TkaLogEntry
from pytsnet.tka import LockKey, LockStatus
from pytsnet.wire.keys import KeyParseError, NLPublic
from pytsnet.wire.tka import aum_hash_from_text

__all__ = ["TkaBackend", "register", "status_json"]

MAX_SECRET = 1 << 20


class TkaBackend(Protocol):
    def lock_status(self, timeout: float = ...) -> LockStatus: ...
    def lock_log(self, limit: int = ..., timeout: float = ...) -> list[TkaLogEntry]: ...
    def lock_init_blocking(self, keys: Sequence[LockKey], disablement_secrets: Sequence[bytes | str] = ..., *,
                           support_disablement: bytes = ..., timeout: float = ...) -> str: ...
    def lock_sign_blocking(self, node_key: str, rotation_key: bytes | str | None = ..., *,
                           timeout: float = ...) -> None: ...
    def lock_modify_blocking(self, add: Sequence[LockKey] = ..., remove: Sequence[str] = ..., *,
                             timeout: float = ...) -> str: ...
    def lock_disable_blocking(self, secret: bytes | str, *, timeout: float = ...) -> None: ...


def _hash_array(text: str) -> list[int] | None:
    return list(aum_hash_from_text(text)) if text else None


def _nlpub(tlpub: str) -> str:
    return NLPublic.from_text(tlpub).to_text()


def status_json(st: LockStatus) -> dict[str, Any]:
    """Go ``ipnstate.NetworkLockStatus`` as ``json.Marshal`` writes it."""
    return {
        "Enabled": st.enabled,
        "Head": _hash_array(st.head) if st.enabled else None,
        "PublicKey": _nlpub(st.public_key) if st.public_key else "nlpub:" + "0" * 64,
        "NodeKey": st.node_key or None,
        "NodeKeySigned": st.node_key_signed,
        "TrustedKeys": [{"Key": _nlpub(k.key), "Metadata": dict(k.meta) or None, "Votes": k.votes}
                        for k in st.trusted_keys] if st.enabled else None,
        "FilteredPeers": [{"ID": f.node_id, "Reason": f.reason} for f in st.filtered_peers] or None,
        "StateID": st.state_id,
    }


def _body(req: LocalRequest) -> dict[str, Any]:
    try:
        doc = json.loads(req.body or b"null")
    except ValueError:
        raise _Bad("invalid JSON body") from None
    if not isinstance(doc, dict):
        raise _Bad("invalid JSON body")
    return doc


class _Bad(Exception):
    pass


def _b64(v: object) -> bytes:
    if v is None:
        return b""
    if not isinstance(v, str):
        raise _Bad("invalid JSON body")
    try:
        return base64.b64decode(v, validate=True)
    except (binascii.Error, ValueError):
        raise _Bad("invalid JSON body") from None


def _keys(v: object) -> list[LockKey]:
    """Go ``[]tka.Key`` JSON → ``(tlpub, votes)``; only 25519 keys (Kind 1) exist."""
    if v is None:
        return []
    if not isinstance(v, list):
        raise _Bad("invalid JSON body")
    out: list[LockKey] = []
    for k in v:
        if not isinstance(k, dict) or k.get("Kind", 1) != 1 or not isinstance(k.get("Votes", 1), int):
            raise _Bad("invalid JSON body")
        try:
            out.append((NLPublic(_b64(k.get("Public"))).cli_string(), int(k.get("Votes", 1))))
        except KeyParseError:
            raise _Bad("invalid JSON body") from None
    return out


def register(api: LocalApi, backend: TkaBackend) -> None:
    """Add the ``tka/*`` routes to ``api`` (status and log read, the rest write, as Go)."""

    def method(req: LocalRequest, want: str) -> LocalResponse | None:
        return None if req.method == want else LocalResponse.error(405, f"use {want}")

    def status(_api: LocalApi, req: LocalRequest) -> LocalResponse:
        return method(req, "GET") or LocalResponse.json(status_json(backend.lock_status()))

    def init(_api: LocalApi, req: LocalRequest) -> LocalResponse:
        if (bad := method(req, "POST")) is not None:
            return bad
        try:
            doc = _body(req)
            keys = _keys(doc.get("Keys"))
            values = doc.get("DisablementValues") or []
            if not isinstance(values, list):
                raise _Bad("invalid JSON body")
            texts: list[bytes | str] = ["disablement:" + _b64(x).hex() for x in values]
            support = _b64(doc.get("SupportDisablement"))
        except _Bad as e:
            return LocalResponse.error(400, str(e))
        try:
            backend.lock_init_blocking(keys, texts, support_disablement=support)
        except TailnetLockError as e:
            return LocalResponse.error(500, f"initialization failed: {e}")
        return LocalResponse.json(status_json(backend.lock_status()))

    def sign(_api: LocalApi, req: LocalRequest) -> LocalResponse:
        if (bad := method(req, "POST")) is not None:
            return bad
        try:
            doc = _body(req)
            node_key, rot = doc.get("NodeKey"), _b64(doc.get("RotationPublic"))
            if not isinstance(node_key, str):
                raise _Bad("invalid JSON body")
        except _Bad as e:
            return LocalResponse.error(400, str(e))
        try:
            backend.lock_sign_blocking(node_key, rot or None)
        except TailnetLockError as e:
            return LocalResponse.error(500, f"signing failed: {e}")
        return LocalResponse(200)

    def modify(_api: LocalApi, req: LocalRequest) -> LocalResponse:
        if (bad := method(req, "POST")) is not None:
            return bad
        try:
            doc = _body(req)
            add, remove = _keys(doc.get("AddKeys")), _keys(doc.get("RemoveKeys"))
        except _Bad as e:
            return LocalResponse.error(400, str(e))
        try:
            backend.lock_modify_blocking(add, [k if isinstance(k, str) else k[0] for k in remove])
        except TailnetLockError as e:
            return LocalResponse.error(500, f"network-lock modify failed: {e}")
        return LocalResponse(204)

    def disable(_api: LocalApi, req: LocalRequest) -> LocalResponse:
        if (bad := method(req, "POST")) is not None:
            return bad
        if len(req.body) > MAX_SECRET:
            return LocalResponse.error(400, "reading secret")
        try:
            backend.lock_disable_blocking(req.body)
        except TailnetLockError as e:
            return LocalResponse.error(400, f"network-lock disable failed: {e}")
        return LocalResponse(200)

    def log(_api: LocalApi, req: LocalRequest) -> LocalResponse:
        if (bad := method(req, "GET")) is not None:
            return bad
        try:
            limit = int(req.query.get("limit") or 50)
        except ValueError as e:
            return LocalResponse.error(400, f"parsing 'limit' parameter: {e}")
        try:
            entries = backend.lock_log(max(0, min(limit, 10_000)))
        except TailnetLockError as e:
            return LocalResponse.error(500, f"reading log failed: {e}")
        doc = [{"Hash": _hash_array(e.hash), "Change": e.change, "Raw": base64.b64encode(e.raw).decode()}
               for e in entries]
        return LocalResponse(200, (json.dumps(doc, indent="\t") + "\n").encode(), "application/json")

    api.route("tka/status", status, "read", "lock status")
    api.route("tka/init", init, "write", "lock init")
    api.route("tka/sign", sign, "write", "lock sign")
    api.route("tka/modify", modify, "write", "network-lock modify")
    api.route("tka/disable", disable, "write", "network-lock modify")
    api.route("tka/log", log, "read", "lock log")
