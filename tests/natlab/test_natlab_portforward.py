"""A hard NAT with a static port forward: Go's ``EndpointSTUN4LocalPort`` guess, end to end.

Go's ``determineEndpoints`` (magicsock.go): when netcheck says the mapping varies by destination and
magicsock is bound to a fixed port, it also advertises STUN-IP:that-port, for a router that forwards
the port (worst case a candidate that never answers). Ours does the same (``StunProber._endpoints``;
unit-tested in ``test_natlab_endpoints.py``). Here the lab proves it: A behind a ``hard`` router that
forwards UDP port ``P`` to A (``LanSpec(forward_udp=P)``), A bound to ``P``, B behind ``filtering``
(address-and-port-dependent filtering: A's random-port pings never get in, so only the guess can make
the path). Netcheck needs two STUN destinations to see the mapping vary: the lab adds a second, far
DERP region (``add_far_stun_region``). Direct on A's WAN:P with the forward; DERP without it, with A
on another port, or with one region (no guess) — the guess, not luck, makes the difference. Go on A's
side does the same (its ``stun4localport`` endpoint, its peer's path on WAN:P).
"""

from __future__ import annotations

import base64
import re
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from pytsnet.testing import gonode
from pytsnet.testing.exitnet import fetch
from pytsnet.testing.natlab import INTERNET_ADDR, LanSpec, NatLab, nat_lab, nft_rules
from pytsnet.testing.natlab_net import (
    LabTailnet,
    add_far_stun_region,
    lab_tailnet,
    peer_path,
    run_cell,
    serve_echo,
)
from pytsnet.testing.netns import Netns, netns_available
from pytsnet.testing.polling import wait_until

BOUND = 30.0
P = 41641  # Go's default tailscaled port: the one a user would forward


# -- the LanSpec field and its rule ----------------------------------------------------------------
@pytest.mark.parametrize("nat", ["none", "double", "udp_blocked"])
def test_forward_needs_a_single_nat_router_that_passes_udp(nat: str) -> None:
    with pytest.raises(ValueError, match="forward_udp"):
        LanSpec("a", nat, forward_udp=P)  # type: ignore[arg-type]


@pytest.mark.parametrize("port", [0, 65536])
def test_forward_port_in_range(port: int) -> None:
    with pytest.raises(ValueError, match="forward_udp"):
        LanSpec("a", "hard", forward_udp=port)


def test_rule_dnats_that_port_only() -> None:
    rules = nft_rules("hard", forward_udp=("10.1.0.10", P))
    assert f'iifname "wan" udp dport {P} dnat ip to 10.1.0.10:{P}' in rules
    assert "masquerade random" in rules  # the mapping stays endpoint-dependent
    assert "dnat ip to" not in nft_rules("hard")


# -- topology: the kernel forwards exactly that port ------------------------------------------------
def _udp(ns: Netns, port: int) -> socket.socket:
    def make() -> socket.socket:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("0.0.0.0", port))
        s.settimeout(1.0)
        return s

    return ns.call(make)


def _recv(s: socket.socket) -> tuple[bytes, tuple[str, int]] | None:
    try:
        return s.recvfrom(2048)
    except TimeoutError:
        return None


@pytest.mark.root
def test_unsolicited_datagram_to_the_forwarded_port_reaches_the_node() -> None:
    """From the internet, never contacted by the inside: WAN:P reaches A's socket on P (source
    unchanged) and A's answer leaves from WAN:P; WAN:P+1 stays filtered, and the same router
    without the forward drops WAN:P. The mapping of A's own traffic stays endpoint-dependent."""
    if reason := netns_available():
        pytest.skip(reason)
    with nat_lab(LanSpec("fwd", "hard", forward_udp=P), LanSpec("plain", "hard")) as lab:
        socks = [_udp(lab["fwd"].node, P), _udp(lab["fwd"].node, P + 1), _udp(lab["plain"].node, P)]
        outside = lab.internet.call(lambda: _udp_bound(INTERNET_ADDR))
        try:
            on_p, on_p1, plain = socks
            outside.sendto(b"in", (lab["fwd"].wan_addr, P))
            got = _recv(on_p)
            assert got is not None and got[0] == b"in" and got[1] == outside.getsockname(), got
            on_p.sendto(b"back", got[1])
            back = _recv(outside)
            assert back == (b"back", (lab["fwd"].wan_addr, P)), back  # through the forward's conntrack
            outside.sendto(b"in", (lab["fwd"].wan_addr, P + 1))
            assert _recv(on_p1) is None
            outside.sendto(b"in", (lab["plain"].wan_addr, P))
            assert _recv(plain) is None
            seen = set()
            for port in (3478, 3479):  # the reflectors: a new destination each, a new mapping each
                on_p1.sendto(b"who", (INTERNET_ADDR, port))
                r = _recv(on_p1)
                assert r is not None
                seen.add(r[0])
            assert len(seen) == 2, seen
        finally:
            for s in (*socks, outside):
                s.close()


def _udp_bound(host: str) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((host, 0))
    s.settimeout(1.0)
    return s


# -- the cells -------------------------------------------------------------------------------------
@pytest.fixture
def cell(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[NatLab, LabTailnet]]:
    """``(forward_udp, far_region)``: A behind ``hard`` (with that forward), B behind ``filtering``,
    localnet with a second, far STUN region when ``far_region``."""
    if reason := netns_available():
        pytest.skip(reason)
    forward, far = request.param
    with nat_lab(LanSpec("a", "hard", forward_udp=forward), LanSpec("b", "filtering")) as lab, \
            lab_tailnet(lab, tmp_path) as w:
        if far:
            with add_far_stun_region(w):
                yield lab, w
        else:
            yield lab, w


