"""The facade's Tailnet Lock conversions (``pytsnet/tka.py``): key and secret forms as Go's CLI takes
them, typed errors per failure, and the status an app reads (lockout warning, filtered peers)."""

from __future__ import annotations

import pytest

from pytsnet import tka as facade
from pytsnet.errors import (
    TailnetLockDisablementRefused,
    TailnetLockError,
    TailnetLockNotEnabled,
    TailnetLockNotTrusted,
)
from pytsnet.messages.peers import PeerTable, RejectedPeer
from pytsnet.messages.tka import TkaAnswer, TkaFailure, TkaLogAnswer, TkaStatus
from pytsnet.wire.keys import NLPrivate
from pytsnet.wire.tka import disablement_kdf


def test_keys_in_tlpub_or_nlpub_text_with_votes() -> None:
    pub = NLPrivate.generate().public()
    assert facade.key_info(pub.cli_string()).key == pub.cli_string()
    assert facade.key_info((pub.to_text(), 3)).votes == 3
    with pytest.raises(TailnetLockError, match="tlpub"):
        facade.key_info("nodekey:" + "00" * 32)


def test_disablement_secrets_become_their_kdf_and_values_pass_through() -> None:
    raw = b"\x01" * 32
    text = "disablement-secret:" + raw.hex()
    assert facade.disablement_secret(text) == raw == facade.disablement_secret(raw)
    value = disablement_kdf(raw)
    assert facade.disablement_values([text, raw, "disablement:" + value.hex()]) == (value, value, value)
    with pytest.raises(TailnetLockError):
        facade.disablement_secret("not-a-secret")
    with pytest.raises(TailnetLockError):
        facade.disablement_secret("disablement-secret:zz")


def test_rotation_key_forms() -> None:
    pub = NLPrivate.generate().public()
    assert facade.rotation_public(pub.cli_string()) == pub.raw == facade.rotation_public(pub.raw)
    assert facade.rotation_public(None) == b""
    with pytest.raises(TailnetLockError):
        facade.rotation_public(b"short")


@pytest.mark.parametrize(("failure", "error"), [
    ("not_enabled", TailnetLockNotEnabled), ("not_trusted", TailnetLockNotTrusted),
    ("bad_secret", TailnetLockDisablementRefused), ("control", TailnetLockError),
    ("invalid", TailnetLockError), ("no_node_key", TailnetLockError)])
def test_each_failure_is_a_typed_error(failure: TkaFailure, error: type[Exception]) -> None:
    with pytest.raises(error, match="why"):
        facade.raise_for(TkaAnswer(failure=failure, error="why"))
    facade.raise_for(TkaAnswer(head="h"))
    with pytest.raises(TailnetLockNotEnabled):
        facade.log_entries(TkaLogAnswer(failure="not_enabled", error="off"))
    assert isinstance(TailnetLockNotTrusted("x"), PermissionError)


def test_status_shows_lockout_and_only_the_lock_s_refusals() -> None:
    table = PeerTable(rejected=[RejectedPeer(node_id=3, reason="missing signature"),
                                RejectedPeer(node_id=4, reason="key expired")])
    st = facade.lock_status(TkaStatus(enabled=True, head="H", node_key="nodekey:ab"), table, locked_out=False)
    assert st.locked_out and st.warnings and "locked out" in st.warnings[0]
    assert [(f.node_id, f.reason) for f in st.filtered_peers] == [(3, "missing signature")]
    st2 = TkaStatus(enabled=True, head="H", node_key="nodekey:ab", node_key_signed=True)
    signed = facade.lock_status(st2, table, locked_out=False)
    assert not signed.locked_out and not signed.warnings
    off = facade.lock_status(TkaStatus(enabled=False), table, locked_out=True)
    assert not off.enabled and not off.locked_out and not off.filtered_peers


def test_a_disablement_secret_never_shows_in_a_repr_or_a_trace() -> None:
    from pytsnet.messages.redact import RedactContext
    from pytsnet.messages.tka import TkaDisable

    msg = TkaDisable(secret_hex="ab" * 32)
    ctx = RedactContext()
    assert "abab" not in repr(msg)
    assert msg.model_dump(mode="json", context=ctx) == {"secret_hex": "<redacted:process:DisablementSecret>"}


def test_the_support_disablement_secret_never_shows_in_a_repr_or_a_trace() -> None:
    from pytsnet.messages.redact import RedactContext
    from pytsnet.messages.tka import TkaInit

    msg = TkaInit(keys=(), disablement_values=(), support_disablement_hex="cd" * 32)
    assert "cdcd" not in repr(msg)
    dumped = msg.model_dump(mode="json", context=RedactContext())
    assert dumped["support_disablement_hex"] == "<redacted:process:DisablementSecret>"
