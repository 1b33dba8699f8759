"""The app-facing API a newcomer meets (issue 11, part 2), on anyio's asyncio *and* trio backends.

One import; every public error in ``pytsnet.errors`` with a builtin base; ``Config`` as the one source
of knobs (``Config.port`` really binds the UDP socket); ``async with`` + ``up``; listeners and UDP
sockets opened before Running that survive a data-plane rebuild; a timeout on every dial; MagicDNS
names in UDP ``sendto``; typed socket extras on streams.
"""

from __future__ import annotations

import copy
import errno
import inspect
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from anyio.abc import SocketAttribute

import pytsnet
import pytsnet.errors
from pytsnet import ActorDevice, Config
from pytsnet.actors.runtime import FaultInjector
from pytsnet.localnet.server import LocalTailnet
from pytsnet.testing.polling import wait_until
from pytsnet.wire.magicsock.endpoint import Timings

# tests/e2e/e2e_rig.py's FAST: Go's disco timings shortened so a direct path appears in test time.
FAST = Timings(heartbeat=0.5, trust=1.5, session_active=10.0, upgrade=5.0, ping_timeout=0.8,
               ping_interval=0.3)


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def tailnet(tmp_path: Path) -> Iterator[LocalTailnet]:
    with LocalTailnet(tmp_path / "control", listen="127.0.0.1:0") as n:
        yield n


def _cfg(net: LocalTailnet, tmp: Path, name: str, key: str | None, **kw: Any) -> Config:
    kw.setdefault("bind_host", "127.0.0.1")
    return Config(dir=tmp / name, hostname=name, auth_key=key, control_url=net.control_url, backoff_max=1.0,
                  **kw)


async def _see_peer(dev: ActorDevice, name: str) -> None:
    with anyio.fail_after(20):
        while not any(p.hostname == name for p in dev.peers()):
            await anyio.sleep(0.05)


# -- one import, one error module ----------------------------------------------------------------------
def test_one_import_gives_device_config_and_every_error() -> None:
    errors = {n: getattr(pytsnet.errors, n) for n in pytsnet.errors.__all__}
    public = [c for c in vars(pytsnet.errors).values()
              if inspect.isclass(c) and issubclass(c, BaseException) and not c.__name__.startswith("_")]
    assert {c.__name__ for c in public} <= set(errors), "a public error is missing from __all__"
    builtin_bases = (OSError, TimeoutError, LookupError, ValueError, PermissionError, ConnectionError)
    for name, cls in errors.items():
        assert getattr(pytsnet, name) is cls, f"pytsnet.{name} is not re-exported"
        assert name in pytsnet.__all__
        families = ("PytsnetError", "RegistrationError", "TcpConnectionError", "TailnetLockError")
        if name not in families:  # the family bases
            assert issubclass(cls, builtin_bases), f"{name} has no builtin base an app would catch"
    # The facade's own errors share one base; the TCP outcomes keep theirs (a lower layer).
    for name in ("AuthRejected", "KeyExpired", "NeedsLogin", "NetworkUnreachable", "RegistrationTimeout",
                 "DeviceClosed", "DataplaneNotReady", "UnknownTailnetHost", "DialTimeout", "AddressInUse",
                 "ConfigError", "CaptureError"):
        assert issubclass(errors[name], pytsnet.PytsnetError), name
    assert issubclass(pytsnet.DialTimeout, TimeoutError)
    assert issubclass(pytsnet.ConnectionRefused, ConnectionRefusedError)
    assert issubclass(pytsnet.ConnectionReset, ConnectionResetError)
    assert issubclass(pytsnet.ConnectionTimedOut, TimeoutError)
    assert issubclass(pytsnet.AuthRejected, PermissionError)
    assert issubclass(pytsnet.ConfigError, ValueError)
    # The old import paths still work (the same classes).
    from pytsnet.device import DataplaneNotReady, UnknownTailnetHost
    from pytsnet.dial import UnknownTailnetHost as U2
    from pytsnet.net import FlowCrashed
    from pytsnet.netstack.tcp.errors import ConnectionRefused
    assert UnknownTailnetHost is U2 is pytsnet.UnknownTailnetHost
    assert DataplaneNotReady is pytsnet.DataplaneNotReady
    assert ConnectionRefused is pytsnet.ConnectionRefused and FlowCrashed is pytsnet.FlowCrashed
    # Messages say what to do next.
    assert "TS_AUTHKEY" in str(pytsnet.AuthRejected("key used"))
    assert "visit https://login/x" in str(pytsnet.NeedsLogin("https://login/x"))
    assert "TS_CONTROL_URL" in str(pytsnet.NetworkUnreachable("connection refused"))


