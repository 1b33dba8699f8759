"""Benchmark: the NAT traversal matrix — which path each pair of nodes gets behind which NATs.

Usage (root): ``.venv/bin/python bench/natlab.py [--pairs py-py,py-go,go-go] [--cells easy/easy,...]``.
Each cell builds a fresh NAT lab (``pytsnet.testing.natlab``): LAN a and LAN b behind routers of the
named NAT types (``same_lan``: both nodes behind one ``easy`` router; ``+mtu1280``: every link of both
LANs at MTU 1280; ``upnp:`` before a type: that router runs miniupnpd and the Python node behind it maps
its port, ``Config(port_mapping=True)``; a Go node there uses its own port mapper; ``portfwd:`` before a
type: that router forwards UDP port ``FWD_PORT`` to its node — a static port forward,
``LanSpec(forward_udp=…)`` — and the node there binds that port, ``Config(port=…)`` or caddy-tailscale's
node ``port``; ``fixport:``: the same node on the fixed port without the forward, the control; both add
a second, far DERP region (``add_far_stun_region``) so netcheck can see a hard NAT's mapping vary),
localnet (control,
DERP, STUN) on the lab's internet. Pairs: ``py-py`` (two in-process Python nodes, A dials B's echo
service), ``py-go`` (Python A fetches a Go tsnet node's 32 KiB page), ``go-go`` (a Go client node
proxies to a Go server node: the reference). Go's path is read from its ``magicsock: disco: node … now
using`` log line. Per cell and pair: the path (direct or DERP) at the end, seconds from the first
exchange to direct, and whether every transfer was byte-exact; each cell is bounded at 30 s of traffic.
A cell where Go goes direct and Python does not is a failure (``FAIL``; the reverse is noted, not
failed).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import re
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pytsnet.testing import gonode
from pytsnet.testing.exitnet import fetch
from pytsnet.testing.natlab import LanSpec, NatLab, nat_lab, sweep_stale
from pytsnet.testing.natlab_net import (
    LabTailnet,
    add_far_stun_region,
    lab_tailnet,
    peer_path,
    run_cell,
    serve_echo,
)
from pytsnet.testing.netns import Netns, netns_available

BOUND = 30.0
CELLS = ["easy/easy", "filtering/filtering", "easy/filtering", "easy/hard", "filtering/hard", "hard/hard",
         "double/double", "double/hard", "none/hard", "udp_blocked/easy", "same_lan", "easy/easy+mtu1280",
         "upnp:hard/hard", "portfwd:hard/filtering", "fixport:hard/filtering"]
PAIRS = ["py-py", "py-go", "go-go"]
GO_BODY = "natlab-" + "0123456789abcdef" * 2048
FWD_PORT = 41641
"""The fixed magicsock port of A in the ``portfwd:``/``fixport:`` cells (the router forwards it)."""


@dataclass
class Row:
    cell: str
    pair: str
    path: str
    t_direct: float | None
    ok: bool
    note: str = ""


def specs(cell: str) -> list[LanSpec]:
    base, _, opt = cell.partition("+")
    mtu = 1280 if opt == "mtu1280" else None
    if base == "same_lan":
        return [LanSpec("a", "easy", nodes=2, mtu=mtu)]
    a, b = base.split("/")
    return [LanSpec(name, nat.split(":")[-1], mtu=mtu, upnp=nat.startswith("upnp:"),  # type: ignore[arg-type]
                    forward_udp=FWD_PORT if nat.startswith("portfwd:") else None)
            for name, nat in (("a", a), ("b", b))]


def fixed_port(cell: str) -> bool:
    """A binds ``FWD_PORT`` (and the region gets a second STUN node) in this cell."""
    return cell.startswith(("portfwd:", "fixport:"))


def py_cfg(lab: NatLab, name: str, cell: str = "") -> dict[str, Any]:
    """A Python node behind a miniupnpd router maps its port (off by default); A of a fixed-port
    cell binds ``FWD_PORT``."""
    lan = lab.lans.get(name)
    cfg: dict[str, Any] = {"port_mapping": True} if lan is not None and lan.spec.upnp else {}
    if name == "a" and fixed_port(cell):
        cfg["port"] = FWD_PORT
    return cfg


def nodes(lab: NatLab) -> tuple[Netns, Netns]:
    if "b" in lab.lans:
        return lab["a"].node, lab["b"].node
    return lab["a"].nodes[0], lab["a"].nodes[1]


def go_short(node_key: str) -> str:
    return "[" + base64.b64encode(bytes.fromhex(node_key.removeprefix("nodekey:"))).decode()[:5] + "]"


def go_direct(log: str, node_key: str) -> list[str]:
    return re.findall(rf"disco: node {re.escape(go_short(node_key))} d:[0-9a-f]+ now using ([0-9.]+:[0-9]+)",
                      log)


def upnp_note(lab: NatLab) -> str:
    """The miniupnpd routers' UDP mappings now (who mapped: Python's or Go's port mapper)."""
    return " ".join(f"{n}-upnp:{lan.upnp.redirects()}" for n, lan in lab.lans.items() if lan.upnp)


