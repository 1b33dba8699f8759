"""``pytsnet ip [-4|-6] [PEER]``: the node's (or a peer's) tailnet addresses, one a line, as
``tailscale ip`` (a peer by MagicDNS name, short name, host name or IP)."""

from __future__ import annotations

import argparse

from pytsnet.commands.localapi_socket import add_socket_args, client
from pytsnet.errors import UnknownTailnetHost


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("ip", help="show tailnet IP addresses")
    fam = p.add_mutually_exclusive_group()
    fam.add_argument("-4", dest="v4", action="store_true", help="only the IPv4 address")
    fam.add_argument("-6", dest="v6", action="store_true", help="only the IPv6 address")
    fam.add_argument("-1", dest="one", action="store_true", help="only one address, IPv4 preferred")
    p.add_argument("peer", nargs="?", default=None)
    add_socket_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    st = client(args).status(peers=args.peer is not None)
    if args.peer is None:
        ips = list(st.TailscaleIPs or [])
    else:
        want = args.peer.rstrip(".")
        found = None
        for p in [*(st.Peer or {}).values(), *([st.Self] if st.Self else [])]:
            names = {p.DNSName.rstrip("."), p.DNSName.split(".")[0], p.HostName, *(p.TailscaleIPs or [])}
            if want in names:
                found = p
                break
        if found is None:
            raise UnknownTailnetHost(f"no peer found for {args.peer!r}")
        ips = list(found.TailscaleIPs or [])
    if args.v4 or args.one:
        v4 = [a for a in ips if ":" not in a]
        ips = v4[:1] if v4 or not args.one else ips[:1]
    elif args.v6:
        ips = [a for a in ips if ":" in a][:1]
    if not ips:
        raise UnknownTailnetHost("no such address (" + ("IPv4" if args.v4 else "IPv6" if args.v6 else "any")
                                 + ") for this node")
    for a in ips:
        print(a)
    return 0
