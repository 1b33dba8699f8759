"""Traversal cells in the NAT lab: which path two nodes settle on behind which NATs, and a byte-exact
TCP echo over it. Localnet (control, DERP, STUN) runs on the lab's internet segment; each node runs
in-process with its threads in its own node namespace (``LabTailnet.device``).

Expected paths are Go's (``tstest/integration/nat``): endpoint-independent mappings on both sides go
direct (hole punching: each side's disco pings open its own NAT to the other's STUN endpoint), a
hard (endpoint-dependent) NAT facing a port-restricted one stays on DERP, UDP blocked means DERP
over TCP, and two peers behind one NAT meet on their LAN addresses. Each cell is bounded at 30 s.
The Python↔Go cell reads Go's path from its ``magicsock: disco: node … now using`` log line.
"""

from __future__ import annotations

import base64
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pytsnet.testing import gonode
from pytsnet.testing.exitnet import fetch
from pytsnet.testing.natlab import LanSpec, NatLab, NatType, nat_lab
from pytsnet.testing.natlab_net import ECHO_PORT, LabTailnet, lab_tailnet, peer_path, run_cell, serve_echo
from pytsnet.testing.netns import netns_available
from pytsnet.testing.polling import wait_until

pytestmark = [pytest.mark.root]

BOUND = 30.0


@pytest.fixture
def cell(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[NatLab, LabTailnet]]:
    if reason := netns_available():
        pytest.skip(reason)
    specs: list[LanSpec] = request.param
    with nat_lab(*specs) as lab, lab_tailnet(lab, tmp_path) as w:
        yield lab, w


def two_lans(a: NatType, b: NatType) -> list[LanSpec]:
    return [LanSpec("a", a), LanSpec("b", b)]


DIRECT = [("easy", "easy"), ("filtering", "filtering"), ("double", "double"), ("easy", "hard")]
DERP = [("hard", "hard"), ("filtering", "hard"), ("udp_blocked", "easy")]


@pytest.mark.parametrize("cell", [two_lans(a, b) for a, b in DIRECT], indirect=True,
                         ids=[f"{a}-{b}" for a, b in DIRECT])
def test_direct_cells(cell: tuple[NatLab, LabTailnet]) -> None:
    lab, w = cell
    a, b = w.device(lab["a"].node, "a"), w.device(lab["b"].node, "b")
    serve_echo(b)
    r = run_cell(a, b, bound=BOUND)
    assert r.transfer_ok, r
    assert r.path == "direct" and r.time_to_direct is not None and r.time_to_direct < BOUND, r
    assert r.addr is not None and r.addr.split(":")[0] == lab["b"].wan_addr, r  # B's STUN endpoint
    wait_until(lambda: peer_path(b, a.tailscale_ips()[0])[0] == "direct", 10, "B's route to A direct too")
    assert peer_path(b, a.tailscale_ips()[0])[1].split(":")[0] == lab["a"].wan_addr  # type: ignore[union-attr]


@pytest.mark.parametrize("cell", [two_lans(a, b) for a, b in DERP], indirect=True,
                         ids=[f"{a}-{b}" for a, b in DERP])
def test_derp_cells(cell: tuple[NatLab, LabTailnet]) -> None:
    lab, w = cell
    a, b = w.device(lab["a"].node, "a"), w.device(lab["b"].node, "b")
    serve_echo(b)
    r = run_cell(a, b, bound=BOUND, want_direct=False)  # 8 s of traffic: no upgrade may happen
    assert r.transfer_ok, r
    assert r.path == "derp" and r.time_to_direct is None, r
    row = next(p for p in a.status().peers if p.addresses[0].split("/")[0] == b.tailscale_ips()[0])
    assert row.derp_bytes_out > r.nbytes and row.derp_bytes_in > r.nbytes, row
    assert peer_path(b, a.tailscale_ips()[0])[0] == "derp"
    if lab["a"].spec.nat == "udp_blocked":  # no STUN answer: A's only endpoint is its LAN address
        st = a.status()
        assert st.endpoints == (f"{lab['a'].node_addrs[0]}:{st.endpoints[0].split(':')[1]}",), st.endpoints
        assert st.derp_connected.get(st.home_region), st  # DERP over TCP carried it all


@pytest.mark.parametrize("cell", [[LanSpec("lan", "easy", nodes=2)]], indirect=True, ids=["same_lan"])
def test_same_lan_goes_direct_on_the_lan_address(cell: tuple[NatLab, LabTailnet]) -> None:
    lab, w = cell
    lan = lab["lan"]
    a, b = w.device(lan.nodes[0], "a"), w.device(lan.nodes[1], "b")
    serve_echo(b)
    r = run_cell(a, b, bound=BOUND)
    assert r.transfer_ok and r.path == "direct", r
    assert r.addr is not None and r.addr.split(":")[0] == lan.node_addrs[1], r  # not the shared WAN address


