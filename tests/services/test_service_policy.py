"""localnet's policy with ``svc:`` destinations (20h): a grant naming ``svc:web`` opens the service's
VIP on the granted ports to the granted sources, in every node's packet filter and so in the host's
own filter (which owns the VIP); a VIP no rule names stays closed, with no ``*`` destination anywhere.
Two Python nodes end to end, plus the policy parser's unit cases."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pytsnet.actors.wgengine.filter_rules import rules_from_tailcfg
from pytsnet.config import Config
from pytsnet.device import ActorDevice
from pytsnet.localnet.policy import Policy, PolicyError
from pytsnet.localnet.server import LocalTailnet
from pytsnet.localnet.services import ServiceDef
from pytsnet.services.listener import ServiceListener, ServiceModeTCP
from pytsnet.testing.polling import wait_until
from pytsnet.testing.tailnet import RIG_DEFAULTS, wait_for_peers
from pytsnet.wire.tailcfg.filter import FilterRule

pytestmark = pytest.mark.timeout(240)

SERVICES = {"svc:web": ServiceDef(ports=("tcp:80",), tags=("tag:web",)),
            "svc:other": ServiceDef(ports=("tcp:81",), tags=("tag:web",))}
#: members may reach svc:web on TCP 80; nothing names svc:other or uses a ``*`` destination.
GRANT_WEB: dict[str, Any] = {"grants": [{"src": ["autogroup:member"], "dst": ["svc:web"], "ip": ["tcp:80"]}]}
#: the host's tag on every port: its own address, never the VIPs it hosts.
ACL_HOST_TAG: dict[str, Any] = {"acls": [{"action": "accept", "src": ["autogroup:member"],
                                          "dst": ["tag:web:*"]}]}


# --- parser and compiler -------------------------------------------------------------------------

def test_grant_svc_destination_compiles_to_the_vip() -> None:
    pol = Policy.parse({"grants": [{"src": ["*"], "dst": ["svc:web", "svc:nowhere"],
                                    "ip": ["tcp:80", "443"]}]})
    rules = pol.filter_rules([], [], {"svc:web": ["100.100.0.1"], "svc:other": ["100.100.0.2"]})
    assert rules == [
        {"SrcIPs": ["*"], "DstPorts": [{"IP": "100.100.0.1", "Ports": {"First": 80, "Last": 80}}],
         "IPProto": [6]},
        {"SrcIPs": ["*"], "DstPorts": [{"IP": "100.100.0.1", "Ports": {"First": 443, "Last": 443}}]},
    ]  # svc:nowhere is not defined: matches nothing; svc:other is not named: not in the filter


def test_grant_ip_protocols() -> None:
    pol = Policy.parse({"grants": [{"src": ["*"], "dst": ["*"], "ip": ["udp:53", "icmp:*", "*"]}]})
    assert [r.get("IPProto") for r in pol.filter_rules([], [])] == [[17], [1, 58], None]


@pytest.mark.parametrize(("doc", "needle"), [
    ({"acls": [{"action": "accept", "src": ["*"], "dst": ["svc:web:80"]}]}, "destination of grants only"),
    ({"grants": [{"src": ["svc:web"], "dst": ["*"], "ip": ["*"]}]}, "destination of grants only"),
    ({"grants": [{"src": ["*"], "dst": ["svc:Web"], "ip": ["*"]}]}, "not a service name"),
    ({"grants": [{"src": ["*"], "dst": ["svc:"], "ip": ["*"]}]}, "not a service name"),
    ({"grants": [{"src": ["*"], "dst": ["svc:web"], "ip": ["sctp:1"]}]}, "tcp, udp or icmp"),
    ({"grants": [{"src": ["*"], "dst": ["svc:web"], "ip": []}]}, "non-empty"),
    ({"grants": [{"src": ["*"], "dst": ["svc:web"], "ip": ["tcp:99999"]}]}, "bad port"),
    ({"grants": [{"src": ["*"], "dst": ["svc:web"], "app": {"x": [{}]}}]}, "unsupported keys"),
    ({"grants": [{"src": ["*"], "dst": ["svc:web"], "ip": ["*"], "via": ["tag:r"]}]}, "unsupported keys"),
    ({"grants": {"src": []}}, "grants must be a list"),
])
def test_bad_grants_are_refused(doc: dict[str, Any], needle: str) -> None:
    with pytest.raises(PolicyError, match=needle):
        Policy.parse(doc)


_sel = st.sampled_from(["*", "svc:web", "svc:", "svc:Web", "svc:nope", "svc:web:80", "tag:web", "group:x",
                        "autogroup:member", "10.0.0.0/8", "", "svc:" + "a" * 70, "svc:-a"])
_ip = st.one_of(st.sampled_from(["*", "tcp:80", "udp:53", "icmp:*", "80-81", "tcp:*", "sctp:1", "tcp:",
                                 ":80", "tcp:99999", "tcp:80:81"]), st.text(max_size=8))
_grant: st.SearchStrategy[dict[str, object]] = st.fixed_dictionaries({}, optional={
    "src": st.lists(_sel, max_size=3), "dst": st.lists(_sel, max_size=3),
    "ip": st.one_of(st.lists(_ip, max_size=3), st.integers(), st.text(max_size=4)),
    "app": st.just({}), "via": st.just([])})


@given(st.lists(st.one_of(_grant, st.integers(), st.text(max_size=4)), max_size=3))
@settings(max_examples=300, deadline=None, derandomize=True)
def test_fuzz_grants_give_a_usable_filter_or_a_policy_error(grants: list[object]) -> None:
    try:
        pol = Policy.parse({"grants": grants})
    except PolicyError as e:
        assert "\n" not in str(e) and len(str(e)) < 1000
        return
    rules = pol.filter_rules([], [], {"svc:web": ["100.100.0.1"]})
    rules_from_tailcfg([FilterRule.model_validate(r) for r in rules])  # every node accepts it


# --- end to end ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory
        ) -> Iterator[tuple[LocalTailnet, ActorDevice, ActorDevice, ActorDevice]]:
    tmp: Path = tmp_path_factory.mktemp("svcpolicy")
    with LocalTailnet(tmp / "control", listen="127.0.0.1:0", services=SERVICES) as net:
        net.set_policy(GRANT_WEB)
        host = ActorDevice(Config(dir=tmp / "host", hostname="host", control_url=net.control_url,
                                  auth_key=net.create_authkey(tags=["tag:web"]), **RIG_DEFAULTS))
        member = ActorDevice(Config(dir=tmp / "member", hostname="member", control_url=net.control_url,
                                    auth_key=net.create_authkey(), **RIG_DEFAULTS))
        outsider = ActorDevice(Config(dir=tmp / "outsider", hostname="outsider", control_url=net.control_url,
                                      auth_key=net.create_authkey(tags=["tag:out"]), **RIG_DEFAULTS))
        try:
            for d in (host, member, outsider):
                d.up_blocking(30)
            wait_for_peers(member, ["host", "outsider"])
            wait_for_peers(outsider, ["host", "member"])
            yield net, host, member, outsider
        finally:
            for d in (outsider, member, host):
                d.close()


def _serve_one(lst: ServiceListener | Any, tag: bytes) -> threading.Thread:
    def run() -> None:
        try:
            conn, _ = lst.accept(timeout=30)
        except (TimeoutError, OSError):
            return
        with conn:
            conn.sendall(tag + conn.recv(100))
    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def _echo(dev: ActorDevice, host: str, port: int, timeout: float = 15) -> bytes:
    sock = dev.tcp_connect_blocking(host, port, timeout=timeout)
    sock.settimeout(15)
    with sock:
        sock.sendall(b"hi")
        return sock.recv(100)


def _no_rule(dev: ActorDevice) -> int:
    return dev.status().drops.get("filter_no_rule", 0)


def _filter_dsts(dev: ActorDevice) -> set[str]:
    nm = dev.dataplane_info().netmap
    assert nm is not None
    return {d.IP for r in nm.packet_filter or [] for d in r.DstPorts}


def test_grant_opens_the_named_vip_only(
        rig: tuple[LocalTailnet, ActorDevice, ActorDevice, ActorDevice]) -> None:
    net, host, member, outsider = rig
    net.set_policy(GRANT_WEB)
    with host.listen_service_blocking("svc:web", ServiceModeTCP(port=80)) as web, \
            host.listen_service_blocking("svc:other", ServiceModeTCP(port=81)) as other:
        wait_until(lambda: bool(web.vips()) and bool(other.vips()), 30, "control approves both services")
        (vip,), (other_vip,) = web.vips(), other.vips()
        for d in (member, outsider):
            wait_until(lambda d=d: any(f"{other_vip}/32" in p.allowed_ips  # type: ignore[misc]
                                       for p in d.peers() if p.hostname == "host"), 30, "VIP routes")
        # the clients' filters (the same list every node gets) carry the granted VIP, not the other
        wait_until(lambda: vip in _filter_dsts(member), 20, "the member's filter names the VIP")
        assert other_vip not in _filter_dsts(member) and "*" not in _filter_dsts(member)
        assert vip in _filter_dsts(host)  # the host's own filter accepts it

        t = _serve_one(web, b"web:")
        assert _echo(member, vip, 80) == b"web:hi"  # granted: member → svc:web tcp:80
        t.join(10)

        before = _no_rule(host)
        t = _serve_one(other, b"other:")
        with pytest.raises(TimeoutError):  # svc:other: hosted and routed, but no rule names it
            _echo(member, other_vip, 81, timeout=4)
        wait_until(lambda: _no_rule(host) > before, 10, "the host's filter drops the SYN to svc:other")

        before = _no_rule(host)
        with pytest.raises(TimeoutError):  # not a member (tagged): not a source of the grant
            _echo(outsider, vip, 80, timeout=4)
        wait_until(lambda: _no_rule(host) > before, 10, "the host's filter drops the outsider's SYN")
        t.join(1)


def test_a_rule_for_the_hosts_tag_does_not_open_its_vips(
        rig: tuple[LocalTailnet, ActorDevice, ActorDevice, ActorDevice]) -> None:
    """``tag:web:*`` is the host's own address: the VIP it hosts stays closed (fail closed), and
    the same connection succeeds once a grant names the service."""
    net, host, member, _outsider = rig
    net.set_policy(ACL_HOST_TAG)
    try:
        with host.listen_service_blocking("svc:web", ServiceModeTCP(port=80)) as web:
            wait_until(lambda: bool(web.vips()), 30, "VIP assigned")
            (vip,) = web.vips()
            host_ip = host.tailscale_ips()[0]
            wait_until(lambda: host_ip in _filter_dsts(member) and vip not in _filter_dsts(member), 20,
                       "the tag rule reaches the member")
            wait_until(lambda: any(f"{vip}/32" in p.allowed_ips for p in member.peers()
                                   if p.hostname == "host"), 30, "VIP route")
            plain = host.listen_blocking(8080)
            try:
                with pytest.raises(TimeoutError):
                    _echo(member, vip, 80, timeout=4)
                t = threading.Thread(target=lambda: _accept_echo(plain), daemon=True)
                t.start()
                assert _echo(member, host_ip, 8080) == b"plain:hi"  # the tag rule itself works
                t.join(10)
            finally:
                plain.close()

            net.set_policy(GRANT_WEB)  # now name the service: the same VIP opens
            wait_until(lambda: vip in _filter_dsts(member) and vip in _filter_dsts(host), 20, "grant arrives")
            t = _serve_one(web, b"web:")
            assert _echo(member, vip, 80) == b"web:hi"
            t.join(10)
    finally:
        net.set_policy(GRANT_WEB)


def _accept_echo(lst: Any) -> None:
    conn, _ = lst.accept()
    with conn:
        conn.sendall(b"plain:" + conn.recv(100))