def py_py(lab: NatLab, w: LabTailnet, cell: str) -> Row:
    na, nb = nodes(lab)
    a, b = w.device(na, "a", **py_cfg(lab, "a", cell)), w.device(nb, "b", **py_cfg(lab, "b", cell))
    serve_echo(b)
    r = run_cell(a, b, bound=BOUND, nbytes=1 << 20)
    b_to_a = peer_path(b, a.tailscale_ips()[0])[1] if fixed_port(cell) else None  # on A's forward?
    note = f"{r.addr or ''} {upnp_note(lab)}" + (f" b->a:{b_to_a}" if b_to_a else "")
    return Row("", "py-py", r.path, r.time_to_direct, r.transfer_ok, note)


def go_server(w: LabTailnet, ns: Netns, name: str) -> tuple[gonode.GoNode, Any]:
    text = gonode.serving_caddyfile(w.net.control_url, w.key, w.tmp / name, name, GO_BODY, debug=True)
    env = gonode.tailnet_go_env(w.tmp / f"home-{name}", w.net.relay.go_env, direct=True)
    go = gonode.caddy_run(ns, name, text, w.tmp, env)
    end = time.monotonic() + 60
    while time.monotonic() < end:
        node = next((n for n in w.net.nodes() if n.hostname == name), None)
        if node is not None and node.ipv4:
            return go, node
        time.sleep(0.2)
    raise RuntimeError(f"{name} did not register:\n{go.log_tail()}")


def py_go(lab: NatLab, w: LabTailnet, cell: str) -> Row:
    na, nb = nodes(lab)
    a = w.device(na, "a", **py_cfg(lab, "a", cell))
    go, node = go_server(w, nb, "gosrv")
    try:
        a_key = a.status().self_node.node_key
        ok, t0, t_direct = True, None, None
        end = time.monotonic() + 60  # the first fetch waits for the netmap: not counted
        while time.monotonic() < end:
            try:
                ok = fetch(a, node.ipv4, 80, timeout=BOUND) == GO_BODY.encode() and ok
                t0 = time.monotonic()
                break
            except (OSError, AssertionError):
                time.sleep(0.5)
        if t0 is None:
            return Row("", "py-go", "none", None, False, "no first fetch")
        while time.monotonic() - t0 < BOUND:
            ok = fetch(a, node.ipv4, 80, timeout=BOUND) == GO_BODY.encode() and ok
            py_d = peer_path(a, node.ipv4)[0] == "direct"
            go_d = bool(go_direct(go.log(), a_key))
            if py_d and go_d:
                t_direct = time.monotonic() - t0
                break
            if time.monotonic() - t0 > 8 and not py_d and not go_d:
                break  # neither side found a path in 8 s of traffic: a DERP cell
            time.sleep(0.3)
        py_path = peer_path(a, node.ipv4)[0]
        go_path = "direct" if go_direct(go.log(), a_key) else "derp"
        path = py_path if py_path == go_path else f"py:{py_path}/go:{go_path}"
        used = go_direct(go.log(), a_key)  # the Go server's path to A (A's forward, in portfwd:)
        note = upnp_note(lab) + (f" b->a:{used[-1]}" if used else "")
        return Row("", "py-go", path, t_direct, ok, note)
    finally:
        gonode.stop_all(nb)


