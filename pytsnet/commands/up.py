"""``pytsnet up``: bring a node up, print its tailnet IPs and peers as they change; Ctrl-C (SIGINT) or
SIGTERM stops it cleanly (exit 0).

The signals are the event loop's own handlers (``add_signal_handler``), not ``asyncio.run``'s default
SIGINT handling: the device's actor threads may be the thread the kernel hands the signal to, and
only the loop's wakeup fd then wakes an idle loop (with the default, ``up`` hung after Ctrl-C).

Its LocalAPI is served on ``<state dir>/localapi.sock`` (mode 0600) unless ``--no-socket``, for
``pytsnet status``/``ip``/``whois``/``logout``/``down``; ``down`` stops it (exit 0).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from collections.abc import Awaitable
from pathlib import Path

from pytsnet.commands.localapi_socket import SOCKET_NAME, default_state_dir
from pytsnet.config import Config
from pytsnet.device import ActorDevice
from pytsnet.errors import RegistrationError


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("up", help="bring a node up against a control server and watch it")
    p.add_argument("--control-url", default=None, help="coordination server (default: $TS_CONTROL_URL)")
    p.add_argument("--authkey", default=None, help="pre-auth key (default: $TS_AUTHKEY / $TS_AUTH_KEY)")
    p.add_argument("--dir", default=None, help="state directory (default: <user config dir>/tsnet-pytsnet)")
    p.add_argument("--socket", default=None, help=f"LocalAPI socket (default: <state dir>/{SOCKET_NAME})")
    p.add_argument("--no-socket", action="store_true", help="serve no LocalAPI socket")
    p.add_argument("--hostname", default=None)
    p.add_argument("--ephemeral", action="store_true")
    p.add_argument("--timeout", type=float, default=0, help="exit 1 if not Running within this (0: wait)")
    p.add_argument("--ipv6", action="store_true",
                   help="use IPv6: the tailnet IPv6 address and an IPv6 underlay (default: IPv4 only)")
    p.set_defaults(func=run)


def say(text: str) -> None:
    print(text, flush=True)


async def _until_stopped(stopped: asyncio.Event, work: Awaitable[object]) -> bool:
    """Run ``work`` until it ends (True; its exception raised) or ``stopped`` is set (False)."""
    task = asyncio.ensure_future(work)
    down = asyncio.ensure_future(stopped.wait())
    try:
        await asyncio.wait([task, down], return_when=asyncio.FIRST_COMPLETED)
    finally:
        down.cancel()
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    if task.cancelled():
        return False
    task.result()
    return True


def _on_signals(loop: asyncio.AbstractEventLoop, stopped: asyncio.Event) -> list[int]:
    """SIGINT and SIGTERM set ``stopped``, once: the next one gets the default (a second Ctrl-C
    raises ``KeyboardInterrupt`` and cuts the clean stop short). The signals received go in the list."""
    received: list[int] = []

    def on_signal(signum: int) -> None:
        received.append(signum)
        for s in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(s)
        stopped.set()

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, on_signal, signum)
    return received


async def _main(args: argparse.Namespace) -> int:
    loop = asyncio.get_running_loop()
    stopped = asyncio.Event()
    interrupted = _on_signals(loop, stopped)
    state_dir = args.dir or (None if args.ephemeral else default_state_dir())
    sock_dir = Path(state_dir or default_state_dir())  # an ephemeral node's socket: the default dir
    sock = None if args.no_socket else (args.socket or str(sock_dir / SOCKET_NAME))
    dev = ActorDevice(Config(dir=state_dir, hostname=args.hostname, auth_key=args.authkey,
                             control_url=args.control_url, ephemeral=args.ephemeral,
                             local_api_socket=sock, ipv6=args.ipv6)).start()

    def on_down() -> None:  # a LocalAPI thread: hand it to the loop
        loop.call_soon_threadsafe(stopped.set)

    dev.local_api().on_down = on_down
    try:
        if args.timeout:
            try:
                running = await _until_stopped(stopped, dev.wait_until_running(args.timeout))
            except RegistrationError as e:
                say(f"error: {type(e).__name__}: {e}")
                return 1
            if not running:
                return 0

        async def states() -> None:
            last = ""
            async for st in dev.watch_state():
                line = f"state {st.state}"
                if st.auth_url:
                    line += f" (visit {st.auth_url})"
                if st.error:
                    line += f" [{st.error_kind}: {st.error}]"
                if st.state == "Running":
                    line += f" ips {' '.join(dev.tailscale_ips())} name {st.name}"
                if line != last:
                    say(line)
                    last = line

        async def peers() -> None:
            async for ch in dev.watch_peers():
                for p in ch.added:
                    say(f"peer + {p.hostname or p.name} {' '.join(p.addresses)} {p.node_key}")
                for p in ch.changed:
                    say(f"peer ~ {p.hostname or p.name} {' '.join(p.endpoints)}")
                for node_id in ch.removed:
                    say(f"peer - {node_id}")

        finished = await _until_stopped(stopped, _gather(states(), peers()))
        if not finished and not interrupted:
            say("state Stopped (down)")
        return 0
    finally:
        await dev.aclose()


async def _gather(*aws: Awaitable[None]) -> None:
    """``gather`` as a coroutine: its task ends ``cancelled()`` when cancelled, where a cancelled
    ``gather`` future ends with a ``CancelledError`` as its exception."""
    await asyncio.gather(*aws)


def run(args: argparse.Namespace) -> int:
    try:
        return asyncio.run(_main(args))
    except KeyboardInterrupt:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
        return 0
