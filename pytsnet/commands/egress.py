"""``pytsnet egress``: the supervised egress front end (issue 23), and ``egress status`` to read one.

``egress --workers N --socks 127.0.0.1:1080 --http 127.0.0.1:3128 --authkey KEY --control-url URL
[--exit-node X] [--upstream-proxy URL] [--status HOST:PORT] [--affinity] [--restart-budget N/SECONDS]
[--drain-timeout S] [--proxy-password PW]`` runs until SIGTERM/SIGINT (a graceful drain, exit 0) or
until the restart budget is spent (exit 1, the reason on stderr). The proxy password may come from
``PYTSNET_EGRESS_PASSWORD`` and the auth key from ``TS_AUTHKEY`` (so neither needs to sit in argv).
``egress status URL|HOST:PORT [--json]`` prints the status endpoint's view as a table.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from typing import Any

EXIT_ESCALATED = 1


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("egress",
                              help="run a supervised egress proxy (SOCKS5/HTTP) over worker processes")
    p.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    p.add_argument("--socks", default=None, metavar="HOST:PORT", help="SOCKS5 listener")
    p.add_argument("--http", default=None, metavar="HOST:PORT", help="HTTP proxy listener (CONNECT, http://)")
    p.add_argument("--authkey", default=None, help="auth key of the workers' ephemeral nodes (or TS_AUTHKEY)")
    p.add_argument("--control-url", default="", help="control server URL")
    p.add_argument("--exit-node", default=None, help="exit node: stable ID, tailnet IP or MagicDNS name")
    p.add_argument("--upstream-proxy", default=None, metavar="URL",
                   help="socks5:// or http:// proxy reached through the tailnet for every flow")
    p.add_argument("--status", default=None, metavar="HOST:PORT", help="serve status JSON (/) and /metrics")
    p.add_argument("--affinity", action="store_true", help="sticky dispatch per client IP")
    p.add_argument("--restart-budget", default="5/60", metavar="N/SECONDS",
                   help="restarts allowed across all workers in a window before escalating (default 5/60)")
    p.add_argument("--drain-timeout", type=float, default=30.0, metavar="S",
                   help="on SIGTERM, how long open flows may take to finish (default 30)")
    p.add_argument("--proxy-password", default=None,
                   help="proxy password (user tsnet); or PYTSNET_EGRESS_PASSWORD; none: loopback only")
    p.add_argument("--heartbeat-interval", type=float, default=0.5, help=argparse.SUPPRESS)
    p.add_argument("--worker-cmd", default=None, help=argparse.SUPPRESS)
    """Tests: a worker command template with ``{fd}`` (``python fake_worker.py --fd {fd}``)."""
    p.set_defaults(func=_run)
    sub = p.add_subparsers(dest="egress_command")
    s = sub.add_parser("status", help="print a running egress's status (from its --status endpoint)")
    s.add_argument("url", help="http://HOST:PORT or HOST:PORT of the status endpoint")
    s.add_argument("--json", action="store_true", help="print the JSON as served")
    s.set_defaults(func=_status)


def _run(args: argparse.Namespace) -> int:
    import shlex

    from pytsnet.egress import Egress, EgressConfig, EgressEscalated
    from pytsnet.egress.config import parse_budget

    worker_command = None
    if args.worker_cmd:
        template = shlex.split(args.worker_cmd)

        def worker_command(fd: int) -> list[str]:
            return [part.replace("{fd}", str(fd)) for part in template]

    cfg = EgressConfig(
        auth_key=args.authkey or os.environ.get("TS_AUTHKEY", ""), control_url=args.control_url,
        workers=args.workers, socks=args.socks, http=args.http, status=args.status,
        proxy_password=args.proxy_password or os.environ.get("PYTSNET_EGRESS_PASSWORD") or None,
        exit_node=args.exit_node, upstream_proxy=args.upstream_proxy, affinity=args.affinity,
        restart_budget=parse_budget(args.restart_budget), drain_timeout=args.drain_timeout,
        heartbeat_interval=args.heartbeat_interval, worker_command=worker_command)
    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    eg = Egress(cfg).start()
    try:
        listening = ", ".join(f"{k} {v}" for k, v in (("socks5", eg.socks_address), ("http", eg.http_address),
                                                      ("status", eg.status_address)) if v)
        print(f"egress: {cfg.workers} worker(s); {listening}", flush=True)
        while not stop.is_set():
            try:
                eg.wait(timeout=0.2)
            except EgressEscalated as e:
                print(f"pytsnet: {e}", file=sys.stderr)
                eg.drain()  # the workers still up were told to drain at the escalation: let them log out
                return EXIT_ESCALATED
        st = eg.drain()
        print(f"egress: {st.state}", flush=True)
        return 0
    finally:
        eg.close()


def _status(args: argparse.Namespace) -> int:
    import httpx
    from rich.console import Console
    from rich.table import Table

    from pytsnet.egress.status import status_url
    from pytsnet.messages.egress import EgressStatus

    url = status_url(args.url) + "/"
    try:
        resp = httpx.get(url, timeout=5.0)
        resp.raise_for_status()
    except httpx.HTTPError as e:
        print(f"pytsnet: error: status from {url}: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(resp.text)
        return 0
    st = EgressStatus.model_validate_json(resp.text)
    console = Console(width=None if sys.stdout.isatty() else 160)  # a pipe: do not squash the columns
    console.print(f"state: {st.state}" + (f" ({st.reason})" if st.reason else ""))
    t = Table("worker", "state", "pid", "ip", "restarts", "open", "flows", "up", "down", "exit", "rss",
              "beat", "last exit")
    for w in st.workers:
        exit_text = "-" if w.exit_node is None else f"{w.exit_node}{'' if w.exit_ok else ' (down)'}"
        t.add_row(str(w.worker), w.state, str(w.pid or "-"), w.ip or "-", str(w.restarts), str(w.flows_open),
                  str(w.flows_total), str(w.bytes_up), str(w.bytes_down), exit_text, str(w.rss),
                  "-" if w.heartbeat_age is None else f"{w.heartbeat_age:.1f}s", w.last_exit or "-")
    console.print(t)
    f = st.front
    console.print(f"front: accepted {f.accepted}, assigned {f.assigned}, refused {f.refused}, "
                  f"bytes in {f.bytes_in}, out {f.bytes_out}, "
                  f"failed by worker loss {f.flows_failed_by_worker_loss}")
    return 0
