"""``pytsnet trace show FILE`` and ``pytsnet trace replay FILE --actor NAME [--state DIR]``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from pytsnet.actors.runtime.replay import ReplayError, SecretSource, replay_file
from pytsnet.actors.runtime.trace import read_trace


def register(sub: Any) -> None:
    p = sub.add_parser("trace", help="show or replay an actor trace (JSONL, see PYTSNET_TRACE)")
    tsub = p.add_subparsers(dest="trace_command", required=True)
    show = tsub.add_parser("show", help="print trace records readably")
    show.add_argument("file")
    show.add_argument("--actor", help="only records where this actor is sender or receiver")
    show.add_argument("--type", help="only messages whose tag contains this text")
    show.add_argument("--since", type=float, default=None, help="seconds since the first record")
    show.set_defaults(func=_show)
    rep = tsub.add_parser("replay", help="replay one actor's inbox and report the first divergence")
    rep.add_argument("file")
    rep.add_argument("--actor", required=True)
    rep.add_argument("--state", metavar="DIR", default=None,
                     help="the device's state dir (Config.dir): where secrets the trace redacted are read")
    rep.set_defaults(func=_replay)


def format_record(r: dict[str, Any], t0: float) -> str:
    t = f"{r['mono'] - t0:9.3f}s"
    ev = r["ev"]
    if ev == "recv":
        body = json.dumps(r["msg"]["data"], sort_keys=True)
        out = f"error={r['error']}" if r["error"] else (
            f"reply={json.dumps(r['reply'], sort_keys=True)}" if r["reply"] is not None else "")
        return (f"{t} recv {r['sender'] or '-'} -> {r['receiver']}#{r['incarnation']} {r['kind']} "
                f"{r['tag']} {body} {out}").rstrip()
    if ev == "send":
        return f"{t} send {r['sender']} -> {r['receiver']} {r['kind']} {r['tag']} (cause {r['cause']})"
    if ev == "spawn":
        return f"{t} spawn {r['actor']}#{r['incarnation']} {r['class']}"
    return f"{t} exit {r['actor']}#{r['incarnation']} {r['reason'] or 'normal'}"


def _show(args: argparse.Namespace) -> int:
    records = read_trace(args.file)
    t0 = records[0]["mono"] if records else 0.0
    for r in records:
        if args.actor and args.actor not in (r.get("actor"), r.get("sender"), r.get("receiver")):
            continue
        if args.type and args.type not in r.get("tag", ""):
            continue
        if args.since is not None and r["mono"] - t0 < args.since:
            continue
        print(format_record(r, t0))
    return 0


def state_secrets(state_dir: str) -> SecretSource:
    """Secrets by ``(state key, JSON field)`` from the ``tailscaled.state`` in ``state_dir``."""
    from pytsnet.state import STATE_FILE, FileStore, StateStoreError

    path = Path(state_dir) / STATE_FILE
    if not path.is_file():
        raise ReplayError(f"no {STATE_FILE} in {state_dir}: --state takes the device's Config.dir")
    try:
        store = FileStore(path)
    except StateStoreError as e:
        raise ReplayError(str(e)) from None

    def lookup(key: str, field: str) -> str | None:
        raw = store.read_state(key)
        try:
            value = json.loads(raw).get(field) if raw else None
        except (ValueError, AttributeError):
            return None
        return value if isinstance(value, str) and value else None

    return lookup


def _replay(args: argparse.Namespace) -> int:
    try:
        secrets = state_secrets(args.state) if args.state else None
        result = replay_file(args.file, args.actor, secrets=secrets)
    except ReplayError as e:
        print(f"cannot replay: {e}")
        return 2
    if result.identical:
        print(f"{args.actor}: {result.messages} messages replayed, identical")
        return 0
    print(f"{args.actor}: {result.divergence}")
    return 1
