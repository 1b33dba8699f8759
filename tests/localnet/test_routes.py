"""Subnet routes and exit nodes on the local control server: advertisement, approval (method, CLI,
policy autoApprovers), AllowedIPs/PrimaryRoutes in peers' and the node's own maps, primary election
with failover, and peers told within a second when a node's map stream ends."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pytsnet.localnet import LocalTailnet
from pytsnet.localnet.policy import INTERNET, Policy, PolicyError
from pytsnet.localnet.routes import RouteError, parse_advertised
from pytsnet.localnet.testclient import ControlClient

JSON = dict[str, Any]
SUBNET = "10.1.2.0/24"


def run(coro: Any) -> Any:
    """A hang guard, not a speed bound: a scenario may start six CLI processes (a Python start-up and
    its imports each, seconds apiece on a loaded 2-CPU machine)."""
    return asyncio.run(asyncio.wait_for(coro, 90))


class Watcher:
    """A client's long poll, folded into the client's current view of its peers and itself."""

    def __init__(self, client: ControlClient) -> None:
        self.client = client
        self.peers: dict[int, JSON] = {}
        self.self_node: JSON = {}
        self.changed = asyncio.Event()
        self.task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        async for m in self.client.map_stream():
            if "Node" in m:
                self.self_node = m["Node"]
            if "Peers" in m:
                self.peers = {p["ID"]: p for p in m["Peers"]}
            for p in m.get("PeersChanged", []):
                self.peers[p["ID"]] = p
            for pid in m.get("PeersRemoved", []):
                self.peers.pop(pid, None)
            for patch in m.get("PeersChangedPatch", []):
                peer = self.peers.setdefault(patch["NodeID"], {"ID": patch["NodeID"]})
                if "Online" in patch:
                    peer["Online"] = patch["Online"]
            self.changed.set()
            self.changed = asyncio.Event()

    async def until(self, pred: Callable[[], bool], timeout: float = 5.0) -> float:
        """Wait until ``pred()`` holds for the view; the seconds it took."""
        t0 = time.monotonic()
        while not pred():
            left = timeout - (time.monotonic() - t0)
            if left <= 0:
                raise AssertionError(f"view never matched: peers={self.peers} self={self.self_node}")
            ev = self.changed
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(ev.wait(), left)
        return time.monotonic() - t0

    def allowed(self, node_id: int) -> list[str]:
        return list(self.peers.get(node_id, {}).get("AllowedIPs", []))

    def primary(self, node_id: int) -> list[str]:
        return list(self.peers.get(node_id, {}).get("PrimaryRoutes", []))

    async def close(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)
        await self.client.close()
        await asyncio.gather(self.client._pump, return_exceptions=True)


async def join(net: LocalTailnet, key: str, hostname: str, routes: list[str] | None = None,
               watch: bool = True) -> tuple[ControlClient, Watcher | None, int]:
    c = await ControlClient.connected(net.control_url)
    r = await c.register(key, hostname=hostname,
                         hostinfo={"RoutableIPs": routes} if routes is not None else None)
    assert r["MachineAuthorized"] is True, r
    node_id = net.node(hostname).id
    w = Watcher(c) if watch else None
    if w is not None:
        await w.until(lambda: bool(w.self_node))
    return c, w, node_id


def addrs(net: LocalTailnet, hostname: str) -> list[str]:
    n = net.node(hostname)
    return [f"{n.ipv4}/32"] + ([f"{n.ipv6}/128"] if n.ipv6 else [])


def test_parse_advertised_keeps_canonical_prefixes_and_counts_the_rest():
    raw = [SUBNET, "10.1.2.1/24", "garbage", 7, "100.64.0.0/24", "fd7a:115c:a1e0::/64", "10.9.9.9/32",
           "0.0.0.0/0", "::/0", SUBNET, "fe80::1%eth0/64", "2001:db8::/32"]
    good, bad = parse_advertised(raw)
    assert good == ["0.0.0.0/0", SUBNET, "10.9.9.9/32", "::/0", "2001:db8::/32"]
    assert bad == 6  # host bits set, garbage, a number, two tailnet ranges, a zone
    assert parse_advertised("10.0.0.0/8") == ([], 1)
    assert parse_advertised(None) == ([], 0)
    many, bad = parse_advertised([f"10.{i // 256}.{i % 256}.0/24" for i in range(300)])
    assert len(many) == 256 and bad == 44


def test_advertised_recorded_unapproved_not_in_allowed_ips_then_approved_and_unapproved(net):
    key = net.create_authkey(reusable=True)

    async def main() -> None:
        _, peer, _ = await join(net, key, "peer")
        rc, rw, rid = await join(net, key, "router", [SUBNET, "10.1.2.1/24", "not-a-prefix"])
        assert net.routes("router").advertised == [SUBNET]
        assert net.control.stats["routes_ignored"] == 2
        await peer.until(lambda: rid in peer.peers)
        assert peer.allowed(rid) == addrs(net, "router")  # advertised, not approved: not routed
        assert "PrimaryRoutes" not in peer.peers[rid]
        # relayed Hostinfo keeps only what Go's netip.ParsePrefix takes (one bad entry fails Go's map)
        assert peer.peers[rid]["Hostinfo"]["RoutableIPs"] == [SUBNET, "10.1.2.1/24"]

        with pytest.raises(RouteError, match=r"does not advertise 10\.9\.0\.0/16"):
            await asyncio.to_thread(net.approve_routes, "router", ["10.9.0.0/16"])
        with pytest.raises(RouteError, match="not a route prefix"):
            await asyncio.to_thread(net.approve_routes, rid, ["10.1.2.1/24"])
        assert net.routes(rid).approved == []

        st = await asyncio.to_thread(net.approve_routes, rid, [SUBNET])
        assert (st.advertised, st.approved, st.primary) == ([SUBNET], [SUBNET], [SUBNET])
        await peer.until(lambda: peer.allowed(rid) == [*addrs(net, "router"), SUBNET])
        assert peer.primary(rid) == [SUBNET]
        await rw.until(lambda: rw.self_node.get("PrimaryRoutes") == [SUBNET])  # the node itself too
        assert rw.self_node["AllowedIPs"] == [*addrs(net, "router"), SUBNET]

        # the router stops advertising (a lite update): the approval stays but is not effective
        await rc.lite_update(Hostinfo={"Hostname": "router"})
        await peer.until(lambda: peer.allowed(rid) == addrs(net, "router"))
        assert net.routes(rid).approved == [SUBNET] and net.routes(rid).advertised == []
        await rc.lite_update(Hostinfo={"Hostname": "router", "RoutableIPs": [SUBNET]})
        await peer.until(lambda: peer.allowed(rid) == [*addrs(net, "router"), SUBNET])

        await asyncio.to_thread(net.approve_routes, "router", [])  # an empty list unapproves
        await peer.until(lambda: peer.allowed(rid) == addrs(net, "router") and not peer.primary(rid))
        for w in (peer, rw):
            await w.close()

    run(main())


def test_exit_node_approval_puts_both_default_routes_in_allowed_ips(net):
    key = net.create_authkey(reusable=True)

    async def main() -> None:
        _, peer, _ = await join(net, key, "peer")
        _, ew, eid = await join(net, key, "exit", ["0.0.0.0/0", "::/0"])
        st = await asyncio.to_thread(net.approve_routes, "exit", ["0.0.0.0/0"])  # one switch: both
        assert st.approved == ["0.0.0.0/0", "::/0"] and st.primary == []
        await peer.until(lambda: peer.allowed(eid) == [*addrs(net, "exit"), "0.0.0.0/0", "::/0"])
        assert "PrimaryRoutes" not in peer.peers[eid]  # exit routes have no primary
        for w in (peer, ew):
            await w.close()

    run(main())


def test_auto_approval_by_policy_tags_users_and_exit_node(tmp_path):
    (tmp_path / "policy.json").write_text(json.dumps({
        "groups": {"group:net": ["ops@localnet"]},
        "autoApprovers": {"routes": {"10.0.0.0/8": ["tag:router"], "192.168.0.0/16": ["group:net"]},
                          "exitNode": ["tag:exit"]}}))
    with LocalTailnet(tmp_path, keepalive_interval=0.5, relay=False) as net:
        router = net.create_authkey(tags=["tag:router"])
        exit_key = net.create_authkey(tags=["tag:exit"])
        ops = net.create_authkey(user="ops@localnet")
        plain = net.create_authkey(reusable=True)

        async def main() -> None:
            _, peer, _ = await join(net, plain, "peer")
            _, rw, rid = await join(net, router, "router", [SUBNET, "192.168.1.0/24"])  # online
            _, _, oid = await join(net, ops, "opsbox", ["192.168.7.0/24", "10.5.0.0/16"], watch=False)
            _, _, xid = await join(net, exit_key, "exit", ["0.0.0.0/0", "::/0", "10.7.0.0/16"], watch=False)
            _, _, uid = await join(net, plain, "user", ["10.8.0.0/16", "0.0.0.0/0", "::/0"], watch=False)
            assert net.routes(rid).approved == [SUBNET]  # tag:router covers 10/8, not 192.168/16
            assert net.routes(oid).approved == ["192.168.7.0/24"]  # the user is in group:net
            assert net.routes(xid).approved == ["0.0.0.0/0", "::/0"]
            assert net.routes(uid).approved == []  # nobody auto-approves an untagged admin's routes
            assert peer is not None
            await peer.until(lambda: peer.allowed(xid) == [*addrs(net, "exit"), "0.0.0.0/0", "::/0"])
            await peer.until(lambda: peer.allowed(rid) == [*addrs(net, "router"), SUBNET]
                             and peer.allowed(uid) == addrs(net, "user"))
            # opsbox has no map stream (offline): its approved subnet has no primary, so no route
            assert peer.allowed(oid) == addrs(net, "opsbox") and net.routes(oid).primary == []
            assert rw is not None
            for w in (peer, rw):
                await w.close()

        run(main())


async def _cut(client: ControlClient) -> None:
    """The connection reset under the client (as a killed process's kernel does)."""
    client.writer.transport.abort()
    client._pump.cancel()


def test_primary_election_sticky_with_failover_and_online_false_within_a_second(net):
    key = net.create_authkey(reusable=True)

    async def main() -> None:
        _, peer, _ = await join(net, key, "peer")
        r1c, r1w, r1 = await join(net, key, "r1", [SUBNET])
        _, r2w, r2 = await join(net, key, "r2", [SUBNET])
        await asyncio.to_thread(net.approve_routes, r1, [SUBNET])
        await asyncio.to_thread(net.approve_routes, r2, [SUBNET])
        await peer.until(lambda: SUBNET in peer.allowed(r1))
        assert SUBNET not in peer.allowed(r2) and peer.primary(r1) == [SUBNET] and not peer.primary(r2)
        assert net.routes("r1").primary == [SUBNET] and net.routes("r2").primary == []

        await _cut(r1c)
        took = await peer.until(lambda: peer.peers[r1].get("Online") is False
                                and SUBNET in peer.allowed(r2) and SUBNET not in peer.allowed(r1))
        assert took < 1.0, took
        assert net.routes("r2").primary == [SUBNET]
        await r2w.until(lambda: r2w.self_node.get("PrimaryRoutes") == [SUBNET])

        back = ControlClient(net.control_url, machine=r1c.machine)  # r1 restarts with its keys
        back.node, back.disco = r1c.node, r1c.disco
        await back.connect()
        r1w2 = Watcher(back)
        await peer.until(lambda: peer.peers[r1].get("Online") is True)
        assert SUBNET in peer.allowed(r2) and SUBNET not in peer.allowed(r1)  # sticky: r2 keeps it
        for w in (peer, r1w, r1w2, r2w):
            await w.close()

    run(main())


CHILD = """
import asyncio, sys
from pytsnet.localnet.testclient import ControlClient

async def main():
    c = ControlClient(sys.argv[1])
    await c.connect()
    await c.register(sys.argv[2], hostname="child", hostinfo={"RoutableIPs": ["0.0.0.0/0", "::/0"]})
    async for m in c.map_stream():
        if "Node" in m:
            print("streaming", flush=True)

asyncio.run(main())
"""


def test_killed_exit_node_process_goes_offline_for_peers_within_a_second(net):
    key = net.create_authkey(reusable=True, tags=["tag:exit"])
    net.set_policy({"autoApprovers": {"exitNode": ["tag:exit"]}})

    async def main() -> None:
        _, peer, _ = await join(net, key, "peer")
        child = subprocess.Popen([sys.executable, "-c", CHILD, net.control_url, key],
                                 stdout=subprocess.PIPE, text=True, start_new_session=True)
        try:
            line = await asyncio.to_thread(child.stdout.readline)  # type: ignore[union-attr]
            assert line.strip() == "streaming"
            cid = net.node("child").id
            await peer.until(lambda: peer.peers.get(cid, {}).get("Online") is True
                             and "0.0.0.0/0" in peer.allowed(cid))
            os.kill(child.pid, signal.SIGKILL)
            took = await peer.until(lambda: peer.peers[cid].get("Online") is False)
            assert took < 1.0, took
            assert "0.0.0.0/0" in peer.allowed(cid)  # still an exit node; clients check Online
        finally:
            child.kill()
            child.wait()
        await peer.close()

    run(main())


def test_approvals_and_primaries_survive_a_restart_and_old_databases_migrate(tmp_path):
    import sqlite3

    with LocalTailnet(tmp_path, relay=False) as net:
        key = net.create_authkey()

        async def main() -> None:
            _c, w, _ = await join(net, key, "router", [SUBNET])
            await asyncio.to_thread(net.approve_routes, "router", [SUBNET])
            assert w is not None
            await w.until(lambda: w.self_node.get("PrimaryRoutes") == [SUBNET])
            await w.close()

        run(main())
    with LocalTailnet(tmp_path, relay=False) as net:
        st = net.routes("router")
        assert (st.advertised, st.approved) == ([SUBNET], [SUBNET])
    db = sqlite3.connect(tmp_path / "localnet.db")  # an older database: no route columns
    db.execute("ALTER TABLE nodes DROP COLUMN approved_routes")
    db.execute("ALTER TABLE nodes DROP COLUMN advertised_routes")
    db.commit()
    db.close()
    with LocalTailnet(tmp_path, relay=False) as net:
        assert net.routes("router").advertised == [] and net.node("router").hostname == "router"


def cli(state: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pytsnet", "localnet", "--state", str(state), *args],
                          capture_output=True, text=True, timeout=60)


def test_cli_routes_and_approve_routes_against_a_running_server(net):
    key = net.create_authkey(reusable=True)

    async def main() -> None:
        _, peer, _ = await join(net, key, "peer")
        _, rw, rid = await join(net, key, "router", [SUBNET, "0.0.0.0/0", "::/0"])
        out = await asyncio.to_thread(cli, net.state_dir, "nodes", "routes", "router")
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout) == {"id": rid, "hostname": "router", "primary": [],
                                          "advertised": ["0.0.0.0/0", SUBNET, "::/0"], "approved": []}
        bad = await asyncio.to_thread(cli, net.state_dir, "nodes", "approve-routes", "router", "10.3.0.0/16")
        assert bad.returncode != 0 and "does not advertise 10.3.0.0/16" in bad.stderr
        ok = await asyncio.to_thread(cli, net.state_dir, "nodes", "approve-routes", str(rid), SUBNET, "::/0")
        assert ok.returncode == 0, ok.stderr
        assert json.loads(ok.stdout)["approved"] == ["0.0.0.0/0", SUBNET, "::/0"]
        # the server (another process wrote the database) picks it up and tells the peers
        await peer.until(lambda: peer.allowed(rid) == [*addrs(net, "router"), "0.0.0.0/0", SUBNET, "::/0"])
        out = await asyncio.to_thread(cli, net.state_dir, "nodes", "routes", str(rid))
        assert json.loads(out.stdout)["primary"] == [SUBNET]
        none = await asyncio.to_thread(cli, net.state_dir, "nodes", "approve-routes", "router")
        assert none.returncode == 0 and json.loads(none.stdout)["approved"] == []
        await peer.until(lambda: peer.allowed(rid) == addrs(net, "router"))
        missing = await asyncio.to_thread(cli, net.state_dir, "nodes", "routes", "nosuch")
        assert missing.returncode == 1 and "no node named 'nosuch'" in missing.stdout
        for w in (peer, rw):
            await w.close()

    run(main())


