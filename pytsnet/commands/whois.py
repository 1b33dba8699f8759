"""``pytsnet whois ADDR``: the machine and user behind a tailnet IP, ``IP:port`` or node key, as
``tailscale whois`` prints it (or ``--json``: the LocalAPI's ``WhoIsResponse``)."""

from __future__ import annotations

import argparse
import json

from pytsnet.commands.localapi_socket import add_socket_args, client


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("whois", help="show the machine and user of a tailnet address")
    p.add_argument("addr", help="IP, IP:port or nodekey:…")
    p.add_argument("--json", action="store_true")
    p.add_argument("--proto", default="", help="tcp or udp, for IP:port")
    add_socket_args(p)
    p.set_defaults(func=run)


def _go_list(items: list[str] | None) -> str:
    """Go's ``%s`` of a slice: ``[a b]``."""
    return "[" + " ".join(items or []) + "]"


def run(args: argparse.Namespace) -> int:
    who = client(args).whois(args.addr, args.proto)
    if args.json:
        print(json.dumps(who.model_dump(mode="json", exclude_defaults=True), indent=2))
        return 0
    n = who.Node
    rows = [("Machine:", None), ("  Name:", n.Name.rstrip(".")), ("  ID:", n.StableID),
            ("  Addresses:", _go_list(n.Addresses))]
    if n.AllowedIPs and len(n.AllowedIPs) > 2:
        rows.append(("  AllowedIPs:", _go_list(n.AllowedIPs[2:])))
    if n.Tags:
        rows.append(("  Tags:", ", ".join(n.Tags)))
    else:
        rows += [("User:", None), ("  Name:", who.UserProfile.LoginName), ("  ID:", str(who.UserProfile.ID))]
    # Go: tabwriter.NewWriter(Stdout, 10, 5, 5, ' ', 0): a label cell is its block's widest plus 5,
    # at least 10; a line without a tab ("Machine:") ends the block
    blocks: list[list[tuple[str, str | None]]] = []
    for k, v in rows:
        if v is None or not blocks or blocks[-1][-1][1] is None:
            blocks.append([])
        blocks[-1].append((k, v))
    for block in blocks:
        width = max([10, *(len(k) + 5 for k, v in block if v is not None)])
        for k, v in block:
            print(k if v is None else f"{k.ljust(width)}{v}")
    if who.CapMap:
        print("Capabilities:")
        for cap, vals in who.CapMap.items():
            if vals:
                print(f"  - {cap}:\n      " + json.dumps(vals, indent=2).replace("\n", "\n      "))
            else:
                print(f"  - {cap}")
    return 0
