"""``pytsnet localnet``: serve the embedded local tailnet, or administer its state directory.

``localnet --state DIR [--listen HOST:PORT] [--no-relay | --derp-tls] [--key-expiry DURATION]
[--idle-timeout DURATION] [--funnel HOST:PORT [--funnel-nodes a,b] [--funnel-target-port N]]`` serves
(``--funnel``: a Funnel ingress on HOST:PORT, :mod:`pytsnet.localnet.funnel`);
``localnet --state DIR authkey create …``, ``authkey list``, ``nodes list``, ``nodes approve NODE``,
``nodes delete NODE``, ``nodes expire NODE``, ``nodes extend NODE [--for DURATION]``, ``nodes routes
NODE``, ``nodes approve-routes NODE [PREFIX...]``, ``oauth create --scopes auth_keys --tags tag:a,tag:b``
(prints the client ID and the secret, once) and ``oauth create-federated …`` (workload identity)
edit (or show) the same
SQLite database, and a running server picks the change up within half a second. NODE is an ID or a
hostname; durations are ``90s``, ``12h``, ``180d`` (one parser,
:func:`pytsnet.localnet.expiry.parse_duration`). ``--state``/``--ipv6`` go before or after the admin
subcommand. Admin commands refuse a directory without a database (``NoLocalnetDatabase``): a typo must
not create an empty tailnet.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any


def _shared_options(*, top: bool) -> argparse.ArgumentParser:
    """``--state``/``--ipv6``, accepted at every level. Below the top their default is SUPPRESS, so
    a value given before the subcommand is not overwritten by the subcommand's absent one."""
    common = argparse.ArgumentParser(add_help=False)
    keep: dict[str, Any] = {} if top else {"default": argparse.SUPPRESS}
    common.add_argument("--state", help="state directory (SQLite database, keys, policy.json); required",
                        **({"default": None} if top else keep))
    common.add_argument("--ipv6", action="store_true", help="also give nodes fd7a:115c:a1e0::/48 addresses",
                        **keep)
    return common


