"""SSH check mode's parts without a tailnet: Go's delegate-URL expansion, the ControlRunner's "only
control's own URLs" rule, localnet's ``check`` rules, and its held ``/machine/ssh/action/`` endpoint
(only the destination node may ask; decisions, timeout, cap, a reset stream, ``checkPeriod``)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from pytsnet.actors.control.runner import control_path
from pytsnet.localnet import control_server
from pytsnet.localnet.control_server import ControlServer
from pytsnet.localnet.policy import SSH_CHECK_URL, Policy, PolicyError
from pytsnet.localnet.store import Node, Store
from pytsnet.wire.ssh_policy import expand_delegate_url

pytestmark = pytest.mark.timeout(60)


def test_expand_delegate_url_is_gos_replacer() -> None:
    url = expand_delegate_url(SSH_CHECK_URL.format(period=0) + "&ip=$SRC_NODE_IP&d=$DST_NODE_IP",
                              src_ip="fd7a:115c:a1e0::1", src_node_id=7, dst_ip="100.64.0.2", dst_node_id=9,
                              ssh_user="a b+c", local_user="$SRC_NODE_ID")
    assert url == ("https://unused/machine/ssh/action/7/to/9?ssh_user=a+b%2Bc&local_user=%24SRC_NODE_ID"
                   "&check_period=0&ip=fd7a%3A115c%3Aa1e0%3A%3A1&d=100.64.0.2")  # one pass: no re-expansion
    assert expand_delegate_url("x/$DST_NODE_ID/$SSH_USER", src_ip="", src_node_id=0, dst_ip="",
                               dst_node_id=None, ssh_user="u_.-~", local_user="") == "x//u_.-~"


@pytest.mark.parametrize(("url", "want"), [
    ("https://unused/machine/ssh/action/1/to/2?ssh_user=a", "/machine/ssh/action/1/to/2?ssh_user=a"),
    ("http://127.0.0.1:8080/machine/ssh/action/1/to/2", "/machine/ssh/action/1/to/2"),
    ("https://evil.example/machine/ssh/action/1/to/2", None),  # another host: never asked
    ("https://unused@evil.example/machine/x", None),
    ("https://unused/other/path", None),
    ("https://unused/machine/../admin", None),
    ("ftp://unused/machine/x", None),
    ("https://unused/machine/x\r\nHost: evil", None),
    ("not a url", None),
])
def test_runner_fetches_only_control_urls(url: str, want: str | None) -> None:
    assert control_path(url, "http://127.0.0.1:8080") == want


def test_check_rule_compiles_to_hold_and_delegate() -> None:
    p = Policy.parse({"ssh": [{"action": "check", "src": ["*"], "dst": ["*"], "users": ["*"],
                               "checkPeriod": "1h30m"}]})
    assert p.ssh is not None and p.ssh[0].check_period == 5400
    assert Policy.parse({"ssh": [{"action": "check", "src": ["*"], "dst": ["*"], "users": ["*"],
                                  "checkPeriod": "always"}]}).ssh[0].check_period == 0  # type: ignore[index]
    assert Policy.parse({"ssh": [{"action": "check", "src": ["*"], "dst": ["*"],
                                  "users": ["*"]}]}).ssh[0].check_period == 12 * 3600  # type: ignore[index]
    for bad in ("soon", "", "12d", 5):
        with pytest.raises(PolicyError, match="checkPeriod"):
            Policy.parse({"ssh": [{"action": "check", "src": ["*"], "dst": ["*"], "users": ["*"],
                                   "checkPeriod": bad}]})


def _store(tmp: Path) -> tuple[Store, Node, Node]:
    s = Store(tmp)
    u = s.ensure_user("alice@example.com")

    def add(n: int, host: str) -> Node:
        return s.add_node(machine_key="mkey:" + f"{n:02x}" * 32, node_key="nodekey:" + f"{n:02x}" * 32,
                          user_id=u.id, hostname=host, authorized=True, ephemeral=False)

    return s, add(1, "laptop"), add(2, "server")


def _path(src: Node, dst: Node, user: str = "alice", period: int = 0) -> str:
    return f"/machine/ssh/action/{src.id}/to/{dst.id}?ssh_user={user}&local_user={user}&check_period={period}"


async def _until(cond: object, what: str) -> None:
    for _ in range(200):
        if callable(cond) and cond():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(what)


def test_only_the_destination_node_may_fetch(tmp_path: Path) -> None:
    s, laptop, server = _store(tmp_path)

    async def go() -> None:
        cs = ControlServer(s)
        assert (await cs.ssh_action(_path(laptop, server), laptop.machine_key))[0] == 403  # the source
        assert (await cs.ssh_action(_path(laptop, server), "mkey:" + "ee" * 32))[0] == 403
        assert (await cs.ssh_action("/machine/ssh/action/x/to/2", server.machine_key))[0] == 400
        assert (await cs.ssh_action(_path(laptop, server) + "&ssh_user=b", server.machine_key))[0] == 400
        assert cs.ssh_checks == {} and cs.stats["ssh_check_refused"] == 4
    asyncio.run(go())


def test_pending_check_is_held_until_decided(tmp_path: Path) -> None:
    s, laptop, server = _store(tmp_path)

    async def go() -> None:
        cs = ControlServer(s)
        t1 = asyncio.create_task(cs.ssh_action(_path(laptop, server), server.machine_key))
        t2 = asyncio.create_task(cs.ssh_action(_path(laptop, server, "bob"), server.machine_key))
        await _until(lambda: len(cs.ssh_checks) == 2, "two pending checks")
        assert not t1.done() and not t2.done()
        (a, c1), (b, _) = sorted(cs.ssh_checks.items())
        assert (c1.src_host, c1.dst_host, c1.ssh_user) == ("laptop", "server", "alice")
        assert cs.decide_ssh_check(a, True) and cs.decide_ssh_check(b, False)
        assert not cs.decide_ssh_check(a, False)  # decided already
        st, body = await t1
        assert st == 200 and json.loads(body)["accept"] is True
        st, body = await t2
        assert st == 200 and json.loads(body) == {"reject": True, "message": "tailscale: the SSH check was "
                                                                              "denied\n"}
        assert cs.ssh_checks == {}
        assert not cs.decide_ssh_check(12345, True)
    asyncio.run(go())


def test_timeout_cap_reset_and_check_period(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    s, laptop, server = _store(tmp_path)
    monkeypatch.setattr(control_server, "MAX_SSH_CHECKS", 2)

    async def go() -> None:
        cs = ControlServer(s)
        cs.ssh_check_timeout = 0.2
        st, body = await cs.ssh_action(_path(laptop, server), server.machine_key)
        assert st == 200 and json.loads(body)["message"] == "tailscale: the SSH check timed out\n"
        assert cs.ssh_checks == {}
        cs.ssh_check_timeout = 30
        held = [asyncio.create_task(cs.ssh_action(_path(laptop, server), server.machine_key)) for _ in "ab"]
        await _until(lambda: len(cs.ssh_checks) == 2, "two pending checks")
        st, body = await cs.ssh_action(_path(laptop, server), server.machine_key)  # over the cap: refused
        assert st == 200
        assert json.loads(body) == {"reject": True, "message": "tailscale: too many SSH checks pending\n"}
        for t in held:  # the node reset its streams (its SSH clients left): nothing stays pending
            t.cancel()
        await asyncio.gather(*held, return_exceptions=True)
        assert cs.ssh_checks == {}
        # checkPeriod: an approval stands for (source node, SSH user) for that long; "always" (0) asks again
        t = asyncio.create_task(cs.ssh_action(_path(laptop, server, period=3600), server.machine_key))
        await _until(lambda: len(cs.ssh_checks) == 1, "a pending check")
        cs.decide_ssh_check(next(iter(cs.ssh_checks)), True)
        assert json.loads((await t)[1])["accept"] is True
        assert json.loads((await cs.ssh_action(_path(laptop, server, period=3600), server.machine_key))[1]
                          )["accept"] is True  # at once, no check
        t = asyncio.create_task(cs.ssh_action(_path(laptop, server, "bob", 3600), server.machine_key))
        await _until(lambda: len(cs.ssh_checks) == 1, "another user is checked")
        t.cancel()
        await asyncio.gather(t, return_exceptions=True)
        cs.ssh_check_timeout = 0.1
        assert json.loads((await cs.ssh_action(_path(laptop, server, period=0), server.machine_key))[1]
                          )["reject"] is True  # "always": asked (and timed out) despite the approval
    asyncio.run(go())