def test_config_is_the_one_source_of_knobs() -> None:
    params = inspect.signature(ActorDevice.__init__).parameters
    for gone in ("bind_host", "bind_port", "advertise_endpoints", "timings", "stun_interval", "backoff_max",
                 "clock", "store"):
        assert gone not in params, f"ActorDevice({gone}=...) is back: it belongs in Config"
        assert gone == "bind_port" or gone in Config.__dataclass_fields__
    with pytest.raises(TypeError):
        ActorDevice(Config(ephemeral=True), bind_port=41641)  # type: ignore[call-arg]
    with pytest.raises(pytsnet.ConfigError, match=r"Config\.port"):
        Config(port=70000).resolved()


# -- the async API, on both backends ---------------------------------------------------------------------
@pytest.mark.anyio
async def test_async_with_up_listen_before_running_dial_names_extras(tailnet: LocalTailnet,
                                                                       tmp_path: Path) -> None:
    key = tailnet.create_authkey(reusable=True)
    # no auth key: control holds the node at NeedsLogin until it is approved below, so "before
    # Running" is a fact here, not a race the node might win under load
    async with ActorDevice(_cfg(tailnet, tmp_path, "srv", None)) as b:
        # Go's Listen works at once: before the node is Running.
        lst = await b.listen(7100)
        usock = await b.listen_packet(5300)
        assert b.state.state != "Running"
        seen: list[str] = []

        async def watch() -> None:
            async for s in b.watch_state():
                seen.append(s.state)
                if s.state == "Running":
                    return

        async with anyio.create_task_group() as tg:
            tg.start_soon(watch)
            with anyio.fail_after(20):
                while not any(n.hostname == "srv" for n in tailnet.nodes()):
                    await anyio.sleep(0.05)
            assert b.state.state != "Running"
            assert tailnet.approve("srv")
            st = await b.up(20)
        assert st.state == "Running" and st.tailscale_ips == b.tailscale_ips()
        assert seen[-1] == "Running" and len(seen) >= 2, seen  # watch_state works on this backend too
        async with ActorDevice(_cfg(tailnet, tmp_path, "cli", key)) as a:
            await a.up(20)
            await _see_peer(a, "srv")
            await _see_peer(b, "cli")
            a_ip, b_ip = a.tailscale_ips()[0], b.tailscale_ips()[0]

            stream = await a.tcp_connect("srv", 7100, timeout=20)
            with anyio.fail_after(20):
                conn = await lst.accept()
            await stream.send(b"ping")
            assert await conn.receive() == b"ping"
            # Typed extras (anyio's SocketAttribute), both ends.
            assert stream.extra(SocketAttribute.remote_address) == (b_ip, 7100)
            assert stream.extra(SocketAttribute.remote_port) == 7100
            assert stream.extra(SocketAttribute.local_address)[0] == a_ip
            assert stream.extra(SocketAttribute.family) == socket.AF_INET
            assert conn.extra(SocketAttribute.remote_address) == stream.extra(SocketAttribute.local_address)
            assert conn.extra(SocketAttribute.local_address) == (b_ip, 7100)
            await stream.aclose()
            await conn.aclose()

            # UDP sendto takes the names tcp_connect takes (short name, FQDN with or without the dot).
            asock = await a.listen_packet()
            fqdn = next(p.name for p in a.peers() if p.hostname == "srv")
            for host in ("srv", fqdn, fqdn.rstrip("."), b_ip):
                await asock.sendto(host.encode(), (host, 5300))
                with anyio.fail_after(20):
                    data, src = await usock.recvfrom()
                assert data == host.encode() and src == (a_ip, asock.port)
            with pytest.raises(pytsnet.UnknownTailnetHost):
                await asock.sendto(b"x", ("nosuchpeer", 5300))
            with pytest.raises(ConnectionRefusedError, match="nothing listens on that port"):
                await a.tcp_connect("srv", 7999, timeout=20)
            await usock.sendto(b"back", ("cli", asock.port))
            with anyio.fail_after(20):
                assert await asock.recvfrom() == (b"back", (b_ip, 5300))
        assert a.state.state == "Stopped"  # async with closed it
    assert b.state.state == "Stopped"
    with pytest.raises(OSError, match="closed"):  # the device closed: its listener ends, it does not hang
        with anyio.fail_after(5):
            await lst.accept()


