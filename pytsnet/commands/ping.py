"""``pytsnet ping HOST``: disco pings to a peer until a direct path answers, as ``tailscale ping``.

Go's loop (cmd/tailscale/cli/ping.go at v1.90.9): up to ``-c`` pings a second apart, each printed
``pong from NAME (IP) via PATH in LATENCY`` (``PATH``: the direct ``ip:port`` or ``DERP(region)``),
stopping at the first direct pong (``--until-direct``, default on). Only disco pings: this node has
no TSMP or ICMP sender (``--tsmp``/``--icmp`` are refused by the LocalAPI).
"""

from __future__ import annotations

import argparse
import ipaddress
import time

from pytsnet.commands.localapi_socket import add_socket_args, client
from pytsnet.commands.status import description
from pytsnet.errors import LocalApiError, UnknownTailnetHost
from pytsnet.localapi.types import Status


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("ping", help="ping a peer at the disco layer (shows direct or DERP)")
    p.add_argument("host", help="peer MagicDNS name, host name or tailnet IP")
    p.add_argument("-c", "--c", dest="num", type=int, default=10, help="max number of pings (0: no limit)")
    p.add_argument("--until-direct", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--tsmp", action="store_true", help="TSMP ping (not supported by this node)")
    p.add_argument("--icmp", action="store_true", help="ICMP ping (not supported by this node)")
    add_socket_args(p)
    p.set_defaults(func=run)


def go_duration(seconds: float) -> str:
    """Go ``time.Duration.Round(time.Millisecond).String()`` for a ping's latency."""
    ms = round(seconds * 1000)
    if ms == 0:
        return "0s"
    if ms < 1000:
        return f"{ms}ms"
    return f"{ms / 1000:.3f}".rstrip("0").rstrip(".") + "s"


def resolve(st: Status, host: str) -> tuple[str, bool]:
    """Go ``tailscaleIPFromArg``: an IP as is, else a peer's (or our) name; ``(ip, is_self)``."""
    try:
        ip = str(ipaddress.ip_address(host))
        return ip, ip in (st.TailscaleIPs or [])
    except ValueError:
        pass
    want = host.rstrip(".").lower()
    for ps, me in [*((p, False) for p in (st.Peer or {}).values()), *([(st.Self, True)] if st.Self else [])]:
        names = {ps.DNSName.rstrip(".").lower(), ps.DNSName.split(".")[0].lower(), ps.HostName.lower()}
        if want in names and ps.TailscaleIPs:
            return ps.TailscaleIPs[0], me
    raise UnknownTailnetHost(f"unknown hostname: {host}")


def run(args: argparse.Namespace) -> int:
    lc = client(args)
    st = lc.status()
    text, ok = description(st)
    if not ok:
        print(text)
        return 1
    ip, me = resolve(st, args.host)
    if me:
        print(f"{ip} is local Tailscale IP")
        return 0
    kind = "TSMP" if args.tsmp else "ICMP" if args.icmp else "disco"
    n, any_pong = 0, False
    while True:
        n += 1
        pr = lc.ping(ip, kind)
        if pr.Err.startswith("timeout"):
            print(f"ping {ip!r} timed out".replace("'", '"'))
        elif pr.Err:
            if pr.IsLocalIP:
                print(pr.Err)
                return 0
            raise LocalApiError(pr.Err)
        else:
            any_pong = True
            via = f"DERP({pr.DERPRegionCode})" if pr.DERPRegionID else (pr.Endpoint or kind)
            print(f"pong from {pr.NodeName} ({pr.NodeIP}) via {via} in {go_duration(pr.LatencySeconds)}",
                  flush=True)
            if pr.Endpoint and args.until_direct:
                return 0
        if n == args.num:
            if not any_pong:
                raise LocalApiError("no reply")
            if args.until_direct:
                raise LocalApiError("direct connection not established")
            return 0
        time.sleep(1.0)
