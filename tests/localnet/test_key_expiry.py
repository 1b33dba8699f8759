"""Node-key expiry in the local control server and its DERP relay (wire-level clients, no node logic).

Control assigns the expiry (the client cannot pick a later one or "never"); ``nodes expire`` makes the
node's own map show it expired with no peers and its peers' maps carry it ``Expired`` without
endpoints; ``nodes extend`` undoes both; rotating an expired key needs an auth key; the relay refuses
an expired key and closes its open connection — also when a key simply runs out, which sends no map
frame (clients drop it by their own timers; see tests/device/test_device_key_expiry.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import pytest

from pytsnet.localnet import LocalTailnet
from pytsnet.localnet.expiry import DEFAULT_KEY_EXPIRY, DurationError, NodeNotFound, parse_duration
from pytsnet.localnet.testclient import ControlClient
from pytsnet.wire.derp.handshake import ClientConnection, ServerInfoReceived
from pytsnet.wire.keys import NodePrivate

JSON = dict[str, Any]


def _ts(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


@pytest.mark.parametrize(("text", "seconds"), [
    ("90s", 90), ("12h", 12 * 3600), ("180d", 180 * 86400), ("2w", 14 * 86400), ("1h30m", 5400),
    ("45", 45), ("1.5h", 5400), (" 10M ", 600),
])
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "h", "12x", "-5s", "0s", "1d2", "abc", "1e9999"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(DurationError):
        parse_duration(text)


async def _client(net: LocalTailnet, key: str, hostname: str, **kw: Any) -> ControlClient:
    c = ControlClient(net.control_url)
    await c.connect()
    r = await c.register(key, hostname=hostname, **kw)
    assert r.get("MachineAuthorized") is True, r
    return c


class _Stream:
    """A long poll read into a list by a task, so the test can wait for a matching message."""

    def __init__(self, c: ControlClient, hostname: str) -> None:
        self.msgs: list[JSON] = []
        self._it: AsyncIterator[JSON] = c.map_stream(Hostinfo={"Hostname": hostname},
                                                    Endpoints=[f"192.0.2.{len(hostname)}:41641"])
        self._task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        async for m in self._it:
            if not m.get("KeepAlive"):
                self.msgs.append(m)

    def mark(self) -> int:
        return len(self.msgs)

    async def until(self, pred: Any, timeout: float = 5.0, since: int = 0) -> JSON:
        """The first message from index ``since`` on that matches ``pred``."""
        end = time.monotonic() + timeout
        seen = since
        while time.monotonic() < end:
            for m in self.msgs[seen:]:
                if pred(m):
                    return m
            seen = len(self.msgs)
            await asyncio.sleep(0.02)
        raise AssertionError(f"no matching map message in {self.msgs}")

    def close(self) -> None:
        self._task.cancel()


async def _settled(net: LocalTailnet, *streams: _Stream) -> None:
    """Every node's endpoints reached control and every stream has its first map and the deltas."""
    for _ in range(250):
        if all(n.endpoints for n in net.nodes()) and all(s.msgs for s in streams):
            break
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.3)


def _peer_in(m: JSON, node_id: int) -> JSON | None:
    return next((p for p in [*(m.get("Peers") or []), *(m.get("PeersChanged") or [])] if p["ID"] == node_id),
                None)


