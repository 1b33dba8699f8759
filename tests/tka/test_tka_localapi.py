"""The LocalAPI's ``tka/*`` routes over a recording backend: Go's methods, permissions, error texts and
JSON shapes, and what each request hands the device (keys, disablement values, the raw secret)."""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from typing import Any

import pytest

from pytsnet.errors import TailnetLockDisablementRefused, TailnetLockNotTrusted
from pytsnet.localapi.server import PREFIX, LocalApi, LocalRequest, LocalResponse
from pytsnet.localapi.tka import register
from pytsnet.messages.dataplane import DataplaneInfo
from pytsnet.messages.peers import PeerInfo
from pytsnet.messages.tka import TkaKeyInfo, TkaLogEntry
from pytsnet.tka import FilteredPeer, LockKey, LockStatus
from pytsnet.wire.keys import NLPrivate
from pytsnet.wire.tka import aum_hash_text

KEY = NLPrivate.generate().public()
HEAD = aum_hash_text(bytes(range(32)))


class Backend:
    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    def lock_status(self, timeout: float = 5.0) -> LockStatus:
        return LockStatus(enabled=True, head=HEAD, public_key=KEY.cli_string(),
                          node_key="nodekey:" + "11" * 32, node_key_signed=True,
                          trusted_keys=(TkaKeyInfo(key=KEY.cli_string(), votes=2),),
                          filtered_peers=(FilteredPeer(7, "missing signature"),), state_id=9)

    def lock_log(self, limit: int = 50, timeout: float = 5.0) -> list[TkaLogEntry]:
        self.calls.append(("log", limit))
        return [TkaLogEntry(hash=HEAD, change="checkpoint", raw=b"\xa1")]

    def lock_init_blocking(self, keys: Sequence[LockKey], disablement_secrets: Sequence[bytes | str] = (), *,
                           support_disablement: bytes = b"", timeout: float = 120.0) -> str:
        self.calls.append(("init", (list(keys), list(disablement_secrets), support_disablement)))
        return HEAD

    def lock_sign_blocking(self, node_key: str, rotation_key: bytes | str | None = None, *,
                           timeout: float = 30.0) -> None:
        self.calls.append(("sign", (node_key, rotation_key)))
        raise TailnetLockNotTrusted("this node is not trusted by network lock")

    def lock_modify_blocking(self, add: Sequence[LockKey] = (), remove: Sequence[str] = (), *,
                             timeout: float = 30.0) -> str:
        self.calls.append(("modify", (list(add), list(remove))))
        return HEAD

    def lock_disable_blocking(self, secret: bytes | str, *, timeout: float = 30.0) -> None:
        self.calls.append(("disable", secret))
        raise TailnetLockDisablementRefused("incorrect disablement secret")

    # the status's VisiblePeers and self signature come from the peers and the netmap (21f)
    def peers(self, timeout: float = 5.0) -> list[PeerInfo]:
        return []

    def dataplane_info(self) -> DataplaneInfo:
        return DataplaneInfo()


@pytest.fixture
def rig() -> tuple[LocalApi, Backend]:
    b = Backend()
    api = LocalApi(object())  # type: ignore[arg-type]  # the tka routes use only their own backend
    register(api, b)
    return api, b


def call(api: LocalApi, method: str, name: str, body: bytes = b"", *, write: bool = True,
         query: dict[str, str] | None = None) -> LocalResponse:
    req = LocalRequest(method, PREFIX + name, query or {}, body)
    return api.handle(req, permit_read=True, permit_write=write)


def test_status_is_go_network_lock_status(rig: tuple[LocalApi, Backend]) -> None:
    api, _ = rig
    r = call(api, "GET", "tka/status", write=False)
    st = json.loads(r.body)
    assert r.status == 200 and st["Enabled"] and st["Head"] == list(range(32)) and st["StateID"] == 9
    assert st["PublicKey"] == KEY.to_text() and st["TrustedKeys"] == [{"Key": KEY.to_text(), "Metadata": None,
                                                                      "Votes": 2}]
    [filtered] = st["FilteredPeers"]  # Go's TKAPeer (the fake gives only the ID: zero name/key) + Reason
    assert filtered["ID"] == 7 and filtered["Reason"] == "missing signature"
    assert call(api, "POST", "tka/status").status == 405


def test_writes_need_write_access_and_post(rig: tuple[LocalApi, Backend]) -> None:
    api, b = rig
    for name in ("tka/init", "tka/sign", "tka/modify", "tka/disable"):
        r = call(api, "POST", name, b"{}", write=False)
        assert r.status == 403 and b"access denied" in r.body, name
        assert call(api, "GET", name).status == 405
    assert b.calls == []


def test_init_passes_keys_and_values(rig: tuple[LocalApi, Backend]) -> None:
    api, b = rig
    value = bytes(32)
    body = {"Keys": [{"Kind": 1, "Votes": 3, "Public": base64.b64encode(KEY.raw).decode()}],
            "DisablementValues": [base64.b64encode(value).decode()]}
    r = call(api, "POST", "tka/init", json.dumps(body).encode())
    assert r.status == 200 and json.loads(r.body)["Enabled"]
    assert b.calls == [("init", ([(KEY.cli_string(), 3, {})], ["disablement:" + value.hex()], b""))]
    for bad in (b"[", b"[]", json.dumps({"Keys": [{"Kind": 2}]}).encode(),
                json.dumps({"Keys": [{"Public": "!!"}]}).encode()):
        assert call(api, "POST", "tka/init", bad).status == 400, bad


def test_failures_carry_go_texts(rig: tuple[LocalApi, Backend]) -> None:
    api, b = rig
    r = call(api, "POST", "tka/sign", json.dumps({"NodeKey": "nodekey:" + "22" * 32}).encode())
    assert r.status == 500 and r.body.startswith(b"signing failed: this node is not trusted")
    r = call(api, "POST", "tka/disable", b"\x01" * 32)
    assert r.status == 400 and r.body == b"network-lock disable failed: incorrect disablement secret\n"
    assert ("disable", b"\x01" * 32) in b.calls


def test_modify_and_log(rig: tuple[LocalApi, Backend]) -> None:
    api, b = rig
    k = {"Kind": 1, "Votes": 1, "Public": base64.b64encode(KEY.raw).decode()}
    body = json.dumps({"AddKeys": [k], "RemoveKeys": [k]}).encode()
    assert call(api, "POST", "tka/modify", body).status == 204
    assert ("modify", ([(KEY.cli_string(), 1, {})], [KEY.cli_string()])) in b.calls
    r = call(api, "GET", "tka/log", query={"limit": "3"}, write=False)
    assert json.loads(r.body) == [{"Hash": list(range(32)), "Change": "checkpoint", "Raw": "oQ=="}]
    assert ("log", 3) in b.calls
    assert call(api, "GET", "tka/log", query={"limit": "x"}).status == 400
