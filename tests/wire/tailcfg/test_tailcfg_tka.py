"""tailcfg/tka.go JSON: what Go's encoding/json writes for each struct (no omitempty except where the
struct says, nil slices/[]byte as null, []byte as std base64, map[NodeID] keys as sorted strings)."""

from __future__ import annotations

import json

import pytest

from pytsnet.wire.keys import NodePrivate
from pytsnet.wire.tailcfg import TailcfgParseError
from pytsnet.wire.tailcfg.tka import (
    TKABootstrapRequest,
    TKABootstrapResponse,
    TKADisableRequest,
    TKADisableResponse,
    TKAInfo,
    TKAInitBeginRequest,
    TKAInitBeginResponse,
    TKAInitFinishRequest,
    TKAInitFinishResponse,
    TKASignaturesUsingKeyRequest,
    TKASignaturesUsingKeyResponse,
    TKASignInfo,
    TKASubmitSignatureRequest,
    TKASubmitSignatureResponse,
    TKASyncOfferRequest,
    TKASyncOfferResponse,
    TKASyncSendRequest,
    TKASyncSendResponse,
)

NK = NodePrivate.generate().public()
HEAD = "GY6MTRAXPPUS5ZKNZ5IJYELYCMEEMYQTLUMOPB5Y5MA4HCLFDJ3A"


def _same(model: type, go: dict[str, object]) -> None:
    """Go's JSON parses, and we write it back key for key, in Go's field order."""
    parsed = model.from_json(json.dumps(go))  # type: ignore[attr-defined]
    out = parsed.to_json()
    assert json.loads(out) == go
    assert list(json.loads(out)) == list(go)


def test_init_begin_request_and_response() -> None:
    _same(TKAInitBeginRequest, {"Version": 130, "NodeKey": NK.to_text(), "GenesisAUM": "pQEFAvYDpA=="})
    _same(TKAInitBeginResponse, {"NeedSignatures": [
        {"NodeID": 7, "NodePublic": NK.to_text(), "RotationPubkey": "AQID"},
        {"NodeID": 9, "NodePublic": NK.to_text(), "RotationPubkey": None}]})
    _same(TKAInitBeginResponse, {"NeedSignatures": None})
    req = TKAInitBeginRequest.from_json(json.dumps({"GenesisAUM": "AAEC"}))
    assert req.GenesisAUM == b"\x00\x01\x02"
    info = TKASignInfo(NodeID=3, NodePublic=NK, RotationPubkey=bytes(32))
    assert json.loads(info.to_json())["RotationPubkey"] == "A" * 43 + "="


def test_init_finish_map_keys_sorted_as_go_and_support_disablement_omitempty() -> None:
    req = TKAInitFinishRequest(Version=130, NodeKey=NK, Signatures={10: b"\x01", 2: b"\x02"})
    assert req.to_json() == (b'{"Version":130,"NodeKey":"' + NK.to_text().encode() +
                             b'","Signatures":{"10":"AQ==","2":"Ag=="}}')
    _same(TKAInitFinishRequest, {"Version": 130, "NodeKey": NK.to_text(), "Signatures": {"1": "AQ=="},
                                 "SupportDisablement": "c2VjcmV0"})
    _same(TKAInitFinishRequest, {"Version": 130, "NodeKey": NK.to_text(), "Signatures": None})
    assert TKAInitFinishRequest.from_json('{"Signatures":{"4":"AQ=="}}').Signatures == {4: b"\x01"}
    assert TKAInitFinishResponse().to_json() == b"{}"


def test_tka_info_omitempty() -> None:
    assert TKAInfo().to_json() == b"{}"
    assert TKAInfo(Head=HEAD).to_json() == b'{"Head":"' + HEAD.encode() + b'"}'
    assert TKAInfo(Disabled=True).to_json() == b'{"Disabled":true}'
    _same(TKAInfo, {"Head": HEAD, "Disabled": True})


def test_bootstrap() -> None:
    _same(TKABootstrapRequest, {"Version": 130, "NodeKey": NK.to_text(), "Head": ""})
    assert TKABootstrapResponse().to_json() == b"{}"
    assert TKABootstrapResponse(GenesisAUM=b"", DisablementSecret=b"").to_json() == b"{}"
    _same(TKABootstrapResponse, {"GenesisAUM": "AQID"})
    _same(TKABootstrapResponse, {"DisablementSecret": "c2VjcmV0"})


def test_sync_offer_and_send() -> None:
    _same(TKASyncOfferRequest, {"Version": 130, "NodeKey": NK.to_text(), "Head": HEAD, "Ancestors": [HEAD]})
    assert json.loads(TKASyncOfferResponse(Head=HEAD).to_json()) == {
        "Head": HEAD, "Ancestors": None, "MissingAUMs": None}
    _same(TKASyncOfferResponse, {"Head": HEAD, "Ancestors": [], "MissingAUMs": ["AQ==", "AgM="]})
    _same(TKASyncSendRequest, {"Version": 130, "NodeKey": NK.to_text(), "Head": HEAD, "MissingAUMs": None,
                               "Interactive": False})
    send = TKASyncSendRequest.from_json(json.dumps({"MissingAUMs": ["AQ=="], "Interactive": True}))
    assert send.MissingAUMs == [b"\x01"] and send.Interactive
    _same(TKASyncSendResponse, {"Head": HEAD})


def test_disable_sign_affected_sigs() -> None:
    _same(TKADisableRequest, {"Version": 130, "NodeKey": NK.to_text(), "Head": HEAD,
                              "DisablementSecret": "c2VjcmV0"})
    assert TKADisableResponse().to_json() == b"{}"
    _same(TKASubmitSignatureRequest, {"Version": 130, "NodeKey": NK.to_text(), "Signature": "pAEB"})
    assert TKASubmitSignatureResponse().to_json() == b"{}"
    _same(TKASignaturesUsingKeyRequest, {"Version": 130, "NodeKey": NK.to_text(), "KeyID": "AQID"})
    _same(TKASignaturesUsingKeyResponse, {"Signatures": ["AQ==", "Ag=="]})
    _same(TKASignaturesUsingKeyResponse, {"Signatures": None})


@pytest.mark.parametrize("doc", [
    '{"GenesisAUM": "not base64!"}',
    '{"GenesisAUM": "AQI"}',  # Go's StdEncoding wants the padding
    '{"GenesisAUM": 5}',
    '{"NodeKey": "nodekey:zz"}',
    '[1, 2]',
])
def test_bad_input_is_a_typed_error(doc: str) -> None:
    with pytest.raises(TailcfgParseError):
        TKAInitBeginRequest.from_json(doc)


def test_bad_map_key_and_signature_entries_refused() -> None:
    with pytest.raises(TailcfgParseError):
        TKAInitFinishRequest.from_json('{"Signatures": {"x": "AQ=="}}')
    with pytest.raises(TailcfgParseError):
        TKASignaturesUsingKeyResponse.from_json('{"Signatures": ["%%"]}')