@pytest.mark.parametrize(("doc", "where"), [
    ({"autoApprovers": []}, "autoApprovers must be a JSON object"),
    ({"autoApprovers": {"route": {}}}, "autoApprovers: unknown keys ['route']"),
    ({"autoApprovers": {"routes": {"10.0.0.1/8": ["tag:x"]}}}, "autoApprovers.routes['10.0.0.1/8']"),
    ({"autoApprovers": {"routes": {"10.0.0.0": ["tag:x"]}}}, "autoApprovers.routes['10.0.0.0']"),
    ({"autoApprovers": {"routes": {"10.0.0.0/8": "tag:x"}}}, "autoApprovers.routes['10.0.0.0/8']"),
    ({"autoApprovers": {"routes": {"10.0.0.0/8": ["*"]}}}, "autoApprovers.routes['10.0.0.0/8']: '*'"),
    ({"autoApprovers": {"exitNode": ["tag:"]}}, "autoApprovers.exitNode: 'tag:'"),
    ({"autoApprovers": {"exitNode": "tag:x"}}, "autoApprovers.exitNode"),
    ({"acls": [{"src": ["autogroup:internet"], "dst": ["*:*"]}]}, "acls[0]: autogroup:internet is only"),
    ({"acls": [{"src": ["*"], "dst": ["autogroup:internets:*"]}]}, "acls[0]: unsupported"),
    ({"acls": [{"src": ["*"], "dst": ["10.1.2.1/24:*"]}]}, "acls[0]: '10.1.2.1/24'"),
])
def test_policy_route_sections_errors_name_the_location(doc, where):
    with pytest.raises(PolicyError) as e:
        Policy.parse(doc)
    assert where in str(e.value)