def _duration(text: str) -> float:
    """argparse type: a duration (``90s``, ``12h``, ``180d``) in seconds."""
    from pytsnet.localnet.expiry import DurationError, parse_duration

    try:
        return parse_duration(text)
    except DurationError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def register(subparsers: Any) -> None:
    shared = _shared_options(top=False)
    p = subparsers.add_parser("localnet", help="run or administer an embedded local tailnet",
                              parents=[_shared_options(top=True)])
    p.add_argument("--listen", default="127.0.0.1:0", help="HOST:PORT to serve on (default 127.0.0.1:0)")
    p.add_argument("--no-relay", action="store_true", help="serve control only: no DERP relay, no STUN")
    p.add_argument("--derp-tls", action="store_true",
                   help="serve DERP over TLS (self-signed, InsecureForTests) on its own port, so Go nodes "
                        "need no TS_DEBUG_USE_DERP_HTTP")
    p.add_argument("--derp-tls-port", type=int, default=0, help="port of the TLS DERP listener (default any)")
    p.add_argument("--stun-port", type=int, default=0, help="UDP port of the STUN server (default any)")
    p.add_argument("--key-expiry", type=_duration, default=None, metavar="DURATION",
                   help="node-key lifetime, e.g. 90s, 12h, 180d (default: as last served, else 180d)")
    p.add_argument("--idle-timeout", type=_duration, default=None, metavar="DURATION",
                   help="close a Noise session with no request in flight for this long (default 120s)")
    p.add_argument("--https", action="store_true",
                   help="enable HTTPS certs: CertDomains and the https capability in netmaps, "
                        "/machine/set-dns")
    p.add_argument("--dns01-api", default=None, metavar="URL",
                   help="publish DNS-01 records through pebble-challtestsrv's management API at URL "
                        "(default with --https: localnet's own DNS server, see --dns01-listen)")
    p.add_argument("--dns01-listen", default="127.0.0.1:0", metavar="HOST:PORT",
                   help="UDP address of localnet's own DNS-01 server (default 127.0.0.1:0)")
    p.add_argument("--funnel", default=None, metavar="HOST:PORT",  # 20c
                   help="be a Funnel ingress: accept public TLS on HOST:PORT and carry it to the node its "
                        "SNI names; nodes get the funnel attribute (see --funnel-nodes); needs --https")
    p.add_argument("--funnel-nodes", default=None, metavar="HOSTNAMES",
                   help="comma-separated hostnames that may Funnel (default: every node)")
    p.add_argument("--funnel-target-port", type=int, default=None, metavar="PORT",
                   help="the nodes' Funnel port the ingress carries to (default: the public port if it is "
                        "443, 8443 or 10000, else 443)")
    p.add_argument("--derp-map", default=None, metavar="FILE",
                   help="hand nodes this DERP map (tailcfg.DERPMap JSON, e.g. from pytsnet derper "
                        "--write-derp-map) instead of localnet's own relay, which is then not started; "
                        "/derp/admit answers such a derper's --verify-client-url")
    p.set_defaults(func=_serve, admin=None)
    sub = p.add_subparsers(dest="admin")
    ak = sub.add_parser("authkey", help="pre-auth keys", parents=[shared]).add_subparsers(dest="op",
                                                                                         required=True)
    create = ak.add_parser("create", help="create a pre-auth key and print it", parents=[shared])
    create.add_argument("--reusable", action="store_true")
    create.add_argument("--ephemeral", action="store_true")
    create.add_argument("--tags", default="", help="comma-separated, e.g. tag:ci,tag:web")
    create.add_argument("--expiry", type=_duration, default=None, metavar="DURATION",
                        help="time until the key expires, e.g. 90s, 12h, 180d (default: never)")
    create.set_defaults(func=_authkey_create)
    ak.add_parser("list", help="list pre-auth keys (ID, prefix, flags, expiry; never the secret)",
                  parents=[shared]).set_defaults(func=_authkey_list)
    nodes = sub.add_parser("nodes", help="list, approve, delete, expire or extend nodes; show or approve "
                           "their routes", parents=[shared])
    nodes = nodes.add_subparsers(dest="op", required=True)
    nodes.add_parser("list", parents=[shared]).set_defaults(func=_nodes_list)
    for op, fn, text in (("approve", _nodes_approve, "authorize a node waiting for approval"),
                         ("delete", _nodes_delete, "remove a node"),
                         ("expire", _nodes_expire, "end a node's key now (until extended or re-authed)"),
                         ("extend", _nodes_extend, "renew a node's key")):
        q = nodes.add_parser(op, help=text, parents=[shared])
        q.add_argument("node", metavar="NODE", help="node ID or hostname")
        if op == "extend":
            q.add_argument("--for", dest="duration", type=_duration, default=None, metavar="DURATION",
                           help="new lifetime from now (default: the tailnet's key expiry)")
        q.set_defaults(func=fn)
    q = nodes.add_parser("routes", parents=[shared],
                         help="show a node's advertised, approved and primary routes (one JSON object)")
    q.add_argument("node", metavar="NODE", help="node ID or hostname")
    q.set_defaults(func=_nodes_routes)
    q = nodes.add_parser("approve-routes", parents=[shared],
                         help="set a node's approved routes to PREFIX... (none: unapprove all); each must be "
                              "advertised by the node; 0.0.0.0/0 or ::/0 approves it as an exit node")
    q.add_argument("node", metavar="NODE", help="node ID or hostname")
    q.add_argument("prefixes", metavar="PREFIX", nargs="*", help="e.g. 10.1.2.0/24")
    q.set_defaults(func=_nodes_approve_routes)
    _register_oauth(sub, shared)


