"""``pytsnet lock …``: Tailnet Lock through the LocalAPI, as Go's ``tailscale lock …``
(cmd/tailscale/cli/network-lock.go at v1.90.9): the same subcommands, argument forms and output.

Keys are ``tlpub:<hex>`` (or ``nlpub:``) with an optional ``?<votes>``; disablement arguments are
``disablement:<hex>`` (a KDF value) or ``disablement-secret:<hex>`` (a secret). ``init`` generates the
disablement secrets here and sends only their KDF values; ``disablement-kdf`` is local.
``local-disable`` needs an endpoint this node answers 501, so it fails with that error; ``remove``
re-signs through ``tka/affected-sigs`` as Go; ``revoke-keys`` is not offered.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
import time
from pathlib import Path

from pytsnet.commands.localapi_socket import add_socket_args, client
from pytsnet.errors import LocalApiError, TailnetLockError
from pytsnet.localapi.client import LocalClient
from pytsnet.localapi.types import NetworkLockStatus, NetworkLockUpdate, NodeKeySignatureJSON, TkaKeyJSON
from pytsnet.wire.keys import KeyParseError, NLPrivate, NLPublic, NodePublic
from pytsnet.wire.tka import (
    AUM,
    AUMKind,
    Key,
    KeyKind,
    NodeKeySignature,
    SigKind,
    TkaError,
    aum_hash_text,
    disablement_kdf,
)
from pytsnet.wire.tka.sig import node_public_from_binary

NOT_TRUSTED_MSG = "this node is not trusted by network lock"
"""Go ``tsconst.TailnetLockNotTrustedMsg``: ``sign`` adds a hint when the error says it."""


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("lock", help="manage tailnet lock")
    p.set_defaults(func=_run_status, json=False)
    lsub = p.add_subparsers(dest="lock_command")

    s = lsub.add_parser("init", help="initialize tailnet lock")
    s.add_argument("--gen-disablements", type=int, default=1,
                   help="number of disablement secrets to generate")
    s.add_argument("--gen-disablement-for-support", action="store_true",
                   help="generates and transmits a disablement secret for Tailscale support")
    s.add_argument("--confirm", action="store_true", help="do not prompt for confirmation")
    s.add_argument("args", nargs="*", help="trusted keys (tlpub:…[?votes]) and disablement:… values")
    s.set_defaults(func=_run_init)

    s = lsub.add_parser("status", help="output the state of tailnet lock")
    s.add_argument("--json", action="store_true", help="output in JSON format")
    s.set_defaults(func=_run_status)

    s = lsub.add_parser("add", help="add one or more trusted signing keys to tailnet lock")
    s.add_argument("keys", nargs="*")
    s.set_defaults(func=_run_add)

    s = lsub.add_parser("remove", help="remove one or more trusted signing keys from tailnet lock")
    s.add_argument("--re-sign", type=_go_bool, default=True, metavar="BOOL",
                   help="resign signatures which would be invalidated by removal of trusted signing keys")
    s.add_argument("keys", nargs="*")
    s.set_defaults(func=_run_remove)

    s = lsub.add_parser("sign", help="sign a node or pre-approved auth key")
    s.add_argument("args", nargs="*", help="<node-key> [<rotation-key>] | <auth-key> (file:PATH reads one)")
    s.set_defaults(func=_run_sign)

    s = lsub.add_parser("disable", help="consume a disablement secret to shut down tailnet lock")
    s.add_argument("args", nargs="*", help="disablement-secret:<hex>")
    s.set_defaults(func=_run_disable)

    s = lsub.add_parser("disablement-kdf", help="compute a disablement value from a disablement secret")
    s.add_argument("args", nargs="*", help="<hex-encoded-disablement-secret>")
    s.set_defaults(func=_run_disablement_kdf)

    s = lsub.add_parser("log", help="list changes applied to tailnet lock")
    s.add_argument("--limit", type=int, default=50, help="max number of updates to list")
    s.add_argument("--json", action="store_true", help="output in JSON format")
    s.set_defaults(func=_run_log)

    s = lsub.add_parser("local-disable", help="disable tailnet lock for this node only")
    s.set_defaults(func=_run_local_disable)

    add_socket_args(p)
    for child in lsub.choices.values():  # also after the subcommand; SUPPRESS keeps the parent's value
        child.add_argument("--socket", default=argparse.SUPPRESS, help="LocalAPI socket")
        child.add_argument("--dir", default=argparse.SUPPRESS, help="state dir of the `pytsnet up` to ask")


def _go_bool(text: str) -> bool:
    """Go ``strconv.ParseBool`` (``--re-sign=false``)."""
    if text in ("1", "t", "T", "TRUE", "true", "True"):
        return True
    if text in ("0", "f", "F", "FALSE", "false", "False"):
        return False
    raise argparse.ArgumentTypeError(f"parse error: invalid boolean {text!r}")


# -- arguments ----------------------------------------------------------------------------------------
def parse_nl_args(args: list[str], parse_keys: bool,
                  parse_disablements: bool) -> tuple[list[Key], list[bytes]]:
    """Go ``parseNLArgs``: keys (``tlpub:``/``nlpub:`` text, ``?votes``) and disablement bytes."""
    keys: list[Key] = []
    disablements: list[bytes] = []
    for i, a in enumerate(args, 1):
        if parse_disablements and a.startswith(("disablement:", "disablement-secret:")):
            try:
                disablements.append(bytes.fromhex(a[a.index(":") + 1:]))
            except ValueError:
                raise TailnetLockError(f"parsing disablement {i}: encoding/hex: invalid byte") from None
            continue
        if not parse_keys:
            raise TailnetLockError(f'parsing argument {i}: expected value with "disablement:" or '
                                   f'"disablement-secret:" prefix, got {a!r}')
        text, sep, votes_text = a.partition("?")
        try:
            pub = NLPublic.from_text(text)
        except KeyParseError as e:
            raise TailnetLockError(f"parsing key {i}: {e}") from None
        votes = 1
        if sep:
            try:
                votes = int(votes_text, 10)
            except ValueError:
                raise TailnetLockError(f"parsing key {i} votes: invalid syntax {votes_text!r}") from None
        keys.append(Key(kind=KeyKind.KEY25519, votes=votes, public=pub.raw))
    return keys, disablements


def _key_json(k: Key) -> TkaKeyJSON:
    return TkaKeyJSON(Kind=int(k.kind), Votes=k.votes, Public=base64.b64encode(k.public).decode(),
                      Meta=dict(k.meta) if k.meta else None)


def _lc(args: argparse.Namespace) -> LocalClient:
    return client(args)


def _public_raw(st: NetworkLockStatus) -> bytes:
    return NLPublic.from_text(st.PublicKey).raw


def _is_zero_public(st: NetworkLockStatus) -> bool:
    return NLPublic.from_text(st.PublicKey).is_zero()


# -- init ---------------------------------------------------------------------------------------------
def _run_init(args: argparse.Namespace) -> int:
    lc = _lc(args)
    st = lc.network_lock_status()
    if st.Enabled:
        raise TailnetLockError("tailnet lock is already enabled")
    keys, values = parse_nl_args(args.args, True, True)
    if not any(k.id() == _public_raw(st) for k in keys):
        raise TailnetLockError("the tailnet lock key of the current node must be one of the trusted keys "
                               "during initialization")
    print("You are initializing tailnet lock with the following trusted signing keys:")
    for k in keys:
        print(f" - tlpub:{k.public.hex()} ({_key_kind(k.kind)} key)")
    print()
    n = args.gen_disablements
    if not args.confirm:
        print(f"{n} disablement secrets will be generated.")
        if args.gen_disablement_for_support:
            print("A disablement secret will be generated and transmitted to Tailscale support.")
        support_flag = "--gen-disablement-for-support " if args.gen_disablement_for_support else ""
        print("\nIf this is correct, please re-run this command with the --confirm flag:")
        print(f"\t{_prog()} lock init --confirm --gen-disablements {n} {support_flag}{' '.join(args.args)}")
        return 0
    msg = [f"{n} disablement secrets have been generated and are printed below. Take note of them now, "
           "they WILL NOT be shown again."]
    for _ in range(n):
        secret = os.urandom(32)
        msg.append(f"\tdisablement-secret:{secret.hex().upper()}")
        values.append(disablement_kdf(secret))
    support = b""
    if args.gen_disablement_for_support:
        support = os.urandom(32)
        values.append(disablement_kdf(support))
        msg.append("A disablement secret for Tailscale support has been generated and transmitted to "
                   "Tailscale.")
    lc.network_lock_init([_key_json(k) for k in keys], values, support)
    print("\n".join(msg))
    print("Initialization complete.")
    return 0


def _prog() -> str:
    return Path(sys.argv[0]).name if sys.argv and sys.argv[0] else "pytsnet"


def _key_kind(kind: int) -> str:
    """Go ``KeyKind.String``."""
    return {0: "invalid", 1: "25519"}.get(int(kind), f"Key?<{int(kind)}>")


def _sig_kind(kind: int) -> str:
    """Go ``SigKind.String``."""
    names = {SigKind.INVALID: "invalid", SigKind.DIRECT: "direct", SigKind.ROTATION: "rotation",
             SigKind.CREDENTIAL: "credential"}
    return next((v for k, v in names.items() if int(k) == kind), f"Sig?<{kind}>")


# -- status -------------------------------------------------------------------------------------------
def signature_text(sig: NodeKeySignatureJSON) -> str:
    """Go ``NodeKeySignature.String``: kind, short node key, ``tlpub:`` key IDs, nested indented."""
    lines: list[str] = []

    def add(s: NodeKeySignatureJSON, depth: int) -> None:
        indent = "  " * depth
        lines.append(f"{indent}SigKind: {_sig_kind(s.SigKind)}")
        if s.Pubkey:
            try:
                pk = node_public_from_binary(base64.b64decode(s.Pubkey)).short_string()
            except TkaError as e:
                pk = f"<error: {e}>"
            lines.append(f"{indent}Pubkey: {pk}")
        if s.KeyID:
            lines.append(f"{indent}KeyID: tlpub:{base64.b64decode(s.KeyID).hex()}")
        if s.WrappingPubkey:
            lines.append(f"{indent}WrappingPubkey: tlpub:{base64.b64decode(s.WrappingPubkey).hex()}")
        if s.Nested is not None:
            lines.append(f"{indent}Nested:")
            add(s.Nested, depth + 1)

    add(sig, 0)
    return "\n".join(lines).strip()


def status_text(st: NetworkLockStatus) -> str:
    """Go ``runNetworkLockStatus``'s text."""
    out = ["Tailnet Lock is ENABLED." if st.Enabled else "Tailnet Lock is NOT enabled.", ""]
    public = NLPublic.from_text(st.PublicKey)
    if st.Enabled and st.NodeKey is not None and not public.is_zero():
        if st.NodeKeySigned:
            out.append("This node is accessible under Tailnet Lock. Node signature:")
            out.append(signature_text(st.NodeKeySignature) if st.NodeKeySignature is not None else "")
        else:
            out.append("This node is LOCKED OUT by Tailnet Lock, and action is required to establish "
                       "connectivity.")
            out.append(f"Run the following command on a node with a trusted key:\n\ttailscale lock sign "
                       f"{st.NodeKey} {public.cli_string()}")
        out.append("")
    if not public.is_zero():
        out.append(f"This node's tailnet-lock key: {public.cli_string()}")
        out.append("")
    if st.Enabled and st.TrustedKeys:
        out.append("Trusted signing keys:")
        for k in st.TrustedKeys:
            line = f"\t{NLPublic.from_text(k.Key).cli_string()}\t{k.Votes}\t"
            if k.Key == st.PublicKey:
                line += "(self)"
            meta = k.Metadata or {}
            if meta.get("purpose") == "pre-auth key":
                sid = meta.get("authkey_stableid", "")
                line += f"(pre-auth key {sid})" if sid else "(pre-auth key)"
            out.append(line)
    if st.Enabled and st.FilteredPeers:
        out.append("")
        out.append("The following nodes are locked out by tailnet lock and cannot connect to other nodes:")
        for p in st.FilteredPeers:
            out.append(f"\t{p.Name}\t{','.join(p.TailscaleIPs or [])}\t{p.StableID}\t{p.NodeKey}")
    return "\n".join(out)