def test_control_assigns_the_key_expiry_and_a_client_may_only_shorten_it(tmp_path) -> None:
    with LocalTailnet(tmp_path, key_expiry="12h", relay=False) as net:
        key = net.create_authkey(reusable=True)

        async def main() -> None:
            t0 = time.time()
            await _client(net, key, "never")  # Go's zero Expiry ("no particular expiry")
            await _client(net, key, "later", expiry="2099-01-01T00:00:00Z")
            soon = datetime.fromtimestamp(t0 + 600).astimezone().isoformat()
            await _client(net, key, "sooner", expiry=soon)
            nodes = {n.hostname: n for n in net.nodes()}
            for h in ("never", "later"):
                assert nodes[h].key_expiry is not None
                assert t0 + 12 * 3600 - 1 <= nodes[h].key_expiry <= time.time() + 12 * 3600 + 1
            assert nodes["sooner"].key_expiry == pytest.approx(t0 + 600, abs=1)
            c = await _client(net, key, "mapped")
            s = _Stream(c, "mapped")
            first = await s.until(lambda m: "Node" in m)
            assert _ts(first["Node"]["KeyExpiry"]) == net.node("mapped").key_expiry
            assert "Expired" not in first["Node"]
            s.close()

        asyncio.run(main())
    with LocalTailnet(tmp_path, relay=False) as net:  # the lifetime stays with the state dir
        assert net.control.key_lifetime == 12 * 3600
    with LocalTailnet(tmp_path / "fresh", relay=False) as net:
        assert net.control.key_lifetime == DEFAULT_KEY_EXPIRY == 180 * 86400


def test_expired_node_sees_itself_expired_without_peers_and_peers_see_it_expired(tmp_path) -> None:
    with LocalTailnet(tmp_path, relay=False) as net:
        key = net.create_authkey(reusable=True)

        async def main() -> None:
            a, b = await _client(net, key, "alpha"), await _client(net, key, "beta")
            ida, idb = net.node("alpha").id, net.node("beta").id
            sa, sb = _Stream(a, "alpha"), _Stream(b, "beta")
            await _settled(net, sa, sb)
            polls = net.control.stats["map_polls"]

            t0, ma, mb = time.time(), sa.mark(), sb.mark()
            rec = net.expire_node("alpha")  # by hostname
            assert rec.key_expiry is not None and rec.key_expiry <= time.time()
            mine = await sa.until(lambda m: m.get("Node", {}).get("Expired"), 1.0, ma)
            assert _ts(mine["Node"]["KeyExpiry"]) <= t0
            assert mine.get("PeersRemoved") == [idb]  # no peers while expired
            seen = await sb.until(lambda m: (p := _peer_in(m, ida)) is not None and p.get("Expired"), 1.0, mb)
            gone = _peer_in(seen, ida)
            assert gone["Endpoints"] == [] and gone["HomeDERP"] == 0 and "DERP" not in gone
            assert _ts(gone["KeyExpiry"]) <= t0
            assert net.control.stats["map_polls"] == polls  # the expired node's poll stayed up

            ma, mb = sa.mark(), sb.mark()
            net.extend_node(ida, "1h")  # by ID
            back = await sa.until(lambda m: "Node" in m and not m["Node"].get("Expired"), 1.0, ma)
            assert _ts(back["Node"]["KeyExpiry"]) == pytest.approx(time.time() + 3600, abs=2)
            await sa.until(lambda m: _peer_in(m, idb) is not None, 1.0, ma)
            p = _peer_in(await sb.until(lambda m: (p := _peer_in(m, ida)) is not None
                                         and not p.get("Expired"), 1.0, mb), ida)
            assert p["Endpoints"] and _ts(p["KeyExpiry"]) > time.time()
            sa.close()
            sb.close()

        asyncio.run(main())