# -- Python ↔ Go ------------------------------------------------------------------------------------
def _go_short(node_key: str) -> str:
    """Go's short debug form of a node key: ``[`` + first 5 chars of std-base64 + ``]``."""
    return "[" + base64.b64encode(bytes.fromhex(node_key.removeprefix("nodekey:"))).decode()[:5] + "]"


def go_paths(log: str, node_key: str) -> list[str]:
    """The UDP addresses Go's magicsock chose for ``node_key`` (``disco: node [K] d:… now using A``)."""
    return re.findall(rf"disco: node {re.escape(_go_short(node_key))} d:[0-9a-f]+ now using ([0-9.]+:[0-9]+)",
                      log)


GO_BODY = "natlab-" + "0123456789abcdef" * 2048  # 32 KiB of a known body


@pytest.mark.interop
@pytest.mark.parametrize("cell", [two_lans("easy", "easy")], indirect=True, ids=["easy-easy"])
def test_python_and_go_go_direct_behind_easy_nats(cell: tuple[NatLab, LabTailnet]) -> None:
    if reason := gonode.unavailable():
        pytest.skip(reason)
    lab, w = cell
    go_ns = lab["b"].node
    a = w.device(lab["a"].node, "a")
    a_key = a.status().self_node.node_key  # type: ignore[union-attr]
    text = gonode.serving_caddyfile(w.net.control_url, w.key, w.tmp / "gonode", "gonode", GO_BODY, debug=True)
    env = gonode.tailnet_go_env(w.tmp / "home-gonode", w.net.relay.go_env, direct=True)
    go = gonode.caddy_run(go_ns, "gonode", text, w.tmp, env)
    try:
        wait_until(lambda: any(p.hostname == "gonode" for p in a.status().peers), 60,
                   "the Go node in A's status()")
        go_ip = next(p for p in a.status().peers if p.hostname == "gonode").addresses[0].split("/")[0]

        def direct_both() -> bool:
            body = fetch(a, go_ip, 80, timeout=BOUND)  # HTTP/1.0: the body as is, to the FIN
            assert body == GO_BODY.encode(), len(body)  # byte-exact on every request
            return peer_path(a, go_ip)[0] == "direct" and bool(go_paths(go.log(), a_key))

        try:
            wait_until(direct_both, BOUND, "Python and Go both on a direct path")
        except AssertionError as e:
            raise AssertionError(f"{e}\npy: {peer_path(a, go_ip)}\n{go.log_tail(4000)}") from None
        addr = peer_path(a, go_ip)[1]
        assert addr is not None and addr.split(":")[0] == lab["b"].wan_addr
        used = go_paths(go.log(), a_key)[-1]
        assert used.split(":")[0] == lab["a"].wan_addr, used  # Go reached A through A's NAT
    finally:
        gonode.stop_all(go_ns)


# -- a 1280-MTU underlay ---------------------------------------------------------------------------
@pytest.mark.parametrize("cell", [[LanSpec("a", "easy", mtu=1280), LanSpec("b", "easy", mtu=1280)],
                                  [LanSpec("a", "easy", wan_mtu=1280), LanSpec("b", "easy", wan_mtu=1280)]],
                         indirect=True, ids=["easy-easy-mtu1280", "easy-easy-wan-mtu1280"])
def test_1280_mtu_underlay_carries_bulk_on_the_direct_path(cell: tuple[NatLab, LabTailnet]) -> None:
    """WireGuard datagrams of a full 1280-byte tunnel packet are 1340 bytes: above the link's MTU
    (the node's own, or mid-path: then ICMP tells the node's kernel the path MTU). Plain sends are
    fragmented by the kernel; GSO sends of such segments fail with EMSGSIZE, which
    used to drop the whole run silently (the transfer stalled). Disco stays direct, bytes arrive."""
    lab, w = cell
    a, b = w.device(lab["a"].node, "a"), w.device(lab["b"].node, "b")
    serve_echo(b)
    r = run_cell(a, b, bound=BOUND, nbytes=2 << 20)
    assert r.transfer_ok and r.path == "direct", r
    assert peer_path(a, b.tailscale_ips()[0])[0] == "direct"


def test_gso_run_above_the_route_mtu_is_sent_plainly() -> None:
    import socket

    from pytsnet.actors.magicsock.udp_lane import send_on
    from pytsnet.testing.natlab import INTERNET_ADDR

    if reason := netns_available():
        pytest.skip(reason)
    with nat_lab(LanSpec("a", "easy", mtu=1280)) as lab:
        def receiver() -> socket.socket:
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind((INTERNET_ADDR, 0))
            s.settimeout(2)
            return s

        rx = lab.internet.call(receiver)

        def burst() -> tuple[bool, int]:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                res = send_on(s, rx.getsockname(), [bytes([i]) * 1340 for i in range(8)], gso=True)
                return res.gso, res.gso_sends

        try:
            gso, gso_sends = lab["a"].node.call(burst)
            got = []
            with pytest.raises(TimeoutError):
                while True:
                    got.append(rx.recv(4096))
            assert got == [bytes([i]) * 1340 for i in range(8)]  # all of them, reassembled, in order
            assert gso and gso_sends == 0  # GSO stays on for runs that fit; this one went plainly
        finally:
            rx.close()