def _run_status(args: argparse.Namespace) -> int:
    st = _lc(args).network_lock_status()
    if args.json:
        print(json.dumps(st.model_dump(mode="json"), indent=2))
        return 0
    print(status_text(st))
    return 0


# -- add / remove -------------------------------------------------------------------------------------
def _require_enabled(lc: LocalClient) -> NetworkLockStatus:
    st = lc.network_lock_status()
    if not st.Enabled:
        raise TailnetLockError("tailnet lock is not enabled")
    return st


def _run_add(args: argparse.Namespace) -> int:
    lc = _lc(args)
    _require_enabled(lc)
    keys, _ = parse_nl_args(args.keys, True, False)
    lc.network_lock_modify([_key_json(k) for k in keys], [])
    return 0


def _run_remove(args: argparse.Namespace) -> int:
    """Go ``runNetworkLockRemove``: by default every signature resting on a removed key is signed again
    by this node's key first (``tka/affected-sigs`` then ``tka/sign``), so those nodes stay admitted."""
    keys, _ = parse_nl_args(args.keys, True, False)
    lc = _lc(args)
    st = _require_enabled(lc)
    if len(st.TrustedKeys or []) == 1:
        raise TailnetLockError("cannot remove the last trusted signing key; use 'tailscale lock disable' to "
                               "disable tailnet lock instead, or add another signing key before removing one")
    if args.re_sign:
        if any(k.id() == _public_raw(st) for k in keys):
            raise TailnetLockError("cannot remove local trusted signing key while resigning; run command on "
                                   "a different node or with --re-sign=false")
        for k in keys:
            try:
                sigs = lc.network_lock_affected_sigs(k.id())
            except LocalApiError as e:
                raise TailnetLockError(f"affected sigs for key {k.id().hex().upper()}: {e}") from None
            for raw in sigs:
                sig = NodeKeySignature.unserialize(raw)
                node_key = node_public_from_binary(sig.pubkey)
                lc.network_lock_sign(node_key.to_text(), sig.wrapping_public() or b"")  # kept by rotations
    lc.network_lock_modify([], [_key_json(k) for k in keys])
    return 0