def test_filter_renders_cidr_and_autogroup_internet_destinations(tmp_path):
    pol = Policy.parse({"acls": [
        {"src": ["*"], "dst": [f"{SUBNET}:22,80", "autogroup:internet:*"]}]})
    with LocalTailnet(tmp_path, relay=False) as net:
        rules = pol.filter_rules(net.nodes(), net.store.users())
    [rule] = rules
    assert rule["SrcIPs"] == ["*"]
    dsts = [(d["IP"], d["Ports"]["First"], d["Ports"]["Last"]) for d in rule["DstPorts"]]
    assert dsts[:2] == [(SUBNET, 22, 22), (SUBNET, 80, 80)]
    internet = [ip for ip, lo, hi in dsts[2:] if (lo, hi) == (0, 65535)]
    assert internet == list(INTERNET) and len(dsts) == 2 + len(INTERNET)
    import ipaddress
    nets = [ipaddress.ip_network(p) for p in internet]
    inside = lambda a: any(ipaddress.ip_address(a) in n for n in nets)  # noqa: E731
    for public in ("198.51.100.1", "192.0.2.8", "172.32.0.1", "203.0.113.9", "2001:db8::1111"):
        assert inside(public), public
    for private in ("10.1.2.3", "172.16.5.5", "192.168.1.1", "100.64.0.7", "100.100.100.100",
                    "169.254.1.1", "fd7a:115c:a1e0::1", "fe80::1", "fc00::1"):
        assert not inside(private), private
    assert Policy.allow_all().filter_rules([], []) == [
        {"SrcIPs": ["*"], "DstPorts": [{"IP": "*", "Ports": {"First": 0, "Last": 65535}}]}]


