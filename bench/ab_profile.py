"""Before/after on a shared machine: ``bench/profile_e2e.py --no-spy`` in two worktrees, alternated.

Each round runs worktree A's own venv and bench, then B's (each with its own editable install), so
both see the same minutes of background load; the 1-minute load average is recorded before each
run. Prints, per side, the medians of MB/s, each node's CPU µs per data packet (exact, from
``/proc``), context switches per packet and CPU s/MiB, and the per-thread µs per packet by thread
role (flows, engine, UDP reader, app, timers, other). Raw runs stay in ``--out``.

    .venv/bin/python bench/ab_profile.py /work/wt/base /work/wt/mine --rounds 5 --mib 32 --mode direct
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROLES = (("flows", "pool-worker"), ("engine", "wgengine"), ("reader", "io-magicsock"),
         ("derp", "derp"), ("app", "MainThread"), ("timers", "pytsnet-timers"))


def _role(name: str) -> str:
    for role, part in ROLES:
        if part in name:
            return role
    return "other"


def summarise(run: dict[str, object]) -> dict[str, float]:
    """One run's numbers: MB/s and, per node, CPU µs/packet, ctx switches/packet, CPU s/MiB, roles."""
    packets = float(run["data_packets"])  # type: ignore[arg-type]
    mib = float(run["mib"])  # type: ignore[arg-type]
    out = {"mbps": float(run["mbps"])}  # type: ignore[arg-type]
    threads = run["threads"]
    assert isinstance(threads, dict)
    for side in ("alpha", "beta"):
        node = run[side]
        assert isinstance(node, dict)
        names = node["thread_names"]
        total = switches = 0.0
        roles: dict[str, float] = {}
        for tid, (user, sys_, vol, invol) in threads[side].items():
            cpu = user + sys_
            total += cpu
            switches += vol + invol
            role = _role(names.get(tid, "?"))
            roles[role] = roles.get(role, 0.0) + cpu
        out[f"{side}.us"] = total / packets * 1e6
        out[f"{side}.ctx"] = switches / packets
        out[f"{side}.s_per_mib"] = total / mib
        for role, cpu in roles.items():
            out[f"{side}.{role}"] = cpu / packets * 1e6
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("a", nargs="?", help="worktree A (before)")
    ap.add_argument("b", nargs="?", help="worktree B (after)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--mib", type=int, default=32)
    ap.add_argument("--mode", choices=("direct", "derp"), default="direct")
    ap.add_argument("--out", default="/tmp/ab_profile")
    args = ap.parse_args()
    if args.a is None or args.b is None:  # ``make bench`` runs every script bare: say what it needs
        print(__doc__)
        print("ab_profile: give two worktrees (each with its own .venv), e.g. a worktree of main and yours")
        return
    rows: dict[str, list[dict[str, float]]] = {"A": [], "B": []}
    loads: dict[str, list[float]] = {"A": [], "B": []}
    for i in range(args.rounds):
        for tag, tree in (("A", args.a), ("B", args.b)):
            out = Path(args.out) / f"{tag}-{i}"
            load = os.getloadavg()[0]
            cmd = [f"{tree}/.venv/bin/python", "bench/profile_e2e.py", "--mib", str(args.mib), "--mode",
                   args.mode, "--no-spy", "--out", str(out)]
            res = subprocess.run(cmd, cwd=tree, capture_output=True, text=True, check=False)
            path = out / f"{args.mode}-run.json"
            if res.returncode != 0 or not path.exists():
                print(f"round {i} {tag}: failed\n{res.stdout[-2000:]}\n{res.stderr[-2000:]}", file=sys.stderr)
                continue
            s = summarise(json.loads(path.read_text()))
            rows[tag].append(s)
            loads[tag].append(load)
            print(f"round {i} {tag}: load {load:.2f}, {s['mbps']:.1f} MB/s, sender {s['alpha.us']:.1f} µs, "
                  f"receiver {s['beta.us']:.1f} µs", flush=True)
    keys = sorted({k for side in rows.values() for r in side for k in r})
    print(f"\n| median of {args.rounds} | A: {args.a} | B: {args.b} |\n|---|---:|---:|")
    print(f"| load avg (1 min) before runs | {_span(loads['A'])} | {_span(loads['B'])} |")
    for k in keys:
        med = [statistics.median([r.get(k, 0.0) for r in rows[t]]) if rows[t] else float("nan") for t in "AB"]
        print(f"| {k} | {med[0]:.3f} | {med[1]:.3f} |" if "s_per_mib" in k or "ctx" in k
              else f"| {k} | {med[0]:.1f} | {med[1]:.1f} |")


def _span(xs: list[float]) -> str:
    return f"{min(xs):.2f}-{max(xs):.2f}" if xs else "-"


if __name__ == "__main__":
    main()
