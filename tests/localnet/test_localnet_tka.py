"""localnet as Tailnet Lock's control: /machine/tka/* (GET with a JSON body, as Go sends them), TKAInfo and
KeySignature in maps, the tailnet-lock capability, register's NL key and rotation re-signing. AUMs and
signatures are built with wire/tka as Go's client builds them; forged ones must be refused."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from pytsnet.localnet import LocalTailnet
from pytsnet.localnet.testclient import CAPVER, ControlClient
from pytsnet.wire.keys import NLPrivate, NodePrivate, NodePublic
from pytsnet.wire.tka import (
    AUM,
    AUMKind,
    Key,
    KeyKind,
    NodeKeySignature,
    State,
    aum_hash_text,
    disablement_kdf,
    resign_nks,
    sign_direct,
)
from pytsnet.wire.tka.authority import Authority
from pytsnet.wire.tka.chonk import MemChonk
from pytsnet.wire.tka.sync import sync_offer_to_text

CAP = "https://tailscale.com/cap/tailnet-lock"
SECRET = b"the right disablement secret...."
JSON = dict[str, Any]


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 60))


def b64(b: bytes) -> str:
    return base64.b64encode(b).decode()


class Node:
    """A test client with an NL key, registered with it as Go's client does."""

    def __init__(self, url: str, name: str) -> None:
        self.c = ControlClient(url)
        self.nl = NLPrivate.generate()
        self.name = name

    @property
    def key(self) -> str:
        return self.c.node.public().to_text()

    async def register(self, authkey: str, **extra: Any) -> JSON:
        req: JSON = {"Version": CAPVER, "NodeKey": self.key, "NLKey": self.nl.public().to_text(),
                     "Expiry": "0001-01-01T00:00:00Z", "Hostinfo": {"Hostname": self.name}, "Followup": "",
                     "NodeKeySignature": None, **extra}
        if authkey:
            req["Auth"] = {"AuthKey": authkey}
        status, body = await self.c.post("/machine/register", req)
        assert status == 200, body
        return dict(json.loads(body))

    async def tka(self, op: str, **body: Any) -> tuple[int, bytes]:
        return await self.c.post(f"/machine/tka/{op}", {"Version": CAPVER, "NodeKey": self.key, **body},
                                 method="GET")

    async def full_map(self) -> JSON:
        status, body = await self.c.post("/machine/map", {**self.c.map_request(), "Compress": "",
                                                          "Stream": False})
        assert status == 200
        return dict(json.loads(body[4:]))


def key_of(nl: NLPrivate, votes: int = 1) -> Key:
    return Key(kind=KeyKind.KEY25519, votes=votes, public=nl.public().raw)


def genesis_for(signer: NLPrivate, trusted: list[NLPrivate], secret: bytes = SECRET) -> AUM:
    state = State(last_aum_hash=None, disablement_secrets=(disablement_kdf(secret),),
                  keys=tuple(key_of(k) for k in trusted), state_id1=1, state_id2=2)
    return AUM(message_kind=AUMKind.CHECKPOINT, prev_aum_hash=None, state=state).signed(signer)


async def nodes_of(net: LocalTailnet, n: int) -> list[Node]:
    key = net.create_authkey(reusable=True)
    out = []
    for i in range(n):
        node = Node(net.control_url, f"n{i}")
        await node.c.connect()
        assert (await node.register(key))["MachineAuthorized"] is True
        out.append(node)
    return out


async def enable(net: LocalTailnet, nodes: list[Node]) -> tuple[AUM, dict[int, bytes]]:
    """Node 0 inits a lock trusting its own key and signs every node (rotation key = its NL key)."""
    admin = nodes[0]
    genesis = genesis_for(admin.nl, [admin.nl])
    status, body = await admin.tka("init/begin", GenesisAUM=b64(genesis.serialize()))
    assert status == 200, body
    need = json.loads(body)["NeedSignatures"]
    sigs = {}
    for info in need:
        sig = sign_direct(NodePublic.from_text(info["NodePublic"]), admin.nl,
                          base64.b64decode(info["RotationPubkey"]))
        sigs[info["NodeID"]] = sig.serialize()
    status, body = await admin.tka("init/finish", Signatures={str(k): b64(v) for k, v in sigs.items()})
    assert status == 200, body
    return genesis, sigs


