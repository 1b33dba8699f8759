"""Removing a trusted key end to end with Python nodes on a LocalTailnet (21i): Go's
``tailscale lock remove`` re-signs by default (``NetworkLockAffectedSigs`` then ``NetworkLockSign``), and
key ``Meta`` is carried into the chain.

1. ``alpha`` inits a lock trusting its own key and ``beta``'s; ``alpha``'s key signs both nodes, then
   ``gamma`` (with its rotation key).
2. ``beta`` asks for the signatures resting on ``alpha``'s key (three, each verified by ``beta``) and
   removes that key with re-signing: every node stays admitted, now signed by ``beta``'s key, and
   ``gamma`` keeps its rotation key.
3. ``beta`` trusts ``gamma``'s key with Go's pre-auth key ``Meta`` (``lock status`` shows
   "(pre-auth key …)"); ``gamma`` re-signs ``alpha``; ``beta`` removes ``gamma``'s key with
   ``re_sign=False``: ``alpha``'s signature no longer verifies and both others drop it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from pytsnet.commands.lock import status_text
from pytsnet.config import Config
from pytsnet.device import ActorDevice
from pytsnet.errors import TailnetLockError
from pytsnet.localapi.tka import network_lock_status
from pytsnet.localnet import LocalTailnet
from pytsnet.testing.polling import wait_until
from pytsnet.testing.tailnet import GrowingRig, growing_tailnet
from pytsnet.wire.keys import NLPublic, NodePublic
from pytsnet.wire.tka import NodeKeySignature, SigKind

SECRET = "disablement-secret:" + "3c" * 32


def _device(net: LocalTailnet, key: str, tmp: Path, name: str) -> ActorDevice:
    return ActorDevice(Config(dir=tmp / name, hostname=name, auth_key=key, control_url=net.control_url,
                              backoff_max=1.0, bind_host="127.0.0.1")).start()


def _names(dev: ActorDevice) -> set[str]:
    return {p.hostname for p in dev.peers()}


def _signer(dev: ActorDevice, name: str) -> bytes | None:
    """The key ID the signature of ``dev``'s peer ``name`` rests on (None: not a peer now)."""
    sig = _sig_of(dev, name)
    return sig.authorizing_key_id() if sig is not None else None


def _sig_of(dev: ActorDevice, name: str) -> NodeKeySignature | None:
    found = [p for p in dev.peers() if p.hostname == name]
    return NodeKeySignature.unserialize(found[0].key_signature) if found else None


def _synced(*devs: ActorDevice) -> bool:
    heads = {d.lock_status().head for d in devs}
    return len(heads) == 1


@pytest.fixture
def tailnet(tmp_path: Path) -> Iterator[GrowingRig]:
    with growing_tailnet(tmp_path) as rig:
        yield rig


def test_remove_re_signs_by_default_and_without_it_the_signed_node_is_dropped(
        tmp_path: Path, tailnet: GrowingRig) -> None:
    net, key, devs = tailnet
    a, b, c = (_device(net, key, tmp_path, n) for n in ("alpha", "beta", "gamma"))
    devs += [a, b, c]
    for d in devs:
        d.wait_until_running_blocking(30)
    wait_until(lambda: all(len(_names(d)) == 2 for d in devs), 30, "everyone sees everyone")

    # 1. a lock trusting alpha and beta; alpha's key signs all three
    anyio.run(lambda: a.lock_init([a.lock_key(), b.lock_key()], disablement_secrets=[SECRET]))
    for d in devs:
        wait_until(lambda d=d: d.lock_status().node_key_signed, 30,  # type: ignore[misc]
                   f"{d.config.hostname} signed at init")
    wait_until(lambda: all(len(_names(d)) == 2 for d in devs), 30, "all admitted under the lock")
    a_id = NLPublic.from_text(a.lock_key()).raw
    b_id = NLPublic.from_text(b.lock_key()).raw

    # 2. beta: what rests on alpha's key (checked by beta), then remove it, re-signing (the default)
    sigs = anyio.run(lambda: b.lock_affected_sigs(a.lock_key()))
    assert len(sigs) == 3
    assert {NodeKeySignature.unserialize(s).authorizing_key_id() for s in sigs} == {a_id}
    assert anyio.run(lambda: b.lock_affected_sigs(b.lock_key())) == []
    with pytest.raises(TailnetLockError, match="cannot remove local trusted signing key while resigning"):
        anyio.run(lambda: b.lock_remove_key(b.lock_key()))
    head = anyio.run(lambda: b.lock_remove_key(a.lock_key()))
    wait_until(lambda: all(d.lock_status().head == head for d in devs), 30, "everyone has the removal")
    assert [k.key for k in b.lock_status().trusted_keys] == [b.lock_key()]
    wait_until(lambda: _signer(b, "gamma") == b_id and _signer(b, "alpha") == b_id, 30,
               "alpha and gamma re-signed by beta")
    gamma_sig = _sig_of(b, "gamma")
    assert gamma_sig is not None and gamma_sig.wrapping_public() == NLPublic.from_text(c.lock_key()).raw
    for d in devs:
        wait_until(lambda d=d: len(_names(d)) == 2 and d.lock_status().node_key_signed, 30,  # type: ignore[misc]
                   f"{d.config.hostname}: still signed, still admitted")
    assert not b.lock_status().filtered_peers

    # 3. gamma's key trusted with Go's pre-auth key labels; gamma signs alpha; remove gamma's key unsigned
    meta = {"purpose": "pre-auth key", "authkey_stableid": "kTEST"}
    anyio.run(lambda: b.lock_add_key(c.lock_key(), meta=meta))
    wait_until(lambda: all(c.lock_key() in [k.key for k in d.lock_status().trusted_keys] for d in devs), 30,
               "gamma trusted everywhere")
    [added] = [k for k in b.lock_status().trusted_keys if k.key == c.lock_key()]
    assert dict(added.meta) == meta
    assert f"\t{c.lock_key()}\t1\t(pre-auth key kTEST)" in status_text(network_lock_status(b)).splitlines()
    alpha_node = a.lock_status().node_key
    anyio.run(lambda: c.lock_sign(alpha_node, a.lock_key()))
    c_id = NLPublic.from_text(c.lock_key()).raw
    wait_until(lambda: _signer(b, "alpha") == c_id and _signer(c, "alpha") == c_id, 30,
               "alpha now signed by gamma")
    alpha_sig = _sig_of(b, "alpha")
    assert alpha_sig is not None and alpha_sig.sig_kind == SigKind.DIRECT
    anyio.run(lambda: b.lock_remove_key(c.lock_key(), re_sign=False))
    wait_until(lambda: "alpha" not in _names(b) and "alpha" not in _names(c), 30, "alpha dropped")
    filtered = {f.node_key: f.reason for f in b.lock_status().filtered_peers}
    assert "failed signature check" in filtered[alpha_node]
    assert NodePublic.from_text(alpha_node)  # the refused node is named by its key
    assert "gamma" in _names(b) and "beta" in _names(c), "gamma (signed by beta) stays"
    # alpha learns of the removal by its own sync, which may come after b's and c's
    wait_until(lambda: not a.lock_status().node_key_signed, 30, "alpha sees itself unsigned")