def go_go(lab: NatLab, w: LabTailnet, cell: str) -> Row:
    na, nb = nodes(lab)
    srv, node = go_server(w, nb, "gosrv")
    try:
        env = gonode.tailnet_go_env(w.tmp / "home-gocli", w.net.relay.go_env, direct=True)
        text = gonode.client_caddyfile(w.net.control_url, w.key, w.tmp / "gocli", f"http://{node.ipv4}:80",
                                       hostname="gocli", debug=True,
                                       udp_port=FWD_PORT if fixed_port(cell) else 0)
        cli = gonode.caddy_run(na, "gocli", text, w.tmp, env)

        def get() -> bool:
            r = na.run(["curl", "-s", "-m", str(int(BOUND)), "http://127.0.0.1:8080/"], check=False,
                       timeout=BOUND + 10)
            return r.stdout == GO_BODY

        ok, t0, t_direct = True, None, None
        end = time.monotonic() + 90  # the first request starts the client node: not counted
        while time.monotonic() < end:
            if get():
                t0 = time.monotonic()
                break
            time.sleep(0.5)
        if t0 is None:
            return Row("", "go-go", "none", None, False, "no first request: " + cli.log_tail(300))
        while time.monotonic() - t0 < BOUND:
            ok = get() and ok
            if go_direct(cli.log(), node.node_key):
                t_direct = time.monotonic() - t0
                break
            if time.monotonic() - t0 > 8:
                break
            time.sleep(0.3)
        path = "direct" if go_direct(cli.log(), node.node_key) else "derp"
        used = go_direct(cli.log(), node.node_key)
        cli_key = next((n.node_key for n in w.net.nodes() if n.hostname == "gocli"), "")
        back = go_direct(srv.log(), cli_key) if cli_key and fixed_port(cell) else []  # the server's path to A
        return Row("", "go-go", path, t_direct, ok, f"{used[-1] if used else ''} {upnp_note(lab)}"
                   + (f" b->a:{back[-1]}" if back else ""))
    finally:
        gonode.stop_all(na)
        gonode.stop_all(nb)


RUN = {"py-py": py_py, "py-go": py_go, "go-go": go_go}


def run(cell: str, pair: str) -> Row:
    with tempfile.TemporaryDirectory() as tmp, nat_lab(*specs(cell)) as lab, \
            lab_tailnet(lab, Path(tmp)) as w, \
            add_far_stun_region(w) if fixed_port(cell) else contextlib.nullcontext():
        try:
            row = RUN[pair](lab, w, cell)
        except Exception as e:  # one broken cell does not stop the matrix
            row = Row("", pair, "error", None, False, repr(e)[:120])
    row.cell = cell
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", default=",".join(PAIRS))
    ap.add_argument("--cells", default=",".join(CELLS))
    args = ap.parse_args()
    if reason := netns_available():
        print(f"natlab bench skipped: {reason}")
        return
    pairs = args.pairs.split(",")
    if any(p.startswith("go") or p.endswith("go") for p in pairs) and (why := gonode.unavailable()):
        print(f"Go pairs skipped: {why}")
        pairs = [p for p in pairs if p == "py-py"]
    sweep_stale()
    rows: list[Row] = []
    print(f"{'cell':22} {'pair':6} {'path':22} {'t_direct':>9} {'transfer':8}")
    for cell in args.cells.split(","):
        for pair in pairs:
            r = run(cell, pair)
            rows.append(r)
            t = f"{r.t_direct:.2f}s" if r.t_direct is not None else "-"
            print(f"{r.cell:22} {r.pair:6} {r.path:22} {t:>9} {'ok' if r.ok else 'FAILED':8} {r.note}",
                  flush=True)
    fails = []
    for cell in args.cells.split(","):
        by = {r.pair: r for r in rows if r.cell == cell}
        ref = by.get("go-go")
        for pair in ("py-py", "py-go"):
            got = by.get(pair)
            if got is None or ref is None:
                continue
            if ref.path == "direct" and got.path != "direct":
                fails.append(f"{cell} {pair}: Go goes direct, pytsnet {got.path}")
            elif ref.path == "derp" and got.path == "direct":
                print(f"note: {cell} {pair}: direct where Go stays on DERP")
    bad = [f"{r.cell} {r.pair}: transfer not byte-exact" for r in rows if not r.ok]
    for f in fails + bad:
        print("FAIL", f)
    with contextlib.suppress(Exception):
        sys.stdout.flush()
    if fails or bad:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
