"""``pytsnet ping HOST``: disco (or ``--icmp``, ``--tsmp``) pings to a peer, as ``tailscale ping``.

Go's loop (cmd/tailscale/cli/ping.go at v1.90.9): up to ``-c`` pings a second apart, each printed
``pong from NAME (IP) via PATH in LATENCY`` (``PATH``: the direct ``ip:port`` or ``DERP(region)``,
else the ping type; ``, PORT`` after the IP when a TSMP pong names the peer's PeerAPI port),
stopping at the first direct pong (``--until-direct``, default on); an ICMP or TSMP ping stops at
its first pong. A ping that times out prints ``ping "IP" timed out`` and the next one goes at once.
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
    p.add_argument("--tsmp", action="store_true",
                   help="do a TSMP-level ping (through WireGuard, but not either host OS stack)")
    p.add_argument("--icmp", action="store_true",
                   help="do a ICMP-level ping (through WireGuard, but not the local host OS stack)")
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
            print(f"ping {ip!r} timed out".replace("'", '"'), flush=True)
            if n == args.num:
                if not any_pong:
                    raise LocalApiError("no reply")
                return 0
            continue
        if pr.Err:
            if pr.IsLocalIP:
                print(pr.Err)
                return 0
            raise LocalApiError(pr.Err)
        via = pr.Endpoint
        if pr.PeerRelay:
            via = f"peer-relay({pr.PeerRelay})"
        elif pr.DERPRegionID:
            via = f"DERP({pr.DERPRegionCode})"
        any_pong = True
        extra = f", {pr.PeerAPIPort}" if pr.PeerAPIPort else ""
        latency = go_duration(pr.LatencySeconds)
        print(f"pong from {pr.NodeName} ({pr.NodeIP}{extra}) via {via or kind} in {latency}", flush=True)
        if args.tsmp or args.icmp:
            return 0
        if pr.Endpoint and args.until_direct:
            return 0
        time.sleep(1.0)
        if n == args.num:
            if not any_pong:
                raise LocalApiError("no reply")
            if args.until_direct:
                raise LocalApiError("direct connection not established")
            return 0