def test_capability_and_no_tkainfo_while_off(net: LocalTailnet) -> None:
    async def main() -> None:
        a, _b = await nodes_of(net, 2)
        m = await a.full_map()
        assert CAP in m["Node"]["CapMap"] and CAP in m["Node"]["Capabilities"]
        assert "TKAInfo" not in m and all("KeySignature" not in p for p in m["Peers"])
        status, _ = await a.tka("sync/offer", Head="", Ancestors=None)
        assert status == 409
        status, body = await a.tka("bootstrap", Head="")
        assert (status, json.loads(body)) == (200, {})

    run(main())
    st = net.tka_state()
    assert st.status == "off" and len(st.nl_keys) == 2


def test_init_begin_lists_every_node_and_refuses_forged_genesis(net: LocalTailnet) -> None:
    async def main() -> None:
        a, b, c = await nodes_of(net, 3)
        stranger = NLPrivate.generate()
        # signed by a key that is not the caller's NL key (though trusted by the genesis): refused
        foreign = genesis_for(stranger, [stranger, a.nl])
        status, _ = await a.tka("init/begin", GenesisAUM=b64(foreign.serialize()))
        assert status == 403
        # signed by the caller but by a key its own state does not trust: refused
        status, _ = await a.tka("init/begin", GenesisAUM=b64(genesis_for(a.nl, [stranger]).serialize()))
        assert status == 400
        # garbage and a non-checkpoint
        assert (await a.tka("init/begin", GenesisAUM=b64(b"\xa1\x01")))[0] == 400
        noop = AUM(message_kind=AUMKind.NO_OP, prev_aum_hash=bytes(32)).signed(a.nl)
        assert (await a.tka("init/begin", GenesisAUM=b64(noop.serialize())))[0] == 400
        status, body = await a.tka("init/begin", GenesisAUM=b64(genesis_for(a.nl, [a.nl]).serialize()))
        assert status == 200
        need = {i["NodeID"]: i for i in json.loads(body)["NeedSignatures"]}
        for n in (a, b, c):
            info = need[net.node(n.name).id]
            assert info["NodePublic"] == n.key
            assert base64.b64decode(info["RotationPubkey"]) == n.nl.public().raw
        # finish by another node than the one that began: refused
        assert (await b.tka("init/finish", Signatures={}))[0] == 409

    run(main())
    assert net.tka_state().status == "off"


