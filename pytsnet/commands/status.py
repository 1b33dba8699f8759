"""``pytsnet status``: the node's peers as ``tailscale status`` prints them (or ``--json``).

The table is Go's (cmd/tailscale/cli/status.go at v1.90.9): ``IP  name  owner  OS  status``, self
first, peers sorted as ``ipnstate.SortPeers`` (DNS name, host name, first IP, key), cells padded
as Go's ``tabwriter`` (min width 0, padding 2); a node not Running prints Go's description and
exits 1. ``--json`` prints the LocalAPI's ``Status`` (Go's field names; 2-space indent as Go's CLI).
"""

from __future__ import annotations

import argparse
import json

from pytsnet.commands.localapi_socket import add_socket_args, client
from pytsnet.localapi.types import PeerStatus, Status


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("status", help="show the node's peers (over the LocalAPI socket)")
    p.add_argument("--json", action="store_true", help="print the LocalAPI's Status JSON")
    p.add_argument("--peers", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--self", dest="show_self", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--active", action="store_true", help="only peers with traffic now")
    add_socket_args(p)
    p.set_defaults(func=run)


def tabwrite(rows: list[list[str]], padding: int = 2) -> str:
    """Go ``tabwriter.NewWriter(w, 0, 0, padding, ' ', 0)`` for rows whose every cell ends in a tab."""
    if not rows:
        return ""
    widths = [max(len(r[i]) for r in rows if i < len(r)) for i in range(max(len(r) for r in rows))]
    return "".join("".join(c.ljust(widths[i] + padding) for i, c in enumerate(r)) + "\n" for r in rows)


def description(st: Status) -> tuple[str, bool]:
    """Go ``isRunningOrStarting``."""
    if st.BackendState in ("Running", "Starting"):
        return st.BackendState, True
    if st.BackendState == "Stopped":
        return "Tailscale is stopped.", False
    if st.BackendState == "NeedsLogin":
        return "Logged out." + (f"\nLog in at: {st.AuthURL}" if st.AuthURL else ""), False
    if st.BackendState == "NeedsMachineAuth":
        return "Machine is not yet approved by tailnet admin.", False
    return f"unexpected state: {st.BackendState}", False


def _name(st: Status, ps: PeerStatus) -> str:
    """Go ``dnsOrQuoteHostname``."""
    base = ps.DNSName.rstrip(".")
    if st.MagicDNSSuffix and base.endswith("." + st.MagicDNSSuffix):
        base = base[:-len(st.MagicDNSSuffix) - 1]
    elif st.MagicDNSSuffix and base == st.MagicDNSSuffix:
        base = ""
    return base if base else f"({json.dumps(ps.HostName)})"


def _owner(st: Status, ps: PeerStatus) -> str:
    """Go ``ownerLogin``."""
    uid = ps.AltSharerUserID or ps.UserID
    if not uid:
        return "-"
    u = (st.User or {}).get(str(uid))
    if u is None:
        return str(uid)
    at = u.LoginName.find("@")
    return u.LoginName[:at + 1] if at != -1 else u.LoginName


def _status_cell(ps: PeerStatus) -> str:
    """Go ``printPS``'s last column (``LastSeen`` is never set here: a peer's offline time unknown)."""
    any_traffic = ps.TxBytes != 0 or ps.RxBytes != 0
    offline = "" if ps.Online else "; offline"
    if not ps.Active:
        if ps.ExitNode:
            out = "idle; exit node" + offline
        elif ps.ExitNodeOption:
            out = "idle; offers exit node" + offline
        elif any_traffic:
            out = "idle" + offline
        elif not ps.Online:
            out = "offline"
        else:
            out = "-"
    else:
        out = "active; "
        if ps.ExitNode:
            out += "exit node; "
        elif ps.ExitNodeOption:
            out += "offers exit node; "
        if ps.Relay and not ps.CurAddr and not ps.PeerRelay:
            out += f"relay {json.dumps(ps.Relay)}"
        elif ps.CurAddr:
            out += f"direct {ps.CurAddr}"
        elif ps.PeerRelay:
            out += f"peer-relay {ps.PeerRelay}"
        if not ps.Online:
            out += offline
    if any_traffic:
        out += f", tx {ps.TxBytes} rx {ps.RxBytes}"
    return out


def _row(st: Status, ps: PeerStatus) -> list[str]:
    ips = ps.TailscaleIPs or []
    return [ips[0] if ips else "", _name(st, ps), _owner(st, ps), ps.OS, _status_cell(ps)]


def render(st: Status, *, show_self: bool = True, peers: bool = True, active: bool = False) -> str:
    rows = []
    if show_self and st.Self is not None:
        rows.append(_row(st, st.Self))
    if peers:
        ps = sorted((p for p in (st.Peer or {}).values() if not p.ShareeNode),
                    key=lambda p: (p.DNSName, p.HostName, p.TailscaleIPs[0] if p.TailscaleIPs else "",
                                   p.PublicKey))
        rows += [_row(st, p) for p in ps if p.Active or not active]
    out = tabwrite(rows)
    if st.Health:
        out += "\n# Health check:\n" + "".join(f"#     - {m}\n" for m in st.Health)
    return out


def run(args: argparse.Namespace) -> int:
    st = client(args).status(peers=args.peers)
    if args.json:
        print(json.dumps(st.model_dump(mode="json", exclude_defaults=True), indent=2))
        return 0
    text, ok = description(st)
    if not ok:
        print(text)
        return 1
    print(render(st, show_self=args.show_self, peers=args.peers, active=args.active), end="")
    return 0
