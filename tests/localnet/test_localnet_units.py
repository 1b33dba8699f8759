"""Store, auth keys, policy and netmap composition, without a server."""

from __future__ import annotations

import time

import pytest

from pytsnet.localnet.authkeys import ERR_EXPIRED, ERR_INVALID, ERR_USED, AuthKeyRejected, consume_authkey
from pytsnet.localnet.netmap import SentState, Tailnet, delta, full_map
from pytsnet.localnet.policy import FILTER_ALLOW_ALL, Policy, PolicyError
from pytsnet.localnet.store import Store

NK = "nodekey:" + "11" * 32
MK = "mkey:" + "22" * 32


def _add(store: Store, i: int, **kw: object) -> object:
    return store.add_node(machine_key=f"mkey:{i:064x}", node_key=f"nodekey:{i:064x}", user_id=1,
                          hostname=f"h{i}", authorized=True, ephemeral=False, **kw)  # type: ignore[arg-type]


def test_store_persists_nodes_and_ips_across_restart(tmp_path):
    s = Store(tmp_path)
    u = s.ensure_user()
    a = s.add_node(machine_key=MK, node_key=NK, user_id=u.id, hostname="a", authorized=True, ephemeral=False)
    b = _add(s, 7)
    s.close()
    s2 = Store(tmp_path)
    again = s2.node_by_key(NK)
    assert again is not None and again.ipv4 == a.ipv4 == "100.64.0.1"
    assert s2.node(b.id).ipv4 == "100.64.0.2"  # type: ignore[attr-defined, union-attr]
    c = _add(s2, 8)
    assert c.ipv4 == "100.64.0.3"  # type: ignore[attr-defined]
    s2.delete_node(b.id)  # type: ignore[attr-defined]
    assert _add(s2, 9).ipv4 == "100.64.0.4"  # type: ignore[attr-defined]  # no reuse of a fresh hole first


def test_store_ipv6_is_4to6_mapping(tmp_path):
    s = Store(tmp_path, ipv6=True)
    s.ensure_user()
    n = _add(s, 1)
    assert n.ipv6 == "fd7a:115c:a1e0:ab12:4843:cd96:6440:1"  # 100.64.0.1 = 0x64 0x40 0x00 0x01  # type: ignore[attr-defined]


def test_authkey_semantics(tmp_path):
    s = Store(tmp_path)
    u = s.ensure_user()
    single = s.create_authkey(user_id=u.id)
    reusable = s.create_authkey(user_id=u.id, reusable=True, tags=["tag:ci"])
    expired = s.create_authkey(user_id=u.id, expires=time.time() - 1)
    consume_authkey(s, single.key)
    with pytest.raises(AuthKeyRejected, match=ERR_USED):
        consume_authkey(s, single.key)
    for _ in range(3):
        assert consume_authkey(s, reusable.key).tags == ["tag:ci"]
    with pytest.raises(AuthKeyRejected, match=ERR_EXPIRED):
        consume_authkey(s, expired.key)
    with pytest.raises(AuthKeyRejected, match=ERR_INVALID):
        consume_authkey(s, "tskey-auth-nope")


def test_policy_default_and_compiled(tmp_path):
    s = Store(tmp_path)
    u = s.ensure_user("alice@localnet")
    a = _add(s, 1, tags=["tag:web"])
    b = _add(s, 2)
    assert Policy.load(tmp_path).filter_rules(s.nodes(), s.users()) == FILTER_ALLOW_ALL
    pol = Policy.parse({"groups": {"group:eng": ["alice@localnet"]},
                        "acls": [{"action": "accept", "src": ["group:eng"], "dst": ["tag:web:80,443"]},
                                 {"action": "accept", "src": ["10.0.0.0/8"], "dst": ["*:22-23"]}]})
    rules = pol.filter_rules(s.nodes(), [u])
    assert rules == [
        {"SrcIPs": [b.ipv4], "DstPorts": [{"IP": a.ipv4, "Ports": {"First": 80, "Last": 80}},  # type: ignore
                                          {"IP": a.ipv4, "Ports": {"First": 443, "Last": 443}}]},  # type: ignore
        {"SrcIPs": ["10.0.0.0/8"], "DstPorts": [{"IP": "*", "Ports": {"First": 22, "Last": 23}}]},
    ]
    for bad in ({"acls": [{"action": "drop", "src": [], "dst": []}]},
                {"acls": [{"src": ["not an ip"], "dst": ["*:*"]}]},
                {"acls": [{"src": ["*"], "dst": ["*:99999"]}]}, []):
        with pytest.raises(PolicyError):
            Policy.parse(bad)