def _serve(args: argparse.Namespace) -> int:
    from pytsnet.localnet.server import LocalTailnet

    _require_state(args)
    if args.no_relay and args.derp_tls:
        raise SystemExit("--derp-tls needs the relay (drop --no-relay)")
    from pytsnet.localnet.limits import ConnectionLimits

    limits = None if args.idle_timeout is None else ConnectionLimits(idle_timeout=args.idle_timeout)
    derp_map = None
    if args.derp_map is not None:
        from pytsnet.derper.derpmap import DerpMapError, load_derp_map

        if args.no_relay or args.derp_tls:
            raise SystemExit("pytsnet localnet: error: --derp-map replaces the relay: "
                             "drop --no-relay/--derp-tls")
        try:
            derp_map = load_derp_map(args.derp_map)
        except DerpMapError as e:
            raise SystemExit(f"pytsnet localnet: error: {e}") from None
    net = LocalTailnet(args.state, listen=args.listen, ipv6=args.ipv6, relay=not args.no_relay,
                       stun_port=args.stun_port, derp_tls=args.derp_tls,
                       derp_tls_port=args.derp_tls_port, key_expiry=args.key_expiry, limits=limits,
                       https=args.https, dns01_api=args.dns01_api, dns01_listen=args.dns01_listen,
                       funnel=args.funnel, funnel_target_port=args.funnel_target_port,
                       funnel_nodes=None if args.funnel_nodes is None else
                       [h for h in args.funnel_nodes.split(",") if h],
                       derp_map=derp_map).start()  # 24b
    print(f"localnet control server: {net.control_url}", flush=True)
    if net.dns01_address:
        print(f"localnet DNS-01 server: udp {net.dns01_address} (pebble -dnsserver {net.dns01_address})",
              flush=True)
    if net.relay is not None:
        scheme = "https" if net.relay.tls else "http"
        print(f"localnet DERP relay: {scheme}://{net.control.host}:{net.relay.derp_port}/derp, "  # type: ignore[union-attr]
              f"STUN udp/{net.relay.stun.port}", flush=True)
        if net.relay.go_env:
            print("Go nodes need: " + " ".join(f"{k}={v}" for k, v in net.relay.go_env.items()), flush=True)
    elif derp_map is not None:  # 24b
        print(f"localnet DERP map: {args.derp_map} (regions {', '.join(derp_map['Regions'])})", flush=True)
    else:
        print("localnet DERP relay: off", flush=True)
    print(f"localnet DERP admission: {net.control_url}/derp/admit (derper --verify-client-url)",  # 24b
          flush=True)
    if net.funnel is not None:
        host, port = net.funnel.address
        print(f"localnet Funnel ingress: {host}:{port} → the nodes' port {net.funnel.target_port}",
              flush=True)
    try:
        net.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        net.close()
    return 0


def _require_state(args: argparse.Namespace) -> None:
    if not getattr(args, "state", None):
        raise SystemExit("pytsnet localnet: error: --state DIR is required")


def _store(args: argparse.Namespace) -> Any:
    """The existing database (admin commands never create one)."""
    from pytsnet.localnet.store import Store

    _require_state(args)
    return Store.open_existing(args.state, ipv6=args.ipv6)


def _authkey_create(args: argparse.Namespace) -> int:
    from pytsnet.localnet.server import create_authkey

    tags = [t for t in args.tags.split(",") if t]
    try:
        rec = create_authkey(_store(args), reusable=args.reusable, ephemeral=args.ephemeral, tags=tags,
                             expiry=args.expiry)
    except ValueError as e:  # bad tags
        raise SystemExit(f"pytsnet localnet: error: {e}") from None
    print(rec.key)
    return 0


def _when(t: float | None) -> str | None:
    return None if t is None else time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(t))


def _authkey_list(args: argparse.Namespace) -> int:
    """One JSON line per key; the secret is cut to a prefix, as Tailscale's admin console shows keys."""
    now = time.time()
    for k in _store(args).authkeys():
        print(json.dumps({"id": k.id, "prefix": f"{k.prefix}…",  # the store keeps only a hash and this
                          "reusable": k.reusable, "ephemeral": k.ephemeral, "tags": k.tags, "used": k.used,
                          "expires": _when(k.expires), "expired": k.expires is not None and k.expires <= now,
                          "created": _when(k.created)}, ensure_ascii=False))
    return 0


def _nodes_list(args: argparse.Namespace) -> int:
    now = time.time()
    for n in _store(args).nodes():
        state = "pending" if not n.authorized else ("logged-out" if n.logged_out else "ok")
        if state == "ok" and n.key_expiry is not None and n.key_expiry <= now:
            state = "expired"
        seen = "-" if n.last_seen is None else time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(n.last_seen))
        print(json.dumps({"id": n.id, "hostname": n.hostname, "ipv4": n.ipv4, "ipv6": n.ipv6 or None,
                          "state": state, "ephemeral": n.ephemeral, "tags": n.tags, "last_seen": seen,
                          "key_expiry": _when(n.key_expiry)}))
    return 0


def _find(args: argparse.Namespace) -> Any:
    """``(store, node)`` for NODE (an ID or a hostname); the node is None (and why is printed) if none."""
    from pytsnet.localnet.expiry import NodeNotFound, find_node

    store = _store(args)
    try:
        return store, find_node(store, args.node)
    except NodeNotFound as e:
        print(e)
        return store, None


