"""Tailnet Lock end to end with Python nodes on a LocalTailnet (loopback, DERP + STUN of localnet).

One tailnet walks the lifecycle in order (devices are slow to start); key rotation has its own:

1. ``alpha`` runs ``lock_init`` trusting its own key: control asks it to sign every node it has
   (``alpha``, ``beta``); both get the lock from control's genesis and see each other.
2. ``gamma`` joins after: it is unsigned. ``alpha`` and ``beta`` refuse it ("missing signature" in their
   tables, no traffic either way), and ``gamma`` shows the self-lockout warning.
3. ``alpha`` signs ``gamma`` (with its rotation key): admitted by both, traffic flows.
4. A wrong disablement secret is refused (the lock stays on); the right one turns it off everywhere.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from pytsnet.actors.peers.tka_filter import LOCKED_OUT
from pytsnet.config import Config
from pytsnet.device import ActorDevice
from pytsnet.errors import DialTimeout, TailnetLockDisablementRefused, UnknownTailnetHost
from pytsnet.localapi.backend import build_status
from pytsnet.localapi.tka import network_lock_status
from pytsnet.localnet import LocalTailnet
from pytsnet.testing.polling import wait_until
from pytsnet.testing.tailnet import GrowingRig, growing_tailnet

SECRET = "disablement-secret:" + "5a" * 32
PORT = 7310


def _device(net: LocalTailnet, key: str, tmp: Path, name: str) -> ActorDevice:
    return ActorDevice(Config(dir=tmp / name, hostname=name, auth_key=key, control_url=net.control_url,
                              backoff_max=1.0, bind_host="127.0.0.1")).start()


def _names(dev: ActorDevice) -> set[str]:
    return {p.hostname for p in dev.peers()}


def _rejected(dev: ActorDevice) -> dict[int, str]:
    return {r.node_id: r.reason for r in dev.peer_table().rejected}


async def _echo(client: ActorDevice, server: ActorDevice, host: str, timeout: float = 15.0) -> bytes:
    lst = await server.listen(PORT)
    try:
        async with anyio.create_task_group() as tg:
            async def serve() -> None:
                s = await lst.accept()
                await s.send(await s.receive(65536))
                await s.aclose()

            tg.start_soon(serve)
            stream = await client.tcp_connect(host, PORT, timeout=timeout)
            await stream.send(b"lock")
            got = await stream.receive(65536)
            await stream.aclose()
        return got
    finally:
        await lst.aclose()


def _refused(client: ActorDevice, server: ActorDevice, host: str) -> bool:
    """True if a dial from ``client`` to ``server`` cannot succeed (unknown host or no answer)."""
    async def run() -> bool:
        refused = False
        try:
            with anyio.fail_after(12):
                await _echo(client, server, host, timeout=4)
        except* (UnknownTailnetHost, DialTimeout, TimeoutError):
            refused = True
        return refused

    return anyio.run(run)


@pytest.fixture
def tailnet(tmp_path: Path) -> Iterator[GrowingRig]:
    with growing_tailnet(tmp_path) as rig:
        yield rig


Rig = GrowingRig


def test_tailnet_lock_lifecycle_with_python_nodes(tmp_path: Path, tailnet: Rig) -> None:
    net, key, devs = tailnet
    a = _device(net, key, tmp_path, "alpha")
    b = _device(net, key, tmp_path, "beta")
    devs += [a, b]
    a.wait_until_running_blocking(30)
    b.wait_until_running_blocking(30)
    wait_until(lambda: _names(a) == {"beta"} and _names(b) == {"alpha"}, 30, "alpha and beta see each other")
    assert not a.lock_status().enabled

    # 1. init from alpha: every existing node is signed as part of it
    anyio.run(lambda: a.lock_init([a.lock_key()], disablement_secrets=[SECRET]))
    for d in (a, b):
        wait_until(lambda d=d: d.lock_status().enabled and d.lock_status().node_key_signed, 30,  # type: ignore[misc]
                   f"{d.config.hostname} enabled and signed")
    st = a.lock_status()
    assert [k.key for k in st.trusted_keys] == [a.lock_key()] and st.head and not st.locked_out
    assert b.lock_status().head == st.head
    wait_until(lambda: _names(a) == {"beta"} and _names(b) == {"alpha"}, 20, "signed peers admitted")
    assert anyio.run(lambda: _echo(a, b, "beta")) == b"lock"

    # 2. gamma joins after the lock: unsigned, so refused by both and locked out itself
    c = _device(net, key, tmp_path, "gamma")
    devs.append(c)
    c.wait_until_running_blocking(30)
    gid = c.state.node_id
    wait_until(lambda: c.lock_status().enabled, 30, "gamma has the lock")
    wait_until(lambda: "missing signature" in _rejected(a).get(gid, ""), 20, "alpha refuses gamma")
    wait_until(lambda: "missing signature" in _rejected(b).get(gid, ""), 20, "beta refuses gamma")
    assert "gamma" not in _names(a) and "gamma" not in _names(b)
    cs = c.lock_status()
    assert cs.locked_out and not cs.node_key_signed and any("locked out" in w for w in cs.warnings)
    # the LocalAPI status Health shows Go's healthmsg.LockedOut word for word (21i); not on a signed node
    assert LOCKED_OUT in build_status(c, peers=False).Health
    assert LOCKED_OUT not in build_status(a, peers=False).Health
    filtered = a.lock_status().filtered_peers
    assert [(f.node_id, "missing signature" in f.reason) for f in filtered] == [(gid, True)]
    # Go's TKAPeer of the refused node (21i): as the netmap names it, no signature
    [f] = filtered
    nm = c.dataplane_info().netmap
    assert nm is not None
    gs = nm.self_node
    assert f.name == gs.name and f.name.startswith("gamma.") and f.stable_id == gs.stable_id and f.stable_id
    assert f.node_key == gs.node_key == cs.node_key and f.key_signature == b"" and f.signature is None
    assert sorted(f.tailscale_ips) == sorted(c.tailscale_ips()) and f.tailscale_ips
    [tp] = network_lock_status(a).FilteredPeers or []  # the LocalAPI's ipnstate.TKAPeer of it
    assert (tp.Name, tp.ID, tp.StableID, tp.NodeKey) == (gs.name, gid, gs.stable_id, gs.node_key)
    assert sorted(map(str, tp.TailscaleIPs or [])) == sorted(c.tailscale_ips())
    assert tp.NodeKeySignature.SigKind == 0
    assert _refused(c, a, "alpha"), "gamma cannot reach alpha"
    assert _refused(a, c, "gamma"), "alpha cannot reach gamma"

    # 3. alpha signs gamma (with gamma's key as the rotation key, as `lock sign <nodekey> <rotation-key>`)
    gamma_key = cs.node_key
    assert gamma_key, "gamma's node key"
    anyio.run(lambda: a.lock_sign(gamma_key, c.lock_key()))
    wait_until(lambda: "gamma" in _names(a) and "gamma" in _names(b), 30, "gamma admitted once signed")
    wait_until(lambda: c.lock_status().node_key_signed and not c.lock_status().locked_out, 30, "gamma signed")
    assert LOCKED_OUT not in build_status(c, peers=False).Health
    assert anyio.run(lambda: _echo(a, c, "gamma")) == b"lock"

    # 4. disable: a wrong secret is refused and the lock stays on; the right one turns it off everywhere
    with pytest.raises(TailnetLockDisablementRefused):
        anyio.run(lambda: a.lock_disable("disablement-secret:" + "00" * 32))
    assert all(d.lock_status().enabled for d in (a, b, c))
    anyio.run(lambda: b.lock_disable(SECRET))
    for d in (a, b, c):
        wait_until(lambda d=d: not d.lock_status().enabled, 30, f"{d.config.hostname}: lock off")  # type: ignore[misc]


def test_rotated_node_stays_trusted_via_its_rotation_signature(tmp_path: Path, tailnet: Rig) -> None:
    """``beta``'s node key is rotated (expired by control, re-registered with a new key): its signature,
    re-signed by its own lock key (the rotation key alpha's init gave it), keeps it trusted; the old key
    is gone from the peers' tables."""
    net, key, devs = tailnet
    a = _device(net, key, tmp_path, "alpha")
    b = _device(net, key, tmp_path, "beta")
    devs += [a, b]
    a.wait_until_running_blocking(30)
    b.wait_until_running_blocking(30)
    wait_until(lambda: _names(a) == {"beta"} and _names(b) == {"alpha"}, 30, "alpha and beta see each other")
    anyio.run(lambda: a.lock_init([a.lock_key()], disablement_secrets=[SECRET]))
    wait_until(lambda: b.lock_status().node_key_signed and "beta" in _names(a), 30,
               "beta signed and admitted")
    old_beta = b.lock_status().node_key
    assert old_beta
    b.close()
    net.expire_node("beta")
    b2 = _device(net, key, tmp_path, "beta")
    devs.append(b2)
    b2.wait_until_running_blocking(40)
    wait_until(lambda: b2.lock_status().node_key not in ("", old_beta), 30, "beta's node key rotated")
    new_beta = b2.lock_status().node_key
    wait_until(lambda: b2.lock_status().node_key_signed, 30, "beta's new key is signed (rotation signature)")
    wait_until(lambda: any(p.hostname == "beta" and p.node_key == new_beta for p in a.peers()), 30,
               "alpha admits beta's new key")
    assert all(p.node_key != old_beta for p in a.peers()), "the old key is dropped"
    assert anyio.run(lambda: _echo(a, b2, "beta")) == b"lock"

