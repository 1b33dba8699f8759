"""The local control server exposed to strangers: pending logins, Hostinfo churn, many streams.

Anyone who can reach the control port can open Noise sessions with fresh machine keys and ask to
log in. These tests hold the server to its bounds (pending logins take no IP, one per machine, a
bounded pool that never locks out an auth-key login or a known machine, expiry; Hostinfo relays
rate-limited; one snapshot per change) and, in the last one, flood a real server process.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from pytsnet.localnet import LocalTailnet
from pytsnet.localnet.control_server import MAX_PENDING
from pytsnet.localnet.store import Store
from pytsnet.localnet.testclient import ControlClient, fetch_key
from pytsnet.wire.keys import NodePrivate


def run(coro, timeout: float = 60):
    return asyncio.run(asyncio.wait_for(coro, timeout))


def _pending(net: LocalTailnet) -> list:
    return [n for n in net.nodes() if not n.authorized]


def test_pending_logins_take_no_ip_one_per_machine_and_a_bounded_pool(tmp_path) -> None:
    with LocalTailnet(tmp_path, relay=False, max_pending=5) as net:
        key = net.create_authkey(reusable=True)

        async def main() -> None:
            # One machine logging in twice (a new node key): its newer login replaces the older.
            a = await ControlClient.connected(net.control_url)
            r1 = await a.register("", hostname="a1")
            a.node = NodePrivate.generate()
            r2 = await a.register("", hostname="a2")
            assert r1["AuthURL"] != r2["AuthURL"]
            assert [(n.hostname, n.ipv4, n.ipv6) for n in _pending(net)] == [("a2", "", "")]

            # A known machine (it has an authorized node) logs in again interactively with a new key.
            k = await ControlClient.connected(net.control_url)
            assert (await k.register(key, hostname="known"))["MachineAuthorized"] is True
            k.node = NodePrivate.generate()
            assert "AuthURL" in await k.register("", hostname="known-again")

            # Strangers fill the pool: only the newest 5 of theirs stay, none with an address.
            for i in range(9):
                s = await ControlClient.connected(net.control_url)
                assert "AuthURL" in await s.register("", hostname=f"s{i}")
                await s.close()
            pend = {n.hostname: n for n in _pending(net)}
            assert set(pend) == {"known-again", "s4", "s5", "s6", "s7", "s8"}  # a2 and s0-s3 evicted
            assert all(n.ipv4 == "" for n in pend.values())

            # An auth-key login still succeeds with the pool full, and takes nothing from it.
            c = await ControlClient.connected(net.control_url)
            assert (await c.register(key, hostname="legit"))["MachineAuthorized"] is True
            assert len(_pending(net)) == 6
            legit = net.node("legit")
            assert legit.ipv4.startswith("100.") and legit.authorized

            # Approval allocates the address; the known machine's login survived the strangers.
            assert await asyncio.to_thread(net.approve, "known-again")
            again = net.node("known-again")
            assert again.authorized and again.ipv4.startswith("100.")
            assert len({n.ipv4 for n in net.nodes() if n.authorized}) == 3  # known, legit, known-again
            for x in (a, k, c):
                await x.close()

        run(main())


def test_approval_by_the_admin_cli_allocates_the_addresses_the_server_gives(tmp_path) -> None:
    with LocalTailnet(tmp_path, relay=False, ipv6=True) as net:
        async def main() -> None:
            c = await ControlClient.connected(net.control_url)
            await c.register("", hostname="p")
            await c.close()

        run(main())
        cli = Store.open_existing(tmp_path)  # as `nodes approve` opens it: without --ipv6
        try:
            [p] = cli.nodes()
            assert p.ipv4 == "" and p.ipv6 == ""
            done = cli.update_node(p.id, authorized=True, auth_path="")
            assert done is not None and done.ipv4 == "100.64.0.1"
            assert done.ipv6 == "fd7a:115c:a1e0:ab12:4843:cd96:6440:1"
        finally:
            cli.close()


def test_pending_nodes_expire_and_their_followup_is_told(tmp_path) -> None:
    with LocalTailnet(tmp_path, relay=False, pending_ttl=0.6) as net:
        async def main() -> None:
            c = await ControlClient.connected(net.control_url)
            r = await c.register("", hostname="slow")
            assert len(_pending(net)) == 1
            follow = asyncio.ensure_future(c.register("", followup=r["AuthURL"]))
            deadline = time.monotonic() + 10
            while _pending(net) and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            assert net.nodes() == []  # expired, row gone
            assert net.control is not None and net.control.stats["pending_expired"] == 1
            r = await asyncio.wait_for(follow, 5)  # told at once, not after its 30 s wait
            assert "not approved in time" in r["Error"]
            await c.close()

        run(main())


def test_a_pending_login_that_brings_an_auth_key_is_authorized(tmp_path) -> None:
    with LocalTailnet(tmp_path, relay=False) as net:
        key = net.create_authkey(ephemeral=True)

        async def main() -> None:
            c = await ControlClient.connected(net.control_url)
            assert "AuthURL" in await c.register("", hostname="p")
            assert (await c.register(key, hostname="p"))["MachineAuthorized"] is True
            [n] = net.nodes()
            assert n.authorized and n.ephemeral and n.ipv4.startswith("100.")
            await c.close()

        run(main())


def test_held_hostinfo_is_not_lost_when_the_server_stops(tmp_path) -> None:
    key = ""
    with LocalTailnet(tmp_path, relay=False, hostinfo_interval=60) as net:
        key = net.create_authkey(reusable=True)

        async def main() -> None:
            a = await ControlClient.connected(net.control_url)
            await a.register(key, hostname="a")
            for v in ("v0", "v1", "v2"):  # v0 is relayed at once, v1 and v2 are held (v2 wins)
                status, _ = await a.post("/machine/map", a.map_request(
                    Stream=False, OmitPeers=True, Hostinfo={"Hostname": "a", "OSVersion": v}))
                assert status == 200
            assert net.node("a").hostinfo["OSVersion"] == "v0"
            await a.close()

        run(main())
    with LocalTailnet(tmp_path, relay=False) as net:
        assert net.node("a").hostinfo["OSVersion"] == "v2"


def test_a_pending_node_gets_no_map(tmp_path) -> None:
    with LocalTailnet(tmp_path, relay=False) as net:
        async def main() -> None:
            c = await ControlClient.connected(net.control_url)
            await c.register("", hostname="p")
            status, _ = await c.post("/machine/map", c.map_request(Stream=True))
            assert status == 403
            await c.close()

        run(main())


def test_hostinfo_changes_are_rate_limited_only_the_changed_peer_is_sent_and_the_latest_arrives(
        tmp_path) -> None:
    interval = 1.0
    with LocalTailnet(tmp_path, relay=False, hostinfo_interval=interval) as net:
        key = net.create_authkey(reusable=True)

        async def main() -> None:
            chatty, watcher, quiet = [await ControlClient.connected(net.control_url) for _ in range(3)]
            for c, h in ((chatty, "chatty"), (watcher, "watcher"), (quiet, "quiet")):
                await c.register(key, hostname=h)
            ck = chatty.node.public().to_text()
            it = watcher.map_stream(Hostinfo={"Hostname": "watcher"})
            await it.__anext__()  # the full map
            seen: list[tuple[float, dict]] = []

            async def watch() -> None:
                async for msg in it:
                    for p in msg.get("PeersChanged") or []:
                        assert p["Key"] == ck, "an unchanged peer was resent"
                        seen.append((time.monotonic(), p["Hostinfo"]))
                    assert not any("Hostinfo" in p for p in msg.get("PeersChangedPatch") or [])

            w = asyncio.ensure_future(watch())
            t0 = time.monotonic()
            for i in range(30):  # 30 changes in ~1.5 s, as lite map updates (what clients send)
                status, _ = await chatty.post("/machine/map", chatty.map_request(
                    Stream=False, OmitPeers=True, Hostinfo={"Hostname": "chatty", "OSVersion": f"v{i}"}))
                assert status == 200
                await asyncio.sleep(0.05)
            sent_for = time.monotonic() - t0
            deadline = time.monotonic() + interval + 3
            while (not seen or seen[-1][1].get("OSVersion") != "v29") and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            w.cancel()
            assert seen and seen[-1][1].get("OSVersion") == "v29", "the latest Hostinfo never arrived"
            # At most one relay per interval (plus the first, sent at once).
            assert len(seen) <= 2 + int(sent_for / interval), [h.get("OSVersion") for _, h in seen]
            gaps = [b - a for (a, _), (b, _) in itertools.pairwise(seen)]
            assert all(g >= interval * 0.8 for g in gaps), gaps
            assert net.control is not None and net.control.stats["hostinfo_held"] >= 20
            assert net.node("chatty").hostinfo.get("OSVersion") == "v29"
            for c in (chatty, watcher, quiet):
                await c.close()

        run(main())


def test_home_derp_is_never_held_by_the_hostinfo_rate_limit(tmp_path) -> None:
    with LocalTailnet(tmp_path, relay=False, hostinfo_interval=60) as net:
        key = net.create_authkey(reusable=True)

        async def main() -> None:
            a = await ControlClient.connected(net.control_url)
            await a.register(key, hostname="a")
            for region in (1, 2, 3):
                status, _ = await a.post("/machine/map", a.map_request(
                    Stream=False, OmitPeers=True,
                    Hostinfo={"Hostname": "a", "NetInfo": {"PreferredDERP": region}}))
                assert status == 200
                assert net.node("a").home_derp == region
            await a.close()

        run(main())


def test_one_snapshot_per_change_shared_by_all_streams(tmp_path) -> None:
    n_streams = 12
    with LocalTailnet(tmp_path, relay=False) as net:
        key = net.create_authkey(reusable=True)
        ctl = net.control
        assert ctl is not None

        async def main() -> None:
            clients = [await ControlClient.connected(net.control_url) for _ in range(n_streams)]
            its = []
            for i, c in enumerate(clients):
                await c.register(key, hostname=f"n{i}")
                it = c.map_stream(Hostinfo={"Hostname": f"n{i}"})
                await it.__anext__()
                its.append(it)
            await asyncio.sleep(0.5)  # let the streams' online changes settle
            before = net._call(lambda: ctl.stats["snapshots"])
            new_map = {"Regions": {"901": {"RegionID": 901, "RegionCode": "x", "Nodes": []}}}
            net.set_derp_map(new_map)

            async def next_map(it) -> dict:
                while True:
                    msg = await it.__anext__()
                    if "DERPMap" in msg:
                        return msg

            msgs = await asyncio.gather(*(next_map(it) for it in its))
            assert all(m["DERPMap"] == new_map for m in msgs)
            built = net._call(lambda: ctl.stats["snapshots"]) - before
            assert built == 1, f"{built} snapshots for one change and {n_streams} streams"
            for c in clients:
                await c.close()

        run(main())


def test_an_older_database_with_not_null_ipv4_is_migrated(tmp_path) -> None:
    s = Store(tmp_path)
    u = s.ensure_user()
    a = s.add_node(machine_key="mkey:" + "1" * 64, node_key="nodekey:" + "2" * 64, user_id=u.id,
                   hostname="old", authorized=True, ephemeral=False)
    s.close()
    db = sqlite3.connect(tmp_path / "localnet.db")  # put back the older schema (ipv4 NOT NULL)
    sql = db.execute("SELECT sql FROM sqlite_master WHERE name='nodes'").fetchone()[0]
    db.executescript("DROP INDEX nodes_machine; ALTER TABLE nodes RENAME TO n0;"
                     + sql.replace("ipv4 TEXT UNIQUE", "ipv4 TEXT NOT NULL UNIQUE")
                     + "; INSERT INTO nodes SELECT * FROM n0; DROP TABLE n0;")
    db.close()
    s2 = Store(tmp_path)
    assert s2.node(a.id) == a
    p = s2.add_pending_node(max_pending=4, machine_key="mkey:" + "3" * 64, node_key="nodekey:" + "4" * 64,
                            user_id=u.id, hostname="p", ephemeral=False)
    assert p.ipv4 == "" and s2.update_node(p.id, authorized=True).ipv4 == "100.64.0.2"  # type: ignore[union-attr]
    s2.close()


# -- the flood against a server in its own process -------------------------------------------------

SERVER = """
import json, sys
from pytsnet.localnet import LocalTailnet
from pytsnet.localnet.limits import ConnectionLimits
# the idle sessions must stay open for the whole run (they are the load), whatever the machine's speed
net = LocalTailnet(sys.argv[1], limits=ConnectionLimits(idle_timeout=600)).start()
print(net.control_url, net.create_authkey(reusable=True), flush=True)
for line in sys.stdin:
    print(json.dumps(net._call(lambda: dict(net.control.stats))), flush=True)