def test_full_flow_init_bootstrap_sync_sign_disable(net: LocalTailnet) -> None:
    async def main() -> None:
        a, b, c = await nodes_of(net, 3)
        genesis = genesis_for(a.nl, [a.nl])
        status, body = await a.tka("init/begin", GenesisAUM=b64(genesis.serialize()))
        need = json.loads(body)["NeedSignatures"]
        forger = NLPrivate.generate()
        good, forged = {}, {}
        for info in need:
            nk = NodePublic.from_text(info["NodePublic"])
            rot = base64.b64decode(info["RotationPubkey"])
            good[info["NodeID"]] = sign_direct(nk, a.nl, rot).serialize()
            forged[info["NodeID"]] = sign_direct(nk, forger, rot).serialize()
        # a forged signature: refused, the lock stays off; a missing one too
        assert (await a.tka("init/finish", Signatures={str(k): b64(v) for k, v in forged.items()}))[0] == 403
        first = next(iter(good))
        partial = {str(k): b64(v) for k, v in good.items() if k != first}
        assert (await a.tka("init/finish", Signatures=partial))[0] == 400
        assert net.tka_state().status == "off"
        status, body = await a.tka("init/finish", Signatures={str(k): b64(v) for k, v in good.items()})
        assert (status, body) == (200, b"{}")
        st = net.tka_state()
        assert st.enabled and st.head == aum_hash_text(genesis.hash()) and st.signatures == good

        m = await b.full_map()  # TKAInfo and every node's signature, self and peers
        assert m["TKAInfo"] == {"Head": aum_hash_text(genesis.hash())}
        assert base64.b64decode(m["Node"]["KeySignature"]) == good[net.node("n1").id]
        assert {p["ID"]: base64.b64decode(p["KeySignature"]) for p in m["Peers"]} == {
            i: s for i, s in good.items() if i != net.node("n1").id}

        status, body = await c.tka("bootstrap", Head="")
        assert status == 200 and base64.b64decode(json.loads(body)["GenesisAUM"]) == genesis.serialize()

        # sync as Go's client: offer our head, get control's; nothing missing either way
        chonk = MemChonk()
        local = Authority.bootstrap(chonk, genesis, 0.0)
        head, anc = sync_offer_to_text(local.sync_offer(chonk))
        status, body = await c.tka("sync/offer", Head=head, Ancestors=list(anc))
        offer = json.loads(body)
        assert status == 200 and offer["Head"] == head and not offer["MissingAUMs"]

        # a forged AUM (signed by a key the authority does not trust): refused, head unchanged
        bad = AUM(message_kind=AUMKind.ADD_KEY, prev_aum_hash=genesis.hash(),
                  key=key_of(forger)).signed(forger)
        status, _ = await c.tka("sync/send", Head=head, MissingAUMs=[b64(bad.serialize())], Interactive=True)
        assert status == 403 and net.tka_state().head == head
        assert (await c.tka("sync/send", Head=head, MissingAUMs=["AAAA"]))[0] == 403

        # a streaming map sees the new head once a trusted key adds a key
        stream = b.c.map_stream()
        first = await anext(stream)
        assert first["TKAInfo"]["Head"] == head
        updater = local.new_updater(a.nl)
        updater.add_key(key_of(c.nl))
        aums = updater.finalize(chonk)
        # all or nothing: a good AUM followed by a forged child is refused as a whole
        child = AUM(message_kind=AUMKind.NO_OP, prev_aum_hash=aums[-1].hash()).signed(forger)
        batch = [b64(x.serialize()) for x in [*aums, child]]
        status, _ = await a.tka("sync/send", Head=head, MissingAUMs=batch)
        assert status == 403 and net.tka_state().head == head and net.tka_state().aums == 1
        assert not net.control.tka.chonk.child_aums(genesis.hash())  # nothing committed either
        status, body = await a.tka("sync/send", Head=head, MissingAUMs=[b64(x.serialize()) for x in aums],
                                   Interactive=True)
        new_head = aum_hash_text(aums[-1].hash())
        assert status == 200 and json.loads(body)["Head"] == new_head
        assert await _until(stream, lambda m: m.get("TKAInfo", {}).get("Head") == new_head)

        # control's offer now names the AUM a genesis-only node is missing
        status, body = await b.tka("sync/offer", Head=head, Ancestors=list(anc))
        missing = [base64.b64decode(x) for x in json.loads(body)["MissingAUMs"]]
        assert [AUM.unserialize(x).hash() for x in missing] == [x.hash() for x in aums]

        # sign a new node: forged refused, right one stored and carried in maps
        d = Node(net.control_url, "late")
        await d.c.connect()
        assert (await d.register(net.create_authkey()))["MachineAuthorized"] is True
        dk = d.c.node.public()
        status, _ = await a.tka("sign", Signature=b64(sign_direct(dk, forger).serialize()))
        assert status == 403 and net.node("late").id not in net.tka_state().signatures
        assert (await a.tka("sign", Signature=b64(b"\xff\x00")))[0] == 400
        dsig = sign_direct(dk, a.nl, d.nl.public().raw).serialize()
        assert (await a.tka("sign", Signature=b64(dsig)))[0] == 200
        assert net.tka_state().signatures[net.node("late").id] == dsig
        assert await _until(stream, lambda m: any(base64.b64decode(p.get("KeySignature", "")) == dsig
                                                  for p in m.get("PeersChanged", [])))

        # affected-sigs: every stored signature a's key authorizes; none for another key
        status, body = await a.tka("affected-sigs", KeyID=b64(a.nl.public().raw))
        assert status == 200 and sorted(base64.b64decode(s) for s in json.loads(body)["Signatures"]) == \
            sorted([*good.values(), dsig])
        status, body = await a.tka("affected-sigs", KeyID=b64(forger.public().raw))
        assert status == 200 and not json.loads(body)["Signatures"]

        # disable: a wrong secret is refused and the lock stays; the right one turns it off
        assert (await b.tka("disable", Head=new_head, DisablementSecret=b64(b"wrong")))[0] == 403
        assert net.tka_state().enabled
        status, _ = await b.tka("disable", Head=new_head, DisablementSecret=b64(SECRET))
        assert status == 200 and net.tka_state().status == "disabled"
        assert await _until(stream, lambda m: m.get("TKAInfo") == {"Disabled": True})
        status, body = await c.tka("bootstrap", Head=new_head)
        assert json.loads(body) == {"DisablementSecret": b64(SECRET)}
        m = await c.full_map()
        assert m["TKAInfo"] == {"Disabled": True} and all("KeySignature" not in p for p in m["Peers"])
        assert (await b.tka("sync/offer", Head=head, Ancestors=[]))[0] == 409

    run(main())


async def _until(stream: AsyncIterator[JSON], pred: Any, timeout: float = 10) -> bool:
    async def scan() -> bool:
        async for m in stream:
            if pred(m):
                return True
        return False

    return await asyncio.wait_for(scan(), timeout)