def _net(s: Store, online: set[int]) -> Tailnet:
    return Tailnet(nodes=s.nodes(), users=s.users(), online=online, packet_filter=FILTER_ALLOW_ALL,
                   derp_map={"Regions": {}})


def test_netmap_full_then_deltas(tmp_path):
    s = Store(tmp_path)
    s.ensure_user()
    a, b = _add(s, 1), _add(s, 2)
    st = SentState()
    m = full_map(a.id, _net(s, {a.id}), st, cap=130)  # type: ignore[attr-defined]
    assert m["Node"]["ID"] == a.id and m["Node"]["Cap"] == 130  # type: ignore[attr-defined]
    assert m["Node"]["Name"] == "h1.localnet.ts.net." and m["Node"]["MachineAuthorized"] is True
    assert [p["ID"] for p in m["Peers"]] == [b.id] and m["PacketFilter"] == FILTER_ALLOW_ALL  # type: ignore
    assert delta(a.id, _net(s, {a.id}), st, cap=130) is None  # nothing changed
    # endpoints + online: a patch, not a full node
    s.update_node(b.id, endpoints=["10.0.0.2:41641"], home_derp=900)  # type: ignore[attr-defined]
    d = delta(a.id, _net(s, {a.id, b.id}), st, cap=130)  # type: ignore[attr-defined]
    assert d == {"PeersChangedPatch": [{"NodeID": b.id, "DERPRegion": 900,  # type: ignore[attr-defined]
                                         "Endpoints": ["10.0.0.2:41641"], "Online": True}]}
    # a new peer: PeersChanged with the full node
    c = _add(s, 3)
    d = delta(a.id, _net(s, {a.id, b.id}), st, cap=130)  # type: ignore[attr-defined]
    assert d is not None and [p["ID"] for p in d["PeersChanged"]] == [c.id]  # type: ignore[attr-defined]
    # deleted peer: PeersRemoved
    s.delete_node(b.id)  # type: ignore[attr-defined]
    assert delta(a.id, _net(s, {a.id}), st, cap=130) == {"PeersRemoved": [b.id]}  # type: ignore[attr-defined]
    # self deleted: the stream must end
    s.delete_node(a.id)  # type: ignore[attr-defined]
    with pytest.raises(KeyError):
        delta(a.id, _net(s, set()), st)  # type: ignore[attr-defined]


def test_duplicate_hostnames_get_unique_names(tmp_path):
    s = Store(tmp_path)
    s.ensure_user()
    for i in (1, 2):
        s.add_node(machine_key=f"mkey:{i:064x}", node_key=f"nodekey:{i:064x}", user_id=1, hostname="Web Box",
                   authorized=True, ephemeral=False)
    names = [full_map(n.id, _net(s, set()), SentState())["Node"]["Name"] for n in s.nodes()]
    assert names == ["web-box.localnet.ts.net.", "web-box-2.localnet.ts.net."]


@pytest.mark.parametrize("status", [200, 204, 404, 426])
def test_every_plain_response_tells_the_client_the_connection_closes(status: int) -> None:
    """localnet's HTTP servers answer one request per connection: a response without
    ``Connection: close`` (the 204 of ``/generate_204`` once) let a client reuse the connection and
    race the server's close ("Server disconnected without sending a response")."""
    import h11

    from pytsnet.localnet import http1

    client = h11.Connection(h11.CLIENT)
    client.send(h11.Request(method="GET", target="/", headers=[("Host", "x")]))
    client.send(h11.EndOfMessage())
    client.receive_data(http1.response(status, b"" if status == 204 else b"body\n"))
    events = []
    while (ev := client.next_event()) is not h11.NEED_DATA and not isinstance(ev, h11.EndOfMessage):
        events.append(ev)
    assert isinstance(events[0], h11.Response) and events[0].status_code == status
    assert client.their_state is h11.MUST_CLOSE