def _nodes_approve(args: argparse.Namespace) -> int:
    """Authorize; the node's key lifetime starts now."""
    from pytsnet.localnet.expiry import renewed

    store, node = _find(args)
    if node is None:
        return 1
    store.update_node(node.id, authorized=True, auth_path="", key_expiry=renewed(store, time.time()))
    print("approved")
    return 0


def _nodes_delete(args: argparse.Namespace) -> int:
    store, node = _find(args)
    if node is None or not store.delete_node(node.id):
        return 1
    print("deleted")
    return 0


def _nodes_expire(args: argparse.Namespace) -> int:
    store, node = _find(args)
    if node is None:
        return 1
    store.update_node(node.id, key_expiry=time.time())
    print(f"expired node {node.id} ({node.hostname})")
    return 0


def _nodes_extend(args: argparse.Namespace) -> int:
    from pytsnet.localnet.expiry import renewed

    store, node = _find(args)
    if node is None:
        return 1
    when = renewed(store, time.time(), args.duration)
    store.update_node(node.id, key_expiry=when)
    print(f"extended node {node.id} ({node.hostname}) until {_when(when)}")
    return 0


def _nodes_routes(args: argparse.Namespace) -> int:
    """One JSON object: advertised, approved (waiting while not advertised) and primary routes
    (as the running server last elected them)."""
    from pytsnet.localnet.routes import route_status

    store, node = _find(args)
    if node is None:
        return 1
    print(json.dumps({"id": node.id, "hostname": node.hostname, **route_status(store, node).to_json()}))
    return 0


def _nodes_approve_routes(args: argparse.Namespace) -> int:
    """Replace the approved routes; a running server tells the peers within half a second."""
    from pytsnet.localnet.routes import RouteError, approve_routes

    store, node = _find(args)
    if node is None:
        return 1
    try:
        approved = approve_routes(store, node, args.prefixes)
    except RouteError as e:
        raise SystemExit(f"pytsnet localnet: error: {e}") from None
    print(json.dumps({"id": node.id, "hostname": node.hostname, "approved": approved}))
    return 0


# -- OAuth clients ---------------------------------------------------------------------------
def _register_oauth(sub: Any, shared: argparse.ArgumentParser) -> None:
    oauth = sub.add_parser("oauth", help="OAuth clients that mint tagged auth keys (Config.client_secret, "
                           "workload identity)", parents=[shared]).add_subparsers(dest="op", required=True)
    create = oauth.add_parser("create", parents=[shared],
                              help="create an OAuth client; prints its ID and secret (shown only once)")
    fed = oauth.add_parser("create-federated", parents=[shared],
                           help="create a workload-identity client trusting ID tokens signed by a key")
    for q in (create, fed):
        q.add_argument("--scopes", default="auth_keys", help="comma-separated (default auth_keys)")
        q.add_argument("--tags", required=True, help="tags its keys may carry, e.g. tag:ci,tag:web")
    fed.add_argument("--issuer", required=True, help="the ID tokens' iss claim")
    fed.add_argument("--subject", required=True, help="pattern of the sub claim (fnmatch: repo:org/app:*)")
    fed.add_argument("--audience", required=True, help="the aud claim the tokens must carry")
    fed.add_argument("--public-key", required=True, metavar="PEM_FILE",
                     help="the issuer's signing public key (RSA for RS256, P-256 for ES256), PEM")
    create.set_defaults(func=_oauth_create)
    fed.set_defaults(func=_oauth_create_federated)


def _split_list(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _oauth_create(args: argparse.Namespace) -> int:
    from pytsnet.localnet.oauth_clients import OAuthClientError, create_secret_client

    try:
        client, secret = create_secret_client(_store(args), _split_list(args.scopes), _split_list(args.tags))
    except OAuthClientError as e:
        raise SystemExit(f"pytsnet localnet: error: {e}") from None
    print(f"client id: {client.id}")
    print(f"client secret: {secret}")
    return 0


def _oauth_create_federated(args: argparse.Namespace) -> int:
    from pathlib import Path

    from pytsnet.localnet.oauth_clients import OAuthClientError, create_federated_client

    try:
        pem = Path(args.public_key).read_text()
        client = create_federated_client(_store(args), _split_list(args.scopes), _split_list(args.tags),
                                         issuer=args.issuer, subject=args.subject, audience=args.audience,
                                         public_key_pem=pem)
    except (OAuthClientError, OSError) as e:
        raise SystemExit(f"pytsnet localnet: error: {e}") from None
    print(f"client id: {client.id}")
    return 0