def test_rotating_an_expired_key_needs_an_auth_key(tmp_path) -> None:
    with LocalTailnet(tmp_path, relay=False) as net:
        key = net.create_authkey(reusable=True)

        async def main() -> None:
            a = await _client(net, key, "alpha")
            rec = net.node("alpha")
            # A refresh while not expired is allowed without auth, and keeps the expiry.
            old = a.node.public().to_text()
            a.node = NodePrivate.generate()
            r = await a.register("", hostname="alpha", old_node_key=old)
            assert r.get("MachineAuthorized") is True and not r.get("Error"), r
            assert net.node(rec.id).key_expiry == rec.key_expiry
            assert net.node(rec.id).node_key == a.node.public().to_text()

            net.expire_node(rec.id)
            r = await a.register("", hostname="alpha")  # the same, expired key
            assert r.get("NodeKeyExpired") is True, r
            old = a.node.public().to_text()
            a.node = NodePrivate.generate()
            r = await a.register("", hostname="alpha", old_node_key=old)
            assert "expired" in r.get("Error", ""), r
            assert net.node(rec.id).node_key == old  # nothing changed
            assert net.store.node_by_key(a.node.public().to_text()) is None
            r = await a.register(key, hostname="alpha", old_node_key=old)  # a re-auth
            assert r.get("MachineAuthorized") is True and not r.get("Error"), r
            now = net.node(rec.id)
            assert now.node_key == a.node.public().to_text() and now.ipv4 == rec.ipv4
            assert now.key_expiry is not None and now.key_expiry > time.time() + 179 * 86400
            assert len(net.nodes()) == 1

        asyncio.run(main())


async def _derp_connect(port: int, priv: NodePrivate) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /derp HTTP/1.1\r\nHost: x\r\nUpgrade: DERP\r\nConnection: Upgrade\r\n\r\n")
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert head.startswith(b"HTTP/1.1 101 "), head
    conn = ClientConnection(priv, time.monotonic())
    writer.write(conn.data_to_send())
    while True:
        data = await asyncio.wait_for(reader.read(1 << 16), 5)
        if not data:
            raise EOFError("relay closed the stream before ServerInfo")
        events = conn.receive_data(data, time.monotonic())
        writer.write(conn.data_to_send())  # ClientInfo, after the ServerKey frame
        if any(isinstance(ev, ServerInfoReceived) for ev in events):
            return reader, writer


async def _closed(reader: asyncio.StreamReader, timeout: float) -> bool:
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout):
            while await reader.read(1 << 16):
                pass
            return True
    return False


def test_relay_refuses_an_expired_key_and_closes_its_open_connection(tmp_path) -> None:
    with LocalTailnet(tmp_path) as net:
        key = net.create_authkey(reusable=True)
        relay = net.relay
        assert relay is not None

        async def main() -> None:
            a, b = await _client(net, key, "alpha"), await _client(net, key, "beta")
            ra, _wa = await _derp_connect(net.port, a.node)
            rb, _wb = await _derp_connect(net.port, b.node)
            net.expire_node("alpha")
            assert await _closed(ra, 1.0)  # the open connection is closed at once
            assert not await _closed(rb, 0.3)  # the other one stays
            with pytest.raises(EOFError):
                await _derp_connect(net.port, a.node)  # and a new one is refused
            net.extend_node("alpha")
            await _derp_connect(net.port, a.node)

        asyncio.run(main())
        assert relay.derp.stats.revoked == 1 and relay.derp.stats.rejected_unknown == 1


def test_a_key_running_out_closes_the_relay_connection_but_sends_no_map_frame(tmp_path) -> None:
    with LocalTailnet(tmp_path, key_expiry="3s") as net:
        key = net.create_authkey(reusable=True)
        relay = net.relay
        assert relay is not None

        async def main() -> None:
            a, b = await _client(net, key, "alpha"), await _client(net, key, "beta")
            net.extend_node("beta", "1h")
            sa, sb = _Stream(a, "alpha"), _Stream(b, "beta")
            await _settled(net, sa, sb)
            ra, _wa = await _derp_connect(net.port, a.node)
            await asyncio.sleep(0.3)
            frames, msgs = net.control.stats["map_frames"], (len(sa.msgs), len(sb.msgs))
            expiry = net.node("alpha").key_expiry
            assert expiry is not None and expiry > time.time()
            assert await _closed(ra, expiry - time.time() + 1.0)
            assert time.time() >= expiry - 0.05  # closed by the expiry, not before
            await asyncio.sleep(0.5)
            assert net.control.stats["map_frames"] == frames and (len(sa.msgs), len(sb.msgs)) == msgs
            sa.close()
            sb.close()

        asyncio.run(main())
        assert relay.derp.stats.revoked == 1