def test_rotation_is_resigned_and_a_bad_signature_refused(net: LocalTailnet) -> None:
    async def main() -> None:
        nodes = await nodes_of(net, 2)
        a, b = nodes
        _genesis, sigs = await enable(net, nodes)
        bid = net.node("n1").id
        old_key, old_sig = b.key, sigs[bid]
        # Go's doLogin: a new key with OldNodeKey and no signature → control answers the old signature
        b.c.node = NodePrivate.generate()
        resp = await b.register("", OldNodeKey=old_key)
        assert base64.b64decode(resp["NodeKeySignature"]) == old_sig
        assert net.node(bid).node_key == old_key  # not rotated yet
        # a signature by a key that is not the rotation key: a register Error, nothing changes
        b.c.node = NodePrivate.generate()
        forged = resign_nks(NLPrivate.generate(), b.c.node.public(), old_sig)
        resp = await b.register("", OldNodeKey=old_key, NodeKeySignature=b64(forged))
        assert resp["Error"] and net.node(bid).node_key == old_key
        # the client re-signs with its NL key (the signature's rotation key) and registers again
        new_sig = resign_nks(b.nl, b.c.node.public(), old_sig)
        resp = await b.register("", OldNodeKey=old_key, NodeKeySignature=b64(new_sig))
        assert resp["MachineAuthorized"] is True and not resp.get("Error")
        assert net.node(bid).node_key == b.key
        assert net.tka_state().signatures[bid] == new_sig
        assert NodeKeySignature.unserialize(new_sig).rotation_details() is not None
        m = await a.full_map()
        (peer,) = m["Peers"]
        assert peer["Key"] == b.key and base64.b64decode(peer["KeySignature"]) == new_sig

        # a signature without a rotation key cannot be re-signed (Go's ResignNKS fails): its second
        # register, again without a signature, rotates the key unsigned and the stale signature goes
        aid = net.node("n0").id
        plain = sign_direct(a.c.node.public(), a.nl).serialize()
        assert (await a.tka("sign", Signature=b64(plain)))[0] == 200
        old_a = a.key
        a.c.node = NodePrivate.generate()
        assert base64.b64decode((await a.register("", OldNodeKey=old_a))["NodeKeySignature"]) == plain
        a.c.node = NodePrivate.generate()
        resp = await a.register("", OldNodeKey=old_a)
        assert resp["MachineAuthorized"] is True and "NodeKeySignature" not in resp
        assert net.node(aid).node_key == a.key and aid not in net.tka_state().signatures
        assert not net.control.tka.resign_offered  # both rotations done: no offer outstanding
        m = await b.full_map()
        assert "KeySignature" not in m["Peers"][0] and m["Peers"][0]["Key"] == a.key

    run(main())


def test_lock_survives_restart(tmp_path: Path) -> None:
    with LocalTailnet(tmp_path, keepalive_interval=0.5, relay=False) as net:
        async def main() -> None:
            nodes = await nodes_of(net, 2)
            await enable(net, nodes)

        run(main())
        before = net.tka_state()
    assert before.enabled
    with LocalTailnet(tmp_path, keepalive_interval=0.5, relay=False) as net:
        after = net.tka_state()
        assert (after.status, after.head, after.signatures, after.nl_keys) == (
            before.status, before.head, before.signatures, before.nl_keys)


def test_corrupt_lock_record_stops_the_server(tmp_path: Path) -> None:
    from pytsnet.localnet.store import Store
    from pytsnet.localnet.tka import META_KEY, ControlTka, TkaStoreError

    store = Store(tmp_path)
    store.set_meta(META_KEY, json.dumps({"status": "enabled", "aums": ["AAAA"]}))
    with pytest.raises(TkaStoreError):
        ControlTka.load(store, 0.0)
    store.set_meta(META_KEY, "{not json")
    with pytest.raises(TkaStoreError):
        ControlTka.load(store, 0.0)
    store.close()


def test_tka_calls_need_a_known_node(net: LocalTailnet) -> None:
    async def main() -> None:
        (a,) = await nodes_of(net, 1)
        other = await ControlClient.connected(net.control_url)  # another machine, a's node key
        status, _ = await other.post("/machine/tka/bootstrap", {"NodeKey": a.key}, method="GET")
        assert status == 403
        assert (await a.tka("nope"))[0] == 404
        assert (await a.tka("init/begin", GenesisAUM="%%%"))[0] == 400

    run(main())