@pytest.mark.anyio
async def test_dial_to_offline_peer_times_out_typed(tailnet: LocalTailnet, tmp_path: Path) -> None:
    key = tailnet.create_authkey(reusable=True)
    async with ActorDevice(_cfg(tailnet, tmp_path, "a", key)) as a:
        b = ActorDevice(_cfg(tailnet, tmp_path, "b", key))
        async with b:
            await b.up(20)
            await a.up(20)
            await _see_peer(a, "b")
        # b is gone but still in a's netmap (not ephemeral): its SYNs go unanswered.
        t0 = time.monotonic()
        with pytest.raises(pytsnet.DialTimeout) as e:
            await a.tcp_connect("b", 80, timeout=1.0)
        assert 0.9 < time.monotonic() - t0 < 5.0
        assert isinstance(e.value, TimeoutError) and "b:80" in str(e.value)
        t0 = time.monotonic()
        with pytest.raises(pytsnet.DialTimeout):
            await anyio.to_thread.run_sync(lambda: a.tcp_connect_blocking("b", 80, timeout=1.0))
        assert time.monotonic() - t0 < 5.0
        # The default exists and is the same for both twins.
        for fn in (a.tcp_connect, a.tcp_connect_blocking):
            assert inspect.signature(fn).parameters["timeout"].default == pytsnet.DIAL_TIMEOUT


@pytest.mark.anyio
async def test_listeners_survive_dataplane_rebuild(tailnet: LocalTailnet, tmp_path: Path) -> None:
    key = tailnet.create_authkey(reusable=True)
    async with ActorDevice(_cfg(tailnet, tmp_path, "srv", key)) as b, \
            ActorDevice(_cfg(tailnet, tmp_path, "cli", key)) as a:
        lst = await b.listen(7200)
        usock = await b.listen_packet(5400)
        await b.up(20)
        await a.up(20)
        await _see_peer(a, "srv")
        await _see_peer(b, "cli")
        asock = await a.listen_packet()

        async def roundtrip(tag: bytes) -> None:
            stream = await a.tcp_connect("srv", 7200, timeout=20)
            with anyio.fail_after(20):
                conn = await lst.accept()
            await stream.send(tag)
            assert await conn.receive() == tag
            await stream.aclose()
            await conn.aclose()
            with anyio.fail_after(20):
                while True:  # UDP may be lost while the new data plane's first handshake completes
                    await asock.sendto(tag, ("srv", 5400))
                    with anyio.move_on_after(1):
                        assert await usock.recvfrom() == (tag, (a.tailscale_ips()[0], asock.port))
                        break

        await roundtrip(b"before")
        old = {d: d._ns for d in (a, b)}  # the netstack handle the tree handed each device
        # A new DERP map (one more region) is a new data-plane identity: the bridge rebuilds the subtree.
        assert tailnet.relay is not None
        dm = copy.deepcopy(tailnet.relay.derp_map)
        extra = copy.deepcopy(dm["Regions"]["900"])
        extra.update(RegionID=901, RegionCode="spare")
        extra["Nodes"] = [dict(n, Name="901a", RegionID=901, DERPPort=9, STUNPort=9) for n in extra["Nodes"]]
        dm["Regions"]["901"] = extra
        tailnet.set_derp_map(dm)

        def rebuilt(d: ActorDevice) -> bool:
            ns = d._ns
            return ns is not None and ns is not old[d]

        for d in (a, b):  # both got the new map
            await anyio.to_thread.run_sync(lambda d=d: wait_until(lambda: rebuilt(d), 20, "rebuilt"))
            await d.up(20)
        await roundtrip(b"after")  # the same listener and socket objects, now on the new netstack

        # A crashed netstack restarts with its listeners: a listener waiting in accept() carries on.
        got: list[bytes] = []

        async def serve_one() -> None:
            conn = await lst.accept()
            got.append(await conn.receive())
            await conn.aclose()

        assert b.system is not None
        ref = b.system.lookup("netstack")
        assert ref is not None
        assert b._ns is not None
        registry = b._ns.registry
        with anyio.fail_after(30):
            async with anyio.create_task_group() as tg:
                tg.start_soon(serve_one)
                await anyio.sleep(0.1)
                FaultInjector.kill_now(ref)
                while not (ref.incarnation == 2 and ref.is_alive and registry.listener(7200) is not None):
                    await anyio.sleep(0.02)
                stream = await a.tcp_connect("srv", 7200, timeout=20)
                await stream.send(b"restarted")
                await stream.aclose()
        assert got == [b"restarted"]
        with pytest.raises(pytsnet.AddressInUse):
            await b.listen(7200)
        await lst.aclose()
        relisten = await b.listen(7200)  # closing frees the port for a new listener
        await relisten.aclose()


