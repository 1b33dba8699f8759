"""Tailnet Lock's ``UnsignedPeerAPIOnly`` carve-out end to end with Python nodes on a LocalTailnet (21h).

``alpha`` and ``beta`` are signed under a lock; ``gamma`` joins unsigned and is refused, until control
marks it ``UnsignedPeerAPIOnly`` (``LocalTailnet.set_unsigned_peer_api_only``): alpha then admits it
without a signature (Go's ``tkaFilterNetmapLocked`` skips such peers) but it reaches alpha's peerAPI
only — an app port, refused. A policy that lets gamma in makes alpha drop its whole packet filter
(Go's ``packetFilterPermitsUnlockedNodes``): beta can no longer reach alpha either, the LocalAPI status
shows Go's ``invalid-packet-filter`` text, and gamma still reaches only the peerAPI. With the lock
turned off gamma stays confined (Go confines such peers whatever the lock's state).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from pytsnet.actors.wgengine.filter_rules import INVALID_PACKET_FILTER
from pytsnet.config import Config
from pytsnet.device import ActorDevice
from pytsnet.localnet import LocalTailnet
from pytsnet.testing.peerapi import http_request
from pytsnet.testing.polling import wait_until
from pytsnet.testing.tailnet import GrowingRig, growing_tailnet

SECRET = "disablement-secret:" + "5a" * 32
PORT = 7311


def _device(net: LocalTailnet, key: str, tmp: Path, name: str) -> ActorDevice:
    return ActorDevice(Config(dir=tmp / name, hostname=name, auth_key=key, control_url=net.control_url,
                              backoff_max=1.0, bind_host="127.0.0.1")).start()


def _names(dev: ActorDevice) -> set[str]:
    return {p.hostname for p in dev.peers()}


def _peerapi_answers(client: ActorDevice, server: ActorDevice) -> int:
    """The HTTP status ``server``'s peerAPI gives ``client`` for an unknown path (404: served)."""
    ip, port = server.tailscale_ips()[0], server.peerapi_port
    s = client.tcp_connect_blocking(ip, port, timeout=20)
    try:
        s.settimeout(20)
        ans = http_request(s, "GET", "/nope", host=f"{ip}:{port}")
        assert ans is not None
        return ans.status
    finally:
        s.close()


def _reaches_app_port(client: ActorDevice, server: ActorDevice, timeout: float = 4) -> bool:
    try:
        s = client.tcp_connect_blocking(server.tailscale_ips()[0], PORT, timeout=timeout)
    except (TimeoutError, OSError):
        return False
    s.close()
    return True


@contextlib.contextmanager
def _app_server(dev: ActorDevice) -> Iterator[list[str]]:
    """An app listener on ``PORT`` that accepts and closes every connection (so its backlog never fills
    and a refused dial means the filter said no); yields the source addresses it accepted."""
    lst, stop, accepted = dev.listen_blocking(PORT), threading.Event(), list[str]()
    lst.settimeout(0.2)

    def loop() -> None:
        while not stop.is_set():
            try:
                conn, (src, _) = lst.accept()
            except (TimeoutError, OSError):
                continue
            accepted.append(src)
            conn.close()

    t = threading.Thread(target=loop, daemon=True)
    t.start()
    try:
        yield accepted
    finally:
        stop.set()
        t.join(5)
        lst.close()


def _policy(*nodes: ActorDevice) -> dict[str, object]:
    """Everyone may reach everyone, but only from these nodes' addresses."""
    return {"acls": [{"action": "accept", "src": [ip for d in nodes for ip in d.tailscale_ips()],
                      "dst": ["*:*"]}]}


@pytest.fixture
def tailnet(tmp_path: Path) -> Iterator[GrowingRig]:
    with growing_tailnet(tmp_path) as rig:
        yield rig


Rig = GrowingRig


def test_unsigned_peerapi_only_node_reaches_only_the_peerapi(tmp_path: Path, tailnet: Rig) -> None:
    net, key, devs = tailnet
    a = _device(net, key, tmp_path, "alpha")
    b = _device(net, key, tmp_path, "beta")
    devs += [a, b]
    a.wait_until_running_blocking(30)
    b.wait_until_running_blocking(30)
    wait_until(lambda: _names(a) == {"beta"} and _names(b) == {"alpha"}, 30, "alpha and beta see each other")
    anyio.run(lambda: a.lock_init([a.lock_key()], disablement_secrets=[SECRET]))
    wait_until(lambda: b.lock_status().node_key_signed and "beta" in _names(a), 30, "beta signed, admitted")

    c = _device(net, key, tmp_path, "gamma")
    devs.append(c)
    c.wait_until_running_blocking(30)
    gid = c.state.node_id
    net.set_policy(_policy(a, b))  # gamma is no source of any rule
    wait_until(lambda: any(r.node_id == gid and "missing signature" in r.reason
                           for r in a.peer_table().rejected), 30, "alpha refuses unsigned gamma")

    # control marks gamma peerAPI-only: admitted unsigned, not subject to the lock
    net.set_unsigned_peer_api_only("gamma")
    wait_until(lambda: "gamma" in _names(a), 30, "alpha admits gamma without a signature")
    assert gid not in {r.node_id for r in a.peer_table().rejected}
    assert not c.lock_status().node_key_signed  # still unsigned
    assert INVALID_PACKET_FILTER not in a.local_client().status(peers=False).Health

    with _app_server(a) as accepted:
        wait_until(lambda: "alpha" in _names(c), 30, "gamma sees alpha")
        assert _peerapi_answers(c, a) == 404, "gamma is served by alpha's peerAPI"
        drops = a.status().drops.get("filter_no_rule", 0)
        assert not _reaches_app_port(c, a), "gamma is refused on any other port"
        assert a.status().drops.get("filter_no_rule", 0) > drops  # its SYNs, dropped by alpha's filter
        assert _reaches_app_port(b, a, timeout=20), "beta, signed and allowed by the policy, reaches alpha"

        # a policy letting gamma in: alpha drops its whole filter and says so
        net.set_policy(_policy(a, b, c))
        wait_until(lambda: INVALID_PACKET_FILTER in a.local_client().status(peers=False).Health, 30,
                   "alpha shows the invalid-packet-filter health")
        wait_until(lambda: not _reaches_app_port(b, a, timeout=3), 30, "nothing comes in: beta refused too")
        assert not _reaches_app_port(c, a)
        assert _peerapi_answers(c, a) == 404, "gamma still reaches only the peerAPI"

        # the policy back without gamma: alpha's filter is in force again
        net.set_policy(_policy(a, b))
        wait_until(lambda: INVALID_PACKET_FILTER not in a.local_client().status(peers=False).Health, 30,
                   "the health clears")
        assert _reaches_app_port(b, a, timeout=20)

        # the lock turned off: gamma stays confined (Go checks the filter whatever the lock's state)
        anyio.run(lambda: b.lock_disable(SECRET))
        for d in (a, c):
            wait_until(lambda d=d: not d.lock_status().enabled, 30, f"{d.config.hostname}: lock off")  # type: ignore[misc]
        wait_until(lambda: "alpha" in _names(c), 30, "gamma sees alpha")
        assert "gamma" in _names(a) and not _reaches_app_port(c, a)
        assert _peerapi_answers(c, a) == 404
        wait_until(lambda: len(accepted) >= 2, 10, "alpha's app accepted beta's connections")
        assert set(accepted) <= set(b.tailscale_ips()), f"only beta's connections, never gamma's: {accepted}"

