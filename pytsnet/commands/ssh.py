"""``pytsnet ssh [-l USER] HOST [COMMAND…]``: an SSH client over the tailnet (asyncssh), as its own node.

The command brings up a node of its own (``--dir``/``--control-url``/``--authkey`` as ``pytsnet up``;
``--ephemeral`` for a throwaway one), dials ``HOST:PORT`` on the tailnet (a MagicDNS name or tailnet IP)
and runs COMMAND, or an interactive shell on a PTY when stdin is a terminal. The exit status is the
remote one. Authentication is Tailscale SSH's: "none" (the server authorizes our tailnet identity).
Host keys are not checked against a known_hosts file: the tailnet connection already authenticates the
peer by its WireGuard node key (Go's ``tailscale ssh`` pins keys the netmap publishes; ours are not
published yet).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import os
import sys
import termios
import tty
from typing import Any

import asyncssh

from pytsnet.config import Config
from pytsnet.device import ActorDevice
from pytsnet.errors import PytsnetError


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("ssh", help="SSH to a tailnet node (Tailscale SSH), as a node of its own")
    p.add_argument("--control-url", default=None, help="coordination server (default: $TS_CONTROL_URL)")
    p.add_argument("--authkey", default=None, help="pre-auth key (default: $TS_AUTHKEY / $TS_AUTH_KEY)")
    p.add_argument("--dir", default=None, help="state directory of this client node")
    p.add_argument("--hostname", default=None)
    p.add_argument("--ephemeral", action="store_true")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds to come up and connect")
    p.add_argument("-l", "--login", default=None, help="remote user (default: USER@HOST's, else yours)")
    p.add_argument("-p", "--port", type=int, default=22)
    p.add_argument("target", help="[USER@]HOST")
    p.add_argument("command", nargs=argparse.REMAINDER, help="command to run (default: a login shell)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    return asyncio.run(_main(args))


async def _main(args: argparse.Namespace) -> int:
    user, _, host = args.target.rpartition("@")
    user = args.login or user or getpass.getuser()
    dev = ActorDevice(Config(dir=args.dir, hostname=args.hostname, auth_key=args.authkey,
                             control_url=args.control_url, ephemeral=args.ephemeral or args.dir is None))
    try:
        dev.start()
        try:
            await dev.wait_until_running(args.timeout, fail_fast=True)
            conn_sock = await asyncio.to_thread(dev.connect_socket, host, args.port, args.timeout)
        except PytsnetError as e:
            print(f"pytsnet ssh: {host}:{args.port}: {e}", file=sys.stderr)
            return 255
        try:
            async with asyncssh.connect(sock=conn_sock, host=host, port=args.port, username=user,
                                        known_hosts=None, agent_path=None, client_keys=None,
                                        password=None, preferred_auth="none") as conn:
                return await _session(conn, " ".join(args.command))
        except (OSError, asyncssh.Error) as e:
            print(f"pytsnet ssh: {host}: {e}", file=sys.stderr)
            return 255
    finally:
        await asyncio.to_thread(dev.close)


async def _session(conn: asyncssh.SSHClientConnection, command: str) -> int:
    interactive = sys.stdin.isatty() and not command
    # duplicates: asyncssh closes what it redirects at EOF, and our own stdio must outlive the session
    kwargs: dict[str, Any] = {"encoding": None, "stdin": os.fdopen(os.dup(0), "rb", buffering=0),
                              "stdout": os.fdopen(os.dup(1), "wb", buffering=0),
                              "stderr": os.fdopen(os.dup(2), "wb", buffering=0)}
    saved = None
    if interactive:
        cols, rows = os.get_terminal_size()
        kwargs |= {"term_type": os.environ.get("TERM", "xterm"), "term_size": (cols, rows),
                   "request_pty": "force"}
        saved = termios.tcgetattr(0)
        tty.setraw(0)
    try:
        proc = await conn.create_process(command or None, **kwargs)
        await proc.wait(check=False)
        status = proc.exit_status
    finally:
        if saved is not None:
            with contextlib.suppress(termios.error):
                termios.tcsetattr(0, termios.TCSADRAIN, saved)
    if status is None or status < 0:
        return 255
    return status