def _endpoints_settled(dev: object, n: int) -> tuple[str, ...]:
    eps: tuple[str, ...] = ()

    def enough() -> bool:
        nonlocal eps
        eps = dev.status().endpoints  # type: ignore[attr-defined]
        return len(eps) >= n

    wait_until(enough, 15, f"{n} endpoints")
    return eps


@pytest.mark.root
@pytest.mark.parametrize("cell", [(P, True)], indirect=True, ids=["hard+fwd-filtering"])
def test_python_guesses_the_forwarded_port_and_goes_direct(cell: tuple[NatLab, LabTailnet]) -> None:
    lab, w = cell
    a, b = w.device(lab["a"].node, "a", port=P), w.device(lab["b"].node, "b")
    guess = f"{lab['a'].wan_addr}:{P}"
    eps = _endpoints_settled(a, 3)  # STUN, the guess, the LAN address
    assert guess in eps, eps
    serve_echo(b)
    r = run_cell(a, b, bound=BOUND, nbytes=1 << 20)
    assert r.transfer_ok, r
    assert r.path == "direct" and r.time_to_direct is not None and r.time_to_direct < BOUND, r
    wait_until(lambda: peer_path(b, a.tailscale_ips()[0]) == ("direct", guess), 10,
               "B's route to A direct, on A's forwarded WAN:P")
    assert r.addr is not None and r.addr.split(":")[0] == lab["b"].wan_addr, r


@pytest.mark.root
@pytest.mark.parametrize(("cell", "a_port"), [((None, True), P), ((P, True), 0), ((P, False), P)],
                         indirect=["cell"], ids=["no-forward", "a-on-another-port", "one-stun-region"])
def test_without_the_forward_or_the_guess_it_stays_on_derp(cell: tuple[NatLab, LabTailnet],
                                                            a_port: int) -> None:
    """The controls: the same lab without the forward (the guess is advertised, nothing answers it),
    with the forward but A on an OS-chosen port (nothing to guess), and with the forward but one STUN
    region (netcheck cannot see the mapping vary: no guess). 8 s of traffic, no upgrade."""
    lab, w = cell
    a, b = w.device(lab["a"].node, "a", port=a_port), w.device(lab["b"].node, "b")
    guess = f"{lab['a'].wan_addr}:{P}"
    eps = _endpoints_settled(a, 2)
    assert (guess in eps) == (lab["a"].spec.forward_udp is None), eps
    serve_echo(b)
    r = run_cell(a, b, bound=BOUND, want_direct=False)
    assert r.transfer_ok, r
    assert r.path == "derp" and r.time_to_direct is None, r
    assert peer_path(b, a.tailscale_ips()[0])[0] == "derp"


# -- Go on A's side ---------------------------------------------------------------------------------
def _go_short(node_key: str) -> str:
    """Go's short debug form of a node key: ``[`` + first 5 chars of std-base64 + ``]``."""
    return "[" + base64.b64encode(bytes.fromhex(node_key.removeprefix("nodekey:"))).decode()[:5] + "]"


def go_paths(log: str, node_key: str) -> list[str]:
    """The UDP addresses Go's magicsock chose for ``node_key`` (``disco: node [K] d:… now using A``)."""
    return re.findall(rf"disco: node {re.escape(_go_short(node_key))} d:[0-9a-f]+ now using ([0-9.]+:[0-9]+)",
                      log)


GO_BODY = "natlab-fwd-" + "0123456789abcdef" * 2048


@pytest.mark.root
@pytest.mark.interop
@pytest.mark.parametrize("cell", [(P, True)], indirect=True, ids=["hard+fwd-filtering"])
def test_go_on_the_forwarded_side_guesses_the_same_and_goes_direct(cell: tuple[NatLab, LabTailnet]) -> None:
    """A Go tsnet node (caddy-tailscale's per-node ``port``: ``tsnet.Server.Port``) behind the forward,
    Python B fetching its page: Go advertises ``WAN:P (stun4localport)``, B's path to it is WAN:P,
    and Go logs a direct path to B; every page byte-exact."""
    if reason := gonode.unavailable():
        pytest.skip(reason)
    lab, w = cell
    b = w.device(lab["b"].node, "b")
    b_key = b.status().self_node.node_key
    text = gonode.serving_caddyfile(w.net.control_url, w.key, w.tmp / "gonode", "gonode", GO_BODY, debug=True,
                                    udp_port=P)
    env = gonode.tailnet_go_env(w.tmp / "home-gonode", w.net.relay.go_env, direct=True)
    go_ns = lab["a"].node
    go = gonode.caddy_run(go_ns, "gonode", text, w.tmp, env)
    guess = f"{lab['a'].wan_addr}:{P}"
    try:
        wait_until(lambda: f"{guess} (stun4localport)" in go.log(), 60, "Go advertising WAN:P")
        wait_until(lambda: any(p.hostname == "gonode" for p in b.status().peers), 30, "Go in B's peers")
        go_ip = next(p for p in b.status().peers if p.hostname == "gonode").addresses[0].split("/")[0]

        def direct_both() -> bool:
            assert fetch(b, go_ip, 80, timeout=BOUND) == GO_BODY.encode()  # byte-exact on every request
            return peer_path(b, go_ip) == ("direct", guess) and bool(go_paths(go.log(), b_key))

        try:
            wait_until(direct_both, BOUND, "B direct on Go's WAN:P, and Go direct to B")
        except AssertionError as e:
            raise AssertionError(f"{e}\npy: {peer_path(b, go_ip)}\n{go.log_tail(4000)}") from None
        used = go_paths(go.log(), b_key)[-1]
        assert used.split(":")[0] == lab["b"].wan_addr, used
    finally:
        gonode.stop_all(go_ns)
