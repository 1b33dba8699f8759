"""Key types against Go's published vectors (types/key/*_test.go) and their safety properties."""

from __future__ import annotations

import contextlib
import os
import stat

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pytsnet.wire.errors import CryptoError, ParseError
from pytsnet.wire.keys import (
    DiscoPrivate,
    DiscoPublic,
    KeyParseError,
    MachinePrivate,
    MachinePublic,
    NLPublic,
    NodePrivate,
    NodePublic,
    load_private,
    save_private,
)

# types/key/node_test.go TestNodeSerialization (same bytes in machine_test.go, disco_test.go).
PRIV_HEX = "40ab1b58e9076c7a4d9d07291f5edf9d1aa017eb949624ba683317f48a640369"
PUB_HEX = "50d20b455ecf12bc453f83c2cfdb2a24925d06cf2598dcaa54e91af82ce9f765"


@pytest.mark.parametrize(
    ("priv_cls", "pub_cls", "prefix"),
    [(NodePrivate, NodePublic, "nodekey:"), (MachinePrivate, MachinePublic, "mkey:"),
     (DiscoPrivate, DiscoPublic, "discokey:")],
)
def test_go_vector_pair(priv_cls: type, pub_cls: type, prefix: str) -> None:
    priv = priv_cls.from_text("privkey:" + PRIV_HEX)
    pub = priv.public()
    assert type(pub) is pub_cls
    assert pub.to_text() == prefix + PUB_HEX
    assert pub == pub_cls.from_text(prefix + PUB_HEX)
    assert priv.to_text() == "privkey:" + PRIV_HEX


def test_parse_accepts_uppercase_hex_and_emits_lowercase() -> None:
    k = NodePublic.from_text("nodekey:" + PUB_HEX.upper())
    assert k.to_text() == "nodekey:" + PUB_HEX


def test_private_never_shown() -> None:
    priv = NodePrivate.from_text("privkey:" + PRIV_HEX)
    for text in (repr(priv), str(priv), f"{priv}", repr([priv])):
        assert PRIV_HEX not in text
        assert PRIV_HEX[:10] not in text


def test_types_are_distinct() -> None:
    raw = bytes.fromhex(PUB_HEX)
    assert NodePublic.from_raw(raw) != DiscoPublic.from_raw(raw)
    assert len({NodePublic.from_raw(raw), NodePublic.from_raw(raw), MachinePublic.from_raw(raw)}) == 2
    with pytest.raises(KeyParseError):
        NodePublic.from_text("discokey:" + PUB_HEX)


def test_frozen() -> None:
    k = NodePublic.from_raw(bytes(32))
    with pytest.raises(AttributeError):
        k._raw = b"x" * 32  # type: ignore[misc]
    assert k.is_zero()
    assert k.short_string() == ""
    assert NodePublic.from_text("nodekey:" + PUB_HEX).short_string() == "[UNILR]"


def test_nl_public_accepts_tlpub() -> None:
    a = NLPublic.from_text("tlpub:" + PUB_HEX)
    assert a.to_text() == "nlpub:" + PUB_HEX


@pytest.mark.parametrize(
    "text",
    ["", "nodekey:", "nodekey:" + PUB_HEX[:-1], "nodekey:" + PUB_HEX + "0", "nodekey:" + "zz" * 32,
     "mkey:" + PUB_HEX, "nodekey:" + " " * 2 + PUB_HEX[2:], "nodekey:" + "é" * 64],
)
def test_bad_text(text: str) -> None:
    with pytest.raises(KeyParseError):
        NodePublic.from_text(text)


def test_bad_raw() -> None:
    with pytest.raises(KeyParseError):
        NodePublic.from_raw(b"\x00" * 31)
    with pytest.raises(KeyParseError):
        NodePrivate.from_raw(b"\x00" * 33)


@given(st.text(max_size=120))
def test_text_parser_only_raises_typed_error(s: str) -> None:
    for cls in (NodePublic, MachinePublic, DiscoPublic, NLPublic, NodePrivate):
        with contextlib.suppress(ParseError):
            cls.from_text(s)


@given(st.binary(max_size=70))
def test_raw_parser_only_raises_typed_error(b: bytes) -> None:
    try:
        k = NodePublic.from_raw(b)
    except ParseError:
        return
    assert k.raw == b


def test_generate_clamped_and_dh_agrees() -> None:
    a, b = NodePrivate.generate(), NodePrivate.generate()
    assert a.raw[0] & 7 == 0 and a.raw[31] & 0x80 == 0 and a.raw[31] & 0x40
    assert a.shared_secret(b.public()) == b.shared_secret(a.public())
    with pytest.raises(CryptoError):
        a.shared_secret(NodePublic.zero())


def test_save_load_mode_0600(tmp_path: object) -> None:
    path = os.path.join(str(tmp_path), "node.key")
    k = NodePrivate.generate()
    old = os.umask(0)
    try:
        save_private(path, k)
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert load_private(path, NodePrivate) == k
    with open(path, "w") as f:
        f.write("garbage")
    with pytest.raises(KeyParseError):
        load_private(path, NodePrivate)
