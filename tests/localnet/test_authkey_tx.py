"""Using a single-use auth key and inserting its node are one transaction (issue 13, part 4)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from pytsnet.localnet.authkeys import consume_authkey
from pytsnet.localnet.server import LocalTailnet
from pytsnet.localnet.store import Store
from pytsnet.localnet.testclient import ControlClient


class Crash(Exception):
    pass


def test_store_transaction_rolls_back_a_consumed_key(tmp_path: Path) -> None:
    s = Store(tmp_path)
    u = s.ensure_user()
    rec = s.create_authkey(user_id=u.id)
    with pytest.raises(Crash), s.transaction():
        consume_authkey(s, rec.key)
        s.add_node(machine_key="mkey:" + "22" * 32, node_key="nodekey:" + "11" * 32, user_id=u.id,
                   hostname="a", authorized=True, ephemeral=False)
        raise Crash
    assert [k.used for k in s.authkeys()] == [False] and s.nodes() == []
    consume_authkey(s, rec.key)  # still usable once
    assert [k.used for k in s.authkeys()] == [True]


def test_crash_between_key_use_and_node_insert_leaves_the_key_unused(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with LocalTailnet(tmp_path, listen="127.0.0.1:0") as net:
        key = net.create_authkey()

        def crash(*a: object, **kw: object) -> None:
            assert [k.used for k in net.store.authkeys()] == [True]  # the key was used just before
            raise Crash("simulated crash before the node insert")

        async def register() -> dict[str, object]:
            c = ControlClient(net.control_url)
            await c.connect()
            try:
                try:
                    return await c.register(key)
                except ConnectionError:
                    return {}
            finally:
                await c.close()

        with monkeypatch.context() as m:
            m.setattr(net.store, "add_node", crash)
            asyncio.run(asyncio.wait_for(register(), 20))
        assert [k.used for k in net.store.authkeys()] == [False] and net.store.nodes() == []
        resp = asyncio.run(asyncio.wait_for(register(), 20))
        assert resp.get("MachineAuthorized") is True and not resp.get("Error")
        assert [k.used for k in net.store.authkeys()] == [True] and len(net.store.nodes()) == 1