# -- NAT rebinding ---------------------------------------------------------------------------------
@pytest.mark.parametrize("cell", [two_lans("filtering", "filtering")], indirect=True, ids=["filtering"])
def test_new_public_address_mid_flow_goes_direct_again(cell: tuple[NatLab, LabTailnet]) -> None:
    """A's router comes back with a new public address while a TCP flow runs: the old direct path
    dies (both sides notice it, DERP carries on), and within the bound both go direct again on A's new
    mapping (B learns it from A's disco pings, then A's next STUN report); no byte lost or changed."""
    lab, w = cell
    a, b = w.device(lab["a"].node, "a"), w.device(lab["b"].node, "b")
    serve_echo(b)
    assert run_cell(a, b, bound=BOUND).path == "direct"
    a_ip, b_ip = a.tailscale_ips()[0], b.tailscale_ips()[0]
    sock = a.tcp_connect_blocking(b_ip, ECHO_PORT, timeout=BOUND)
    sock.settimeout(BOUND)
    new = "203.0.113.77"
    lab.rebind("a", new)
    t0, n = time.monotonic(), 0

    def both_direct_on_new() -> bool:
        nonlocal n
        block = bytes([n % 251]) * 700
        sock.sendall(block)
        got = b""
        while len(got) < len(block):
            chunk = sock.recv(len(block) - len(got))
            assert chunk, "echo closed"
            got += chunk
        assert got == block
        n += 1
        a_path, b_path = peer_path(a, b_ip), peer_path(b, a_ip)
        return a_path[0] == "direct" and b_path[0] == "direct" and (b_path[1] or "").startswith(new + ":")

    try:
        wait_until(both_direct_on_new, 2 * BOUND, "both direct again, B on A's new address", interval=0.2)
    finally:
        sock.close()
    assert n > 5 and time.monotonic() - t0 < 2 * BOUND


# -- a port-mapped hard NAT ------------------------------------------------------------------------
@pytest.mark.parametrize("protocol", ["pmp", "pcp", "upnp"])
@pytest.mark.parametrize("cell", [[LanSpec("a", "hard", upnp=True), LanSpec("b", "hard")]], indirect=True,
                         ids=["hard+upnp-hard"])
def test_port_mapping_takes_a_hard_nat_direct(cell: tuple[NatLab, LabTailnet], protocol: str) -> None:
    """Hard NATs on both sides stay on DERP (``test_derp_cells[hard-hard]``); when A's router runs
    miniupnpd and A maps its magicsock port, A advertises WAN:mapped first, B's disco pings reach A
    through the mapping (the replies leave through its conntrack entry) and both go direct. Closing
    A deletes the mapping on the router. Each protocol in turn: A's mapper may use only that one."""
    from pytsnet.testing.miniupnpd import miniupnpd_available
    if reason := miniupnpd_available():
        pytest.skip(reason)
    lab, w = cell
    upnp = lab["a"].upnp
    assert upnp is not None
    a = w.device(lab["a"].node, "a", port_mapping=True, port_mapping_protocols=(protocol,))
    b = w.device(lab["b"].node, "b")
    wait_until(lambda: bool(upnp.redirects()), 15, f"A's mapping on the router ({protocol})")
    ext_port, inside, _ = upnp.redirects()[0]
    assert inside == lab["a"].node_addrs[0]
    mapped = f"{lab['a'].wan_addr}:{ext_port}"
    wait_until(lambda: a.status().endpoints[:1] == (mapped,), 15, "A advertising the mapped endpoint first")
    serve_echo(b)
    r = run_cell(a, b, bound=BOUND)
    assert r.transfer_ok, r
    assert r.path == "direct" and r.time_to_direct is not None and r.time_to_direct < BOUND, r
    wait_until(lambda: peer_path(b, a.tailscale_ips()[0]) == ("direct", mapped), 10,
               "B's route to A direct, on A's mapped endpoint")
    a.close()
    wait_until(lambda: not upnp.redirects(), 10, "the mapping released when A closed")


@pytest.mark.parametrize("cell", [[LanSpec("a", "hard", upnp=True), LanSpec("b", "hard")]], indirect=True,
                         ids=["hard+upnp-hard"])
def test_same_router_without_port_mapping_stays_on_derp(cell: tuple[NatLab, LabTailnet]) -> None:
    """The control for the cell above: miniupnpd runs, A does not map (the default): DERP, no rule."""
    from pytsnet.testing.miniupnpd import miniupnpd_available
    if reason := miniupnpd_available():
        pytest.skip(reason)
    lab, w = cell
    a, b = w.device(lab["a"].node, "a"), w.device(lab["b"].node, "b")
    serve_echo(b)
    r = run_cell(a, b, bound=BOUND, want_direct=False)
    assert r.transfer_ok and r.path == "derp" and r.time_to_direct is None, r
    assert lab["a"].upnp is not None and lab["a"].upnp.redirects() == []