def test_routes_of_a_node_approved_interactively_are_recorded_at_its_first_map(net):
    key = net.create_authkey()

    async def main() -> None:
        _, peer, _ = await join(net, key, "peer")
        c = await ControlClient.connected(net.control_url)
        r = await c.register("", hostname="later", hostinfo={"RoutableIPs": ["0.0.0.0/0", "::/0"]})
        assert "AuthURL" in r
        assert net.routes("later").advertised == []  # pending: nothing recorded, no IP
        await asyncio.to_thread(net.approve, "later")
        w = Watcher(c)  # its first map request carries the same Hostinfo (ignored: already stored)
        await w.until(lambda: bool(w.self_node))
        assert net.routes("later").advertised == ["0.0.0.0/0", "::/0"]
        await asyncio.to_thread(net.approve_routes, "later", ["::/0"])
        lid = net.node("later").id
        await peer.until(lambda: peer.allowed(lid) == [*addrs(net, "later"), "0.0.0.0/0", "::/0"])
        for x in (peer, w):
            await x.close()

    run(main())


_prefixes = st.sampled_from(["10.0.0.0/8", "10.0.0.1/8", "0.0.0.0/0", "::/0", "fd7a:115c:a1e0::/48", "x", "",
                             "100.64.0.0/10", "2001:db8::/32", "10.0.0.0", "1.2.3.4/33", "fe80::/10%a"])