# -- sign ---------------------------------------------------------------------------------------------
def _run_sign(args: argparse.Namespace) -> int:
    argv = list(args.args)
    for i, a in enumerate(argv):
        if a.startswith("file:"):
            try:
                argv[i] = Path(a[len("file:"):]).read_text().strip()
            except OSError as e:
                raise TailnetLockError(str(e)) from None
    lc = _lc(args)
    if argv and argv[0].startswith("tskey-auth-"):
        return _run_wrap(lc, argv)
    if not 1 <= len(argv) <= 2:
        raise TailnetLockError("usage: tailscale lock sign <node-key> [<rotation-key>]")
    try:
        node_key = NodePublic.from_text(argv[0])
    except KeyParseError as e:
        raise TailnetLockError(f"decoding node-key: {e}") from None
    rotation = NLPublic.zero()
    if len(argv) > 1:
        try:
            rotation = NLPublic.from_text(argv[1])
        except KeyParseError as e:
            raise TailnetLockError(f"decoding rotation-key: {e}") from None
    try:
        # Go sends ``rotationKey.Verifier()`` even when none was given: 32 zero bytes.
        lc.network_lock_sign(node_key.to_text(), rotation.raw)
    except LocalApiError as e:
        if NOT_TRUSTED_MSG in str(e):
            print("Error: Signing is not available on this device because it does not have a trusted "
                  "tailnet lock key.\n\nTry again on a signing device instead. Tailnet admins can see "
                  "signing devices on the admin panel.\n", file=sys.stderr)
        raise
    return 0


