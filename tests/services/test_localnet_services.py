"""localnet's service table (sans network): Go's ServicesHash format, which advertisement control
recognises (subsets of what a node's tags allow, defined ports only), VIPs kept across restarts and
out of node allocation, and what goes in maps (service-host cap on the host, VIP route, DNS name)."""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
from pathlib import Path

import pytest

from pytsnet.localnet.services import (
    SERVICE_V4,
    ServiceDef,
    ServiceTable,
    advertised,
    canonical_ports,
    vip_service_hash,
)
from pytsnet.localnet.store import RESERVED_V4, Node, Store
from pytsnet.services.listener import services_hash, tcp_port_ranges

DEFS = {"svc:web": ServiceDef(ports=("tcp:80",), tags=("tag:web",)),
        "svc:db": ServiceDef(ports=("tcp:5433", "tcp:5432"), tags=("tag:db", "tag:web"))}


def _node(store: Store, tags: list[str]) -> Node:
    u = store.ensure_user()
    n = len(store.nodes())
    return store.add_node(machine_key=f"mkey:{n:064x}", node_key=f"nodekey:{n:064x}", user_id=u.id,
                          hostname=f"n{n}", authorized=True, ephemeral=False,
                          tags=tags)


def test_hash_is_go_vip_service_hash_of_the_json_list() -> None:
    # Go: json.Marshal([]*tailcfg.VIPService{{Name: "svc:web", Ports: [tcp:80], Active: true}})
    go_json = b'[{"Name":"svc:web","Ports":["tcp:80"],"Active":true}]'
    want = hashlib.sha256(go_json).hexdigest()
    assert vip_service_hash([advertised("svc:web", ["tcp:80"])]) == want
    assert services_hash({"svc:web": [80]}) == want  # what the node sends
    assert vip_service_hash([]) == services_hash({}) == ""


def test_ports_are_listed_as_go_does() -> None:
    assert tcp_port_ranges([81, 80, 443, 80]) == ["tcp:80-81", "tcp:443"]
    assert canonical_ports(["tcp:443", "tcp:81", "tcp:80"]) == ["tcp:80-81", "tcp:443"]


def test_control_recognises_the_advertised_subset(tmp_path: Path) -> None:
    store = Store(tmp_path)
    table = ServiceTable(store, DEFS)
    web, db, other = _node(store, ["tag:web"]), _node(store, ["tag:db"]), _node(store, ["tag:x"])
    assert table.record(web, services_hash({"svc:web": [80], "svc:db": [5432, 5433]}))
    assert table.hosting[web.id] == ("svc:db", "svc:web")
    assert table.record(web, services_hash({"svc:web": [80]}))
    assert table.hosting[web.id] == ("svc:web",)
    assert not table.record(db, services_hash({"svc:db": [5432]}))  # not all the defined ports: nothing
    assert not table.record(other, services_hash({"svc:web": [80]}))  # its tags do not allow it
    assert table.record(web, "not a hash at all")  # an unknown advertisement hosts nothing
    assert web.id not in table.hosting
    assert table.host_cap(web.id) is None


def test_vips_persist_and_stay_out_of_node_allocation(tmp_path: Path) -> None:
    vips = ServiceTable(Store(tmp_path), DEFS).vips
    assert ServiceTable(Store(tmp_path), DEFS).vips == vips
    assert len(set(vips.values())) == 2
    for v in vips.values():
        assert ipaddress.ip_address(v) in SERVICE_V4
    assert SERVICE_V4 in RESERVED_V4


def test_map_parts(tmp_path: Path) -> None:
    store = Store(tmp_path)
    table = ServiceTable(store, DEFS)
    a, b = _node(store, ["tag:web"]), _node(store, ["tag:web"])
    table.record(b, services_hash({"svc:web": [80]}))
    table.record(a, services_hash({"svc:web": [80]}))
    vip = table.vips["svc:web"]
    assert table.host_cap(a.id) == {"svc:web": [vip]} == table.host_cap(b.id)
    assert table.routes(store.nodes()) == {min(a.id, b.id): [f"{vip}/32"]}  # one route per VIP
    assert table.dns_records("ts.test") == [{"Name": "web.ts.test", "Value": vip}]
    table.forget(a.id)
    table.forget(b.id)
    assert table.routes(store.nodes()) == {} and table.dns_records("ts.test") == []


def test_bad_definitions_are_refused() -> None:
    with pytest.raises(ValueError):
        ServiceDef(ports=(), tags=("tag:a",))
    with pytest.raises(ValueError):
        ServiceDef(ports=("tcp:0",), tags=("tag:a",))
    with pytest.raises(ValueError):
        ServiceDef(ports=("tcp:80",), tags=("a",))
    with pytest.raises(ValueError):
        ServiceTable(Store.__new__(Store), {"web": ServiceDef(ports=("tcp:80",), tags=("tag:a",))})


def test_a_restarted_control_learns_hosts_from_the_stream_poll_or_the_stored_hostinfo(tmp_path: Path) -> None:
    """The hosting table is in memory: after a restart, a node's first (streaming) poll re-teaches it,
    from the Hostinfo it carries or, when it carries none, from the stored one."""
    asyncio.run(_restarted_control(tmp_path))


async def _restarted_control(tmp_path: Path) -> None:  # ControlServer runs on an event loop
    from pytsnet.localnet.control_server import ControlServer

    store = Store(tmp_path)
    web = _node(store, ["tag:web"])
    h = services_hash({"svc:web": [80]})
    store.update_node(web.id, hostinfo={"Hostname": "n0", "ServicesHash": h})
    stored = store.node(web.id)
    assert stored is not None
    control = ControlServer(store, services=DEFS)
    assert control._apply_map_update(stored, {}, only_if_unset=True)  # nothing sent: the stored Hostinfo
    assert control.services.hosting[stored.id] == ("svc:web",)
    fresh = ControlServer(store, services=DEFS)
    sent = {"Hostinfo": {"Hostname": "n0", "ServicesHash": h}}
    assert fresh._apply_map_update(stored, sent, only_if_unset=True)
    assert fresh.services.hosting[stored.id] == ("svc:web",)
    assert fresh._apply_map_update(stored, {"Hostinfo": {"Hostname": "n0"}}, only_if_unset=False)  # withdrawn
    assert stored.id not in fresh.services.hosting