_leaf = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True), st.text(max_size=10),
                  _prefixes, st.sampled_from(["tag:x", "tag:", "group:g", "a@b", "*", "autogroup:member"]))
_any = st.recursive(_leaf, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                   st.dictionaries(st.one_of(st.text(max_size=8), _prefixes),
                                                                   inner, max_size=4)), max_leaves=12)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(doc=st.one_of(st.fixed_dictionaries({}, optional={"routes": st.one_of(
    st.dictionaries(_prefixes, st.one_of(st.lists(_leaf, max_size=3), _any), max_size=3), _any),
    "exitNode": st.one_of(st.lists(_leaf, max_size=3), _any), "other": _any}), _any),
       advertised=st.one_of(st.lists(_leaf, max_size=6), _any))
def test_fuzz_auto_approvers_and_advertised_routes_only_typed_errors(doc, advertised):
    from pytsnet.localnet.store import Node, User

    routes, _ = parse_advertised(advertised)  # never raises
    try:
        pol = Policy.parse({"groups": {"group:g": ["a@b"]}, "autoApprovers": doc})
    except PolicyError as e:
        assert "\n" not in str(e) and len(str(e)) < 1000
        return
    for tags in ([], ["tag:x"]):
        node = Node(1, "n1", "mkey:1", "nodekey:1", "", 1, "a", "100.64.0.1", "", True, False, tags=tags)
        approved = pol.auto_approved(node, routes, [User(1, "a@b", "A", 0.0)])
        assert set(approved) <= set(routes)