# -- Config.port: Go's Port, really bound, really carrying traffic ---------------------------------------
def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_config_port_binds_the_udp_socket_and_traffic_arrives_there(tailnet: LocalTailnet,
                                                                          tmp_path: Path) -> None:
    port = _free_udp_port()
    key = tailnet.create_authkey(reusable=True)
    async with ActorDevice(_cfg(tailnet, tmp_path, "fixed", key, port=port, timings=FAST,
                                stun_interval=(2.0, 3.0))) as a, \
            ActorDevice(_cfg(tailnet, tmp_path, "other", key, timings=FAST, stun_interval=(2.0, 3.0))) as b:
        await a.up(20)
        await b.up(20)
        # The node's UDP socket holds the port: nobody else can bind it.
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s, pytest.raises(OSError) as e:
            s.bind(("127.0.0.1", port))
        assert e.value.errno == errno.EADDRINUSE
        await anyio.to_thread.run_sync(lambda: wait_until(
            lambda: f"127.0.0.1:{port}" in a.status().endpoints, 20, "the fixed port among a's endpoints"))
        await _see_peer(a, "other")
        await _see_peer(b, "fixed")
        lst = await a.listen(7400)

        def row(dev: ActorDevice) -> Any:
            [r] = dev.status().peers
            return r

        # Traffic until b talks to a directly: then it is sending to a's fixed port.
        with anyio.fail_after(60):
            while row(b).path != "direct":
                stream = await b.tcp_connect("fixed", 7400, timeout=20)
                conn = await lst.accept()
                await stream.send(b"x")
                assert await conn.receive() == b"x"
                await stream.aclose()
                await conn.aclose()
                await anyio.sleep(0.2)
        assert row(b).addr == f"127.0.0.1:{port}"
        before = row(a).udp_bytes_in
        stream = await b.tcp_connect("fixed", 7400, timeout=20)
        conn = await lst.accept()
        await stream.send(b"y" * 100_000)
        got = 0
        with anyio.fail_after(20):
            while got < 100_000:
                got += len(await conn.receive())
        assert row(a).udp_bytes_in - before > 100_000  # arrived on the fixed port's socket
        await stream.aclose()
        await conn.aclose()


def test_config_store_holds_the_node_and_up_blocking(tailnet: LocalTailnet, tmp_path: Path) -> None:
    """Go's ``Store``: ``Config.store`` is where the node's state goes; the same store, the same node."""
    from pytsnet import MemoryStore
    from pytsnet.state import NODE

    store = MemoryStore()
    cfg = Config(hostname="kept", auth_key=tailnet.create_authkey(), control_url=tailnet.control_url,
                 store=store, bind_host="127.0.0.1", backoff_max=1.0)
    with ActorDevice(cfg) as dev:
        assert dev.store is store
        st = dev.up_blocking(20)
        ips = dev.tailscale_ips()
        assert st.state == "Running" and st.tailscale_ips == ips
    assert store.read_state(NODE)
    with ActorDevice(cfg) as again:  # the auth key is used up: only the stored node key can log in
        again.up_blocking(20)
        assert again.tailscale_ips() == ips
    assert len(tailnet.nodes()) == 1