def _cli(state: Any, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pytsnet", "localnet", "--state", str(state), *args],
                          check=check, capture_output=True, text=True, timeout=30)


def test_cli_expire_extend_and_durations_against_a_running_server(tmp_path) -> None:
    with LocalTailnet(tmp_path, relay=False) as net:
        t0 = time.time()
        key = _cli(tmp_path, "authkey", "create", "--reusable", "--expiry", "12h").stdout.strip()
        rec = net.store.get_authkey(key)
        assert rec is not None and rec.expires == pytest.approx(t0 + 12 * 3600, abs=5)

        async def main() -> None:
            a = await _client(net, key, "web")
            s = _Stream(a, "web")
            await s.until(lambda m: "Node" in m)
            mark = s.mark()
            await asyncio.to_thread(_cli, tmp_path, "nodes", "expire", "web")
            await s.until(lambda m: m.get("Node", {}).get("Expired"), 2.0, mark)  # the server's DB poll
            rows = [json.loads(x) for x in (await asyncio.to_thread(_cli, tmp_path, "nodes", "list")).stdout
                    .splitlines()]
            assert [(r["hostname"], r["state"]) for r in rows] == [("web", "expired")]
            mark = s.mark()
            await asyncio.to_thread(_cli, tmp_path, "nodes", "extend", str(net.node("web").id), "--for", "2h")
            back = await s.until(lambda m: "Node" in m and not m["Node"].get("Expired"), 2.0, mark)
            assert _ts(back["Node"]["KeyExpiry"]) == pytest.approx(time.time() + 7200, abs=5)
            s.close()

        asyncio.run(main())
        assert _cli(tmp_path, "nodes", "expire", "nosuch", check=False).returncode == 1
        bad = _cli(tmp_path, "nodes", "extend", "web", "--for", "soon", check=False)
        assert bad.returncode == 2 and "not a duration" in bad.stderr
        bad = _cli(tmp_path, "authkey", "create", "--expiry", "0s", check=False)
        assert bad.returncode == 2 and "must be positive" in bad.stderr
        with pytest.raises(NodeNotFound):
            net.expire_node("nosuch")


def test_cli_serve_key_expiry_flag(tmp_path) -> None:
    p = subprocess.Popen([sys.executable, "-m", "pytsnet", "localnet", "--state", str(tmp_path), "--no-relay",
                          "--key-expiry", "90s"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert p.stdout is not None and p.stdout.readline().startswith("localnet control server:")
    finally:
        p.send_signal(2)
        p.wait(timeout=15)
    with LocalTailnet(tmp_path, relay=False) as net:
        assert net.control.key_lifetime == 90
    bad = _cli(tmp_path, "--key-expiry", "forever", check=False)
    assert bad.returncode == 2 and "not a duration" in bad.stderr


def test_cli_approve_and_delete_by_hostname_start_and_end_the_key(tmp_path) -> None:
    with LocalTailnet(tmp_path, relay=False, key_expiry="2h") as net:
        async def main() -> None:
            d = ControlClient(net.control_url)
            await d.connect()
            r = await d.register("", hostname="inter")
            assert r.get("AuthURL") and net.node("inter").key_expiry is None  # pending: no clock yet
            follow = asyncio.ensure_future(d.register("", followup=r["AuthURL"]))
            assert "approved" in (await asyncio.to_thread(_cli, tmp_path, "nodes", "approve", "inter")).stdout
            assert (await asyncio.wait_for(follow, 10))["MachineAuthorized"] is True

        asyncio.run(main())
        assert net.node("inter").key_expiry == pytest.approx(time.time() + 7200, abs=5)
        assert "deleted" in _cli(tmp_path, "nodes", "delete", "inter").stdout
        assert net.nodes() == [] and net.delete("inter") is False