net.close()
"""
FLOOD = 2000
IDLE_SESSIONS = 100
CONCURRENCY = 24
RSS_BOUND = 40 << 20
"""Server RSS growth allowed for the flood plus the idle sessions. What it must hold: 100 Noise +
HTTP/2 sessions (tens of KiB each), at most ``MAX_PENDING`` pending rows (on disk, in SQLite's
page cache of ≤ 2 MiB), and the allocator's high-water mark of ~24 concurrent handshakes. Before
the limits every one of the 2,000 logins took a node row and an IP, and woke every stream."""


def _rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def test_flood_of_fresh_machine_keys_and_idle_sessions_bounded_and_others_served(tmp_path) -> None:
    proc = subprocess.Popen([sys.executable, "-c", SERVER, str(tmp_path)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        assert proc.stdout is not None and proc.stdin is not None
        url, key = proc.stdout.readline().split()

        def stats() -> dict:
            proc.stdin.write("stats\n")  # type: ignore[union-attr]
            proc.stdin.flush()  # type: ignore[union-attr]
            return dict(json.loads(proc.stdout.readline()))  # type: ignore[union-attr]

        async def main() -> dict:
            server_key = await fetch_key(url)

            async def stranger(i: int) -> None:
                c = ControlClient(url)  # a fresh machine key each time
                await c.connect(server_key)
                r = await c.register("", hostname=f"stranger{i}")
                assert r.get("AuthURL"), r
                await c.close()

            # Warm up (imports, allocator, SQLite cache), then take the baseline.
            for i in range(30):
                await stranger(-i)
            first = ControlClient(url)
            await first.connect(server_key)
            await first.register(key, hostname="first")
            first_map = first.map_stream()
            await first_map.__anext__()
            await asyncio.sleep(0.5)
            base = _rss(proc.pid)

            idle = [ControlClient(url) for _ in range(IDLE_SESSIONS)]
            await asyncio.gather(*(c.connect(server_key) for c in idle))

            done = 0
            work = iter(range(FLOOD))

            async def worker() -> None:
                nonlocal done
                for i in work:
                    await stranger(i)
                    done += 1

            flood = asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
            while done < FLOOD // 4:
                await asyncio.sleep(0.05)
            # A legitimate login in the middle of the flood: auth key, register, a full map.
            t0, started_at = time.monotonic(), done
            legit = ControlClient(url)
            await legit.connect(server_key)
            assert (await legit.register(key, hostname="legit"))["MachineAuthorized"] is True
            it = legit.map_stream()
            full = await it.__anext__()
            served_in = time.monotonic() - t0
            finished_at = done
            assert {p["Name"].split(".")[0] for p in full["Peers"]} == {"first"}
            # the running node hears of the new peer while the flood goes on
            while not any(p["Name"].startswith("legit.") for p in (await first_map.__anext__())
                          .get("PeersChanged") or []):
                pass
            await flood
            await asyncio.sleep(0.5)
            grown = _rss(proc.pid) - base
            for c in (*idle, legit, first):
                await c.close()
            return {"grown": grown, "served_in": served_in, "started_at": started_at,
                    "finished_at": finished_at}

        t = time.monotonic()
        r = run(main(), timeout=240)
        elapsed = time.monotonic() - t
        st = stats()
        print(f"\nflood: {FLOOD} logins + {IDLE_SESSIONS} idle sessions in {elapsed:.1f} s; server RSS "
              f"+{r['grown'] / 2**20:.1f} MiB; legit login served in {r['served_in']:.2f} s "
              f"(flood at {r['started_at']}..{r['finished_at']}); {st}")
        assert r["finished_at"] < FLOOD, "the legitimate login was not served while the flood was on"
        assert r["served_in"] < 10
        assert r["grown"] < RSS_BOUND, f"server RSS grew {r['grown'] / 2**20:.1f} MiB"
        assert st["noise_sessions"] >= FLOOD + IDLE_SESSIONS
        store = Store.open_existing(tmp_path)
        try:
            nodes = store.nodes()
        finally:
            store.close()
        pending = [n for n in nodes if not n.authorized]
        assert len(pending) <= MAX_PENDING and all(n.ipv4 == "" for n in pending)
        assert sorted(n.hostname for n in nodes if n.ipv4) == ["first", "legit"]
    finally:
        proc.kill()
        proc.wait()