def _run_wrap(lc: LocalClient, argv: list[str]) -> int:
    """Go ``runTskeyWrapCmd``/``wrapAuthKey``: a fresh lock key signs the auth key's credential and is
    added as a trusted key with Go's ``Meta`` (``purpose``, ``wrapper_stableid``,
    ``wrapper_createtime``, and ``authkey_stableid`` when the key has Go's form)."""
    if len(argv) != 1:
        raise TailnetLockError("usage: lock tskey-wrap <tailscale pre-auth key>")
    if "--TL" in argv[0]:
        raise TailnetLockError("Error: provided key was already wrapped")
    st = lc.status_without_peers()
    priv = NLPrivate.generate()
    meta = {"purpose": "pre-auth key", "wrapper_stableid": st.Self.ID if st.Self is not None else "",
            "wrapper_createtime": str(int(time.time()))}
    rest = argv[0][len("tskey-auth-"):] if argv[0].startswith("tskey-auth-") else ""
    if rest.find("-") > 0:  # tskey-auth-<stableID>-<nonce>: only the stable ID, never the nonce
        meta["authkey_stableid"] = rest[:rest.index("-")]
    try:
        wrapped = lc.network_lock_wrap_preauth_key(argv[0], priv)
    except LocalApiError as e:
        raise TailnetLockError(f"wrapping failed: {e}") from None
    key = Key(kind=KeyKind.KEY25519, votes=1, public=priv.public().raw, meta=meta)
    try:
        lc.network_lock_modify([_key_json(key)], [])
    except LocalApiError as e:
        raise TailnetLockError(f"add key failed: {e}") from None
    print(wrapped)
    return 0


