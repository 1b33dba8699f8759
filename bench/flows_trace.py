"""Where the bytes of an idle flow go: a tracemalloc snapshot diff over ``--idle`` accepted idle flows.

Run as root: ``.venv/bin/python bench/flows_trace.py [--idle 2000] [--top 40] [--group lineno|filename]``.
Same rig as ``bench/flows.py --active 0`` (a TUN into a namespace, ``TunLinkActor`` + ``Netstack``,
kernel clients); prints the allocation sites that grew most, in bytes per flow. tracemalloc counts
Python allocations only (not the allocator's slack that RSS also sees), so its total is below
``bench/flows.py``'s RSS figure; it says which objects to shrink.
"""

from __future__ import annotations

import argparse
import importlib.util
import ipaddress
import tracemalloc
from pathlib import Path

from pytsnet.actors.runtime import ActorSystem, MailboxConfig
from pytsnet.net import Netstack
from pytsnet.net.link import TunLinkActor
from pytsnet.netstack.config import StackConfig
from pytsnet.testing.netns import isolated_netns
from pytsnet.testing.tun import open_tun

_spec = importlib.util.spec_from_file_location("bench_netstack", Path(__file__).with_name("netstack.py"))
assert _spec is not None and _spec.loader is not None
bench_netstack = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench_netstack)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--idle", type=int, default=2000)
    ap.add_argument("--top", type=int, default=40)
    ap.add_argument("--group", choices=("lineno", "filename"), default="lineno")
    args = ap.parse_args()
    n = args.idle
    with isolated_netns("bft") as ns:
        tun = open_tun(ns, local=bench_netstack.KERNEL, peer=bench_netstack.STACK)
        system = ActorSystem("bench-flows-trace", pool_workers=2)
        try:
            link = system.spawn(TunLinkActor, tun.fd, "netstack", name="tun-link",
                                mailbox=MailboxConfig(65536))
            cfg = StackConfig(addresses=(ipaddress.ip_address(bench_netstack.STACK),),
                              max_tcp_connections=max(16384, n + 16))
            net = Netstack.start(system, cfg, link)
            tracemalloc.start(1)
            snaps: list[tracemalloc.Snapshot] = []
            # idle_connections takes its RSS base before dialing and sleeps 1 s after; snapshot at both.
            orig_rss = bench_netstack.rss_mib

            def rss_and_snap() -> float:
                snaps.append(tracemalloc.take_snapshot())
                return float(orig_rss())

            bench_netstack.rss_mib = rss_and_snap
            rss, _ = bench_netstack.idle_connections(ns, net, n)
            before, after = snaps[0], snaps[1]
            stats = after.compare_to(before, args.group)
            total = sum(s.size_diff for s in stats)
            print(f"idle flows: {n}; RSS +{rss * 1024 / n:.2f} KiB each; traced +{total / n:.0f} B each")
            for s in stats[: args.top]:
                frame = s.traceback[0]
                short = f"{Path(frame.filename).name}:{frame.lineno}"
                where = short if args.group == "lineno" else frame.filename
                print(f"{s.size_diff / n:8.0f} B/flow {s.count_diff / n:6.2f} obj/flow  {where}")
        finally:
            tracemalloc.stop()
            system.shutdown(30)
            tun.close()


if __name__ == "__main__":
    main()
