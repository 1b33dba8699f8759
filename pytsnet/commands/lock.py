"""``pytsnet lock status|init|sign|add|remove|disable|log|disablement-kdf``: Tailnet Lock through the
LocalAPI's ``tka/*`` endpoints, as ``tailscale lock`` (cmd/tailscale/cli/network-lock.go): the same
arguments (``tlpub:``/``nlpub:`` keys, ``disablement-secret:HEX``), texts and ``--json``.

``init`` generates the disablement secrets here (``--gen-disablements N``), prints them once, and sends
only their KDF; without ``--confirm`` it shows what it would do and changes nothing, as Go.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
from collections.abc import Callable

from pytsnet.commands.localapi_socket import add_socket_args, client
from pytsnet.localapi.client import LocalClient
from pytsnet.wire.keys import KeyParseError, NLPublic
from pytsnet.wire.tka import AUM, TkaError, aum_hash_text, disablement_kdf

SECRET_PREFIX = "disablement-secret:"
VALUE_PREFIX = "disablement:"


class _Usage(Exception):
    pass


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("lock", help="manage Tailnet Lock (tailscale lock …)")
    lock = p.add_subparsers(dest="lock_cmd", required=True)
    st = lock.add_parser("status", help="show the state of Tailnet Lock")
    st.add_argument("--json", action="store_true")
    init = lock.add_parser("init", help="initialize Tailnet Lock trusting the given keys")
    init.add_argument("--gen-disablements", type=int, default=1,
                      help="number of disablement secrets to generate")
    init.add_argument("--confirm", action="store_true", help="do it (otherwise only show what it would do)")
    init.add_argument("args", nargs="+",
                      help="tlpub:… keys; disablement:… values or disablement-secret:… secrets")
    sign = lock.add_parser("sign", help="sign a node key (and give it a rotation key)")
    sign.add_argument("node_key")
    sign.add_argument("rotation_key", nargs="?", default="")
    for name, what in (("add", "trust more keys"), ("remove", "stop trusting keys")):
        q = lock.add_parser(name, help=what)
        q.add_argument("keys", nargs="+")
    dis = lock.add_parser("disable", help="disable Tailnet Lock for the whole tailnet")
    dis.add_argument("secret", help="disablement-secret:…")
    log = lock.add_parser("log", help="list the changes to the lock, newest first")
    log.add_argument("--limit", type=int, default=50)
    log.add_argument("--json", action="store_true")
    kdf = lock.add_parser("disablement-kdf", help="the public value of a hex disablement secret")
    kdf.add_argument("secret_hex")
    for q in (st, init, sign, dis, log, kdf, *(lock.choices[n] for n in ("add", "remove"))):
        add_socket_args(q)
    p.set_defaults(func=run)


def _key(text: str) -> NLPublic:
    try:
        return NLPublic.from_text(text)
    except KeyParseError as e:
        raise _Usage(f"invalid key {text[:80]!r}: {e}") from None


def _key_json(k: NLPublic) -> dict[str, object]:
    return {"Kind": 1, "Votes": 1, "Public": base64.b64encode(k.raw).decode()}


def _secret(text: str) -> bytes:
    if not text.startswith(SECRET_PREFIX):
        raise _Usage("usage: pytsnet lock disable <disablement-secret> (disablement-secret:HEX)")
    try:
        return bytes.fromhex(text[len(SECRET_PREFIX):])
    except ValueError:
        raise _Usage("disablement secret: not hex") from None


def run(args: argparse.Namespace) -> int:
    try:
        return _COMMANDS[args.lock_cmd](args)
    except _Usage as e:
        print(e, file=sys.stderr)
        return 1


def _status(args: argparse.Namespace) -> int:
    st = json.loads(client(args).request("GET", "tka/status"))
    if args.json:
        print(json.dumps(st, indent=2))
        return 0
    print("Tailnet Lock is ENABLED." if st.get("Enabled") else "Tailnet Lock is NOT enabled.")
    print()
    pub = str(st.get("PublicKey") or "")
    tl = NLPublic.from_text(pub).cli_string() if pub else ""
    if st.get("Enabled") and st.get("NodeKey") and tl:
        if st.get("NodeKeySigned"):
            print("This node is accessible under Tailnet Lock.")
        else:
            print("This node is LOCKED OUT by Tailnet Lock, and action is required to establish "
                  "connectivity.")
            print("Run the following command on a node with a trusted key:\n"
                  f"\ttailscale lock sign {st['NodeKey']} {tl}")
        print()
    if tl:
        print(f"This node's tailnet-lock key: {tl}")
        print()
    if st.get("Enabled") and st.get("TrustedKeys"):
        print("Trusted signing keys:")
        for k in st["TrustedKeys"]:
            cli = NLPublic.from_text(k["Key"]).cli_string()
            print(f"\t{cli}\t{k.get('Votes', 1)}\t{'(self)' if cli == tl else ''}")
    if st.get("Enabled") and st.get("FilteredPeers"):
        print()
        print("The following nodes are locked out by tailnet lock and cannot connect to other nodes:")
        for f in st["FilteredPeers"]:
            print(f"\t{f.get('ID')}\t{f.get('Reason', '')}")
    return 0


def _init(args: argparse.Namespace) -> int:
    keys: list[NLPublic] = []
    values: list[bytes] = []
    for a in args.args:
        if a.startswith(VALUE_PREFIX):
            values.append(bytes.fromhex(a[len(VALUE_PREFIX):]))
        elif a.startswith(SECRET_PREFIX):
            values.append(disablement_kdf(_secret(a)))
        else:
            keys.append(_key(a))
    if not keys:
        raise _Usage("at least one trusted key is required")
    n = args.gen_disablements
    if n < 0 or (n == 0 and not values):
        raise _Usage("at least one disablement secret is required (--gen-disablements N)")
    print("You are initializing tailnet lock with the following trusted signing keys:")
    for k in keys:
        print(f" - {k.cli_string()} (25519 key)")
    print()
    if not args.confirm:
        print(f"{n} disablement secrets will be generated.")
        print("\nIf this is correct, please re-run this command with the --confirm flag:")
        print(f"\tpytsnet lock init --confirm --gen-disablements {n} {' '.join(args.args)}")
        return 0
    secrets = [os.urandom(32) for _ in range(n)]
    values += [disablement_kdf(s) for s in secrets]
    body = {"Keys": [_key_json(k) for k in keys],
            "DisablementValues": [base64.b64encode(v).decode() for v in values]}
    client(args).request("POST", "tka/init", body=json.dumps(body).encode())
    print(f"{n} disablement secrets have been generated and are printed below. Take note of them now, "
          "they WILL NOT be shown again.")
    for s in secrets:
        print(f"\t{SECRET_PREFIX}{s.hex().upper()}")
    print("Initialization complete.")
    return 0


def _sign(args: argparse.Namespace) -> int:
    body: dict[str, object] = {"NodeKey": args.node_key}
    if args.rotation_key:
        body["RotationPublic"] = base64.b64encode(_key(args.rotation_key).raw).decode()
    client(args).request("POST", "tka/sign", body=json.dumps(body).encode())
    return 0


def _modify(args: argparse.Namespace, field: str) -> int:
    body = {field: [_key_json(_key(k)) for k in args.keys]}
    client(args).request("POST", "tka/modify", body=json.dumps(body).encode())
    return 0


def _disable(args: argparse.Namespace) -> int:
    client(args).request("POST", "tka/disable", body=_secret(args.secret))
    return 0


def _log(args: argparse.Namespace) -> int:
    c: LocalClient = client(args)
    updates = json.loads(c.request("GET", "tka/log", {"limit": str(args.limit)}))
    if args.json:
        print(json.dumps(updates, indent=2))
        return 0
    for u in updates:
        try:
            aum = AUM.unserialize(base64.b64decode(u["Raw"]))
        except (TkaError, ValueError) as e:
            print(f"update <undecodable: {e}>")
            continue
        print(f"update {aum_hash_text(aum.hash())} ({u['Change']})")
        if aum.key is not None:
            print(f"Type: 25519\nKeyID: {NLPublic(aum.key.public).cli_string()}")
        elif aum.key_id is not None:
            print(f"KeyID: {NLPublic(aum.key_id).cli_string()}")
        elif aum.state is not None:
            print("Disablement values:")
            for v in aum.state.disablement_secrets:
                print(f" - {VALUE_PREFIX}{v.hex()}")
            print("Keys:")
            for k in aum.state.keys:
                print(f"  Type: 25519\n  KeyID: {NLPublic(k.public).cli_string()}")
        print()
    return 0


def _kdf(args: argparse.Namespace) -> int:
    try:
        secret = bytes.fromhex(args.secret_hex)
    except ValueError:
        raise _Usage("usage: pytsnet lock disablement-kdf <hex-encoded-disablement-secret>") from None
    print(f"{VALUE_PREFIX}{disablement_kdf(secret).hex()}")
    return 0


def _add(args: argparse.Namespace) -> int:
    return _modify(args, "AddKeys")


def _remove(args: argparse.Namespace) -> int:
    return _modify(args, "RemoveKeys")


_COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "status": _status, "init": _init, "sign": _sign, "disable": _disable, "log": _log,
    "disablement-kdf": _kdf, "add": _add, "remove": _remove,
}
