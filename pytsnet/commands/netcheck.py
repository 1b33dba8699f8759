"""``pytsnet netcheck``: the node's last netcheck (nearest DERP region and latencies), in the shape
of ``tailscale netcheck``'s report for the fields this port measures."""

from __future__ import annotations

import argparse
import json

from pytsnet.commands.localapi_socket import add_socket_args, client


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("netcheck", help="show the node's nearest DERP region and latencies")
    p.add_argument("--format", choices=("", "json"), default="")
    add_socket_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    report = json.loads(client(args).request("GET", "netcheck"))
    if args.format == "json":
        print(json.dumps(report, indent=2))
        return 0
    print("\nReport:")
    lat: dict[str, int] = report["RegionLatency"]
    if not report["PreferredDERP"]:
        print("\t* Nearest DERP: unknown (no response to latency probes)")
    else:
        print(f"\t* Nearest DERP: region {report['PreferredDERP']}")
    if lat:
        print("\t* DERP latency:")
        for rid, ns in sorted(lat.items(), key=lambda kv: kv[1]):
            print(f"\t\t- {rid:>3}: {ns / 1e6:.1f}ms".ljust(20) + f" (derp{rid})")
    return 0