# -- disable, kdf, local-disable ----------------------------------------------------------------------
def _run_disable(args: argparse.Namespace) -> int:
    _, secrets = parse_nl_args(args.args, False, True)
    if len(secrets) != 1:
        raise TailnetLockError("usage: tailscale lock disable <disablement-secret>")
    _lc(args).network_lock_disable(secrets[0])
    return 0


def _run_disablement_kdf(args: argparse.Namespace) -> int:
    if len(args.args) != 1:
        raise TailnetLockError("usage: tailscale lock disablement-kdf <hex-encoded-disablement-secret>")
    try:
        secret = bytes.fromhex(args.args[0])
    except ValueError:
        raise TailnetLockError("encoding/hex: invalid byte") from None
    print(f"disablement:{disablement_kdf(secret).hex()}")
    return 0


def _run_local_disable(args: argparse.Namespace) -> int:
    _lc(args).request("POST", "tka/force-local-disable", body=b"{}")
    return 0


# -- log ----------------------------------------------------------------------------------------------
def _go_map(m: dict[str, str]) -> str:
    """Go's ``%+v`` of a ``map[string]string``: ``map[a:1 b:2]``, keys sorted."""
    return "map[" + " ".join(f"{k}:{v}" for k, v in sorted(m.items())) + "]"


def describe_update(update: NetworkLockUpdate, color: bool = False) -> str:
    """Go ``nlDescribeUpdate``: one log stanza. (Go prints an UpdateKey's ``Votes`` pointer with
    ``%d``, an address; here the number.)"""
    yellow, clear = ("\x1b[33m", "\x1b[0m") if color else ("", "")
    try:
        aum = AUM.unserialize(base64.b64decode(update.Raw or ""))
    except TkaError as e:
        raise TailnetLockError(f"decoding: {e}") from None
    out = [f"{yellow}update {aum_hash_text(aum.hash())} ({update.Change}){clear}"]

    def print_key(k: Key, prefix: str) -> None:
        out.append(f"{prefix}Type: {_key_kind(k.kind)}")
        out.append(f"{prefix}KeyID: tlpub:{k.id().hex()}")
        if k.meta is not None:
            out.append(f"{prefix}Metadata: {_go_map(dict(k.meta))}")

    kind = aum.message_kind
    if kind == AUMKind.ADD_KEY and aum.key is not None:
        print_key(aum.key, "")
    elif kind == AUMKind.REMOVE_KEY:
        out.append(f"KeyID: tlpub:{(aum.key_id or b'').hex()}")
    elif kind == AUMKind.UPDATE_KEY:
        out.append(f"KeyID: tlpub:{(aum.key_id or b'').hex()}")
        if aum.votes is not None:
            out.append(f"Votes: {aum.votes}")
        if aum.meta is not None:
            out.append(f"Metadata: {_go_map(dict(aum.meta))}")
    elif kind == AUMKind.CHECKPOINT and aum.state is not None:
        out.append("Disablement values:")
        out += [f" - {v.hex()}" for v in aum.state.disablement_secrets]
        out.append("Keys:")
        for k in aum.state.keys:
            print_key(k, "  ")
    else:
        out.append(json.dumps(_aum_json(aum), indent="\t") + "\n")
    return "\n".join(out) + "\n"


def _aum_json(aum: AUM) -> dict[str, object]:
    """Go's JSON of a ``tka.AUM`` (the log's fallback for a no-op)."""
    def b64(b: bytes | None) -> str | None:
        return None if b is None else base64.b64encode(b).decode()
    return {"MessageKind": int(aum.message_kind), "PrevAUMHash": b64(aum.prev_aum_hash),
            "Key": None if aum.key is None else _key_json(aum.key).model_dump(mode="json"),
            "KeyID": b64(aum.key_id), "State": None, "Votes": aum.votes,
            "Meta": dict(aum.meta) if aum.meta is not None else None,
            "Signatures": [{"KeyID": b64(s.key_id), "Signature": b64(s.signature)} for s in aum.signatures]
            or None}


def _run_log(args: argparse.Namespace) -> int:
    lc = _lc(args)
    if not lc.network_lock_status().Enabled:
        raise TailnetLockError("Tailnet Lock is not enabled")
    updates = lc.network_lock_log(args.limit)
    if args.json:
        print(json.dumps([u.model_dump(mode="json") for u in updates] or None, indent=2))
        return 0
    color = sys.stdout.isatty()
    for u in updates:
        print(describe_update(u, color))
    return 0


__all__ = ["describe_update", "parse_nl_args", "register", "signature_text", "status_text"]
