"""Issue 17 "Done when", end to end in the exit lab: a Python node using Python exit nodes and a
Python subnet router, real namespaces with no route out of the lab.

Node A (client namespace, no route to the lab's internet) uses exit node B (its own process in the
exit namespace, so it can be SIGKILLed) or C (in-process, same namespace); both reach the internet
namespace's kernel HTTP and DNS servers through a router hop. What ``test_exit_node_serve.py``
already proves (TCP/UDP/DoH through one exit node, the tx-counter leak check) is not repeated: here
the runtime switch and clear, the kill within 5 s, a packet capture on every interface of A's
namespace, and the subnet route approved through the CLI with a peer that does not accept routes.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from pytsnet.device import ActorDevice
from pytsnet.errors import ExitNodeUnavailable, UnknownTailnetHost
from pytsnet.testing.exitlab import (
    ECHO_PORT,
    HUB_ADDR,
    INTERNET_ADDR,
    SUBNET,
    SUBNET_SERVER,
    WEB_BODY,
    WEB_NAME,
    WEB_PORT,
)
from pytsnet.testing.exitnet import ExitNet, NodeProcess, PacketCapture, exit_tailnet, fetch
from pytsnet.testing.netns import netns_available
from pytsnet.testing.polling import wait_until

pytestmark = [pytest.mark.interop, pytest.mark.root]


def tailnet(tmp_path: Path, client_route: bool = False) -> Any:
    if reason := netns_available():
        pytest.skip(reason)
    return exit_tailnet(tmp_path, client_route=client_route, prefix="xt")


def counters(dev: ActorDevice) -> tuple[int, int]:
    c = dev.status().counters
    return c.get("forward_tcp_forwarded", 0), c.get("peerapi_dns_exit", 0)


def fetch_both_ways(a: ActorDevice) -> None:
    """The kernel HTTP server, by IP and by name (A's lookup through the exit node's DoH)."""
    assert fetch(a, INTERNET_ADDR, WEB_PORT) == WEB_BODY
    assert a.lookup_blocking(WEB_NAME) == [INTERNET_ADDR]
    assert fetch(a, WEB_NAME, WEB_PORT) == WEB_BODY


def refused_after(a: ActorDevice, t0: float, limit: float) -> float:
    """Seconds from ``t0`` until A's dial beyond the tailnet raises ``ExitNodeUnavailable`` (a dial
    that does not is sent into the tunnel and times out: short dials keep the measure honest)."""
    while time.monotonic() - t0 < limit + 5:
        try:
            a.tcp_connect_blocking(INTERNET_ADDR, ECHO_PORT, timeout=0.5).close()
        except ExitNodeUnavailable as e:
            assert e.reason == "offline", e
            return time.monotonic() - t0
        except OSError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"dials beyond the tailnet not refused {limit + 5} s after the exit node died")


@pytest.fixture
def two_exits(tmp_path: Path) -> Iterator[tuple[ExitNet, ActorDevice, NodeProcess, ActorDevice]]:
    with tailnet(tmp_path) as w:
        b = w.node_process(w.lab.exit, "exit-b", advertise_exit_node=True)
        c = w.device(w.lab.exit, "exit-c", advertise_exit_node=True)
        a = w.device(w.lab.client, "client")
        w.approve_exit("exit-b")
        w.approve_exit("exit-c")
        wait_until(lambda: sum(1 for p in a.peers() if "0.0.0.0/0" in p.allowed_ips) == 2, 20,
                   "A sees both exit nodes' approved routes")
        yield w, a, b, c


def test_fetch_by_ip_and_name_then_clear_and_switch_exit_nodes_mid_session(
        two_exits: tuple[ExitNet, ActorDevice, NodeProcess, ActorDevice]) -> None:
    _, a, b, c = two_exits
    got = a.set_exit_node_blocking("exit-b")
    assert got is not None and got.address == b.address and a.status().exit_node == got
    fetch_both_ways(a)
    assert counters(c) == (0, 0)  # A has no route out: B carried all of it

    # cleared at runtime (the async API): beyond the tailnet is no longer reachable, and no error
    # about an exit node either (none is selected)
    assert anyio.run(a.set_exit_node, None) is None
    assert a.active_exit_node() is None and a.status().exit_node_unavailable is None
    with pytest.raises(UnknownTailnetHost):
        a.tcp_connect_blocking(INTERNET_ADDR, WEB_PORT, timeout=2)
    assert counters(c) == (0, 0)

    # switched to C (by its tailnet IP): C's forwarder and DoH carry A's fetches now
    c_ip = c.tailscale_ips()[0]
    got = anyio.run(a.set_exit_node, c_ip)
    assert got is not None and got.address == c_ip
    fetch_both_ways(a)
    tcp_c, dns_c = counters(c)
    assert tcp_c >= 2 and dns_c >= 1

    # and back to B (by name) while a connection through C is open: new flows go to B
    held = a.tcp_connect_blocking(INTERNET_ADDR, ECHO_PORT, timeout=30)
    assert counters(c)[0] == tcp_c + 1
    assert a.set_exit_node_blocking("exit-b") is not None
    fetch_both_ways(a)
    assert counters(c) == (tcp_c + 1, dns_c)
    held.close()


def test_killed_exit_node_refuses_dials_within_five_seconds_and_another_takes_over(
        two_exits: tuple[ExitNet, ActorDevice, NodeProcess, ActorDevice]) -> None:
    _, a, b, c = two_exits
    assert a.set_exit_node_blocking("exit-b") is not None
    assert fetch(a, INTERNET_ADDR, WEB_PORT) == WEB_BODY
    t0 = time.monotonic()
    b.kill()  # the process dies: no reset, no goodbye; control sees its stream end
    took = refused_after(a, t0, 5.0)
    assert took < 5.0, f"refused only after {took:.1f} s"
    assert a.status().exit_node_unavailable == "offline" and a.active_exit_node() is None
    with pytest.raises(ExitNodeUnavailable):  # lookups beyond the tailnet too: no query leaves
        a.lookup_blocking(WEB_NAME, timeout=2)

    # another exit node, selected at runtime, takes over; then its device is closed abruptly
    assert a.set_exit_node_blocking("exit-c") is not None
    fetch_both_ways(a)
    t0 = time.monotonic()
    c.close()
    took = refused_after(a, t0, 5.0)
    assert took < 5.0, f"refused only after {took:.1f} s"


def test_capture_on_every_client_interface_shows_nothing_to_the_internet(tmp_path: Path) -> None:
    """A's namespace here has its own route to the internet server, so a host-socket fallback would
    succeed: a capture on all of A's interfaces sees no packet to it, while A fetches through B and
    after B is killed (the tunnel's packets to the hub are seen: the capture covers that interface)."""
    with tailnet(tmp_path, client_route=True) as w:
        lab = w.lab
        b = w.node_process(lab.exit, "exit-b", advertise_exit_node=True)
        a = w.device(lab.client, "client")
        w.approve_exit("exit-b")
        wait_until(lambda: a.set_exit_node_blocking("exit-b") is not None, 20, "B engaged")
        with PacketCapture(lab.client) as cap:
            probe = f"import socket; socket.create_connection(({INTERNET_ADDR!r}, {WEB_PORT}), 5).close()"
            assert lab.client.run([sys.executable, "-c", probe], check=False).returncode == 0
            assert cap.wait_for(INTERNET_ADDR), "the capture does not see a host socket's packets"
            time.sleep(1.0)  # the probe's last packets are out
            cap.clear()

            fetch_both_ways(a)
            t0 = time.monotonic()
            b.kill()
            refused_after(a, t0, 5.0)
            for _ in range(3):
                with pytest.raises(ExitNodeUnavailable):
                    a.tcp_connect_blocking(INTERNET_ADDR, WEB_PORT, timeout=2)
                with pytest.raises(ExitNodeUnavailable):
                    a.lookup_blocking(WEB_NAME, timeout=2)
            time.sleep(0.5)
            seen = cap.packets()
        leaks = [p for p in seen if p.dst == INTERNET_ADDR or p.ifname == lab.client_direct_if]
        assert not leaks, leaks[:5]
        assert any(p.dst == HUB_ADDR for p in seen)  # control traffic (and the tunnel) left towards the hub


def cli(state: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pytsnet", "localnet", "--state", str(state), *args],
                          capture_output=True, text=True, timeout=60)


def test_subnet_route_approved_with_the_cli_used_only_by_a_peer_that_accepts_routes(tmp_path: Path) -> None:
    with tailnet(tmp_path) as w:
        lab = w.lab
        r = w.device(lab.exit, "router", advertise_routes=[SUBNET])
        yes = w.device(lab.client, "accepts", accept_routes=True)
        no = w.device(lab.client, "ignores")  # accept_routes defaults to False, as Go's tsnet
        with pytest.raises(UnknownTailnetHost):  # advertised, not approved: no route yet
            yes.tcp_connect_blocking(SUBNET_SERVER, ECHO_PORT, timeout=2)

        out = cli(w.net.state_dir, "nodes", "approve-routes", "router", SUBNET)
        assert out.returncode == 0, out.stderr
        for d in (yes, no):  # both are told: the router is primary for the subnet
            wait_until(lambda d=d: any(p.primary_routes == [SUBNET] for p in d.peers()), 10,
                       f"{d.config.hostname} sees the approved route")

        sock = yes.tcp_connect_blocking(SUBNET_SERVER, ECHO_PORT, timeout=30)
        sock.settimeout(30)
        sock.sendall(b"subnet via the router")
        got = b""
        while len(got) < 21:
            got += sock.recv(100)
        sock.close()
        assert got == b"subnet via the router"
        before = r.status().counters["forward_tcp_forwarded"]
        assert before == 1
        with pytest.raises(UnknownTailnetHost):
            no.tcp_connect_blocking(SUBNET_SERVER, ECHO_PORT, timeout=2)
        time.sleep(0.5)
        assert r.status().counters["forward_tcp_forwarded"] == before
