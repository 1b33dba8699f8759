"""``pytsnet derper``: a standalone DERP relay and STUN server, as Go's ``cmd/derper``.

``derper --listen HOST:PORT [--tls self-signed | --tls --cert FILE --key FILE] [--hostname NAME]
[--stun-port N | --no-stun] [--verify-client-url URL [--verify-client-url-fail-open]]
[--write-derp-map FILE]`` serves ``/derp``, ``/derp/probe``, ``/derp/latency-check`` and
``/generate_204`` until interrupted. Open to every client by default like Go's derper; with
``--verify-client-url`` a client is admitted only if that URL answers Go's
``DERPAdmitClientResponse{Allow: true}`` (``localnet`` serves one at ``/derp/admit``). Unlike Go, an
unreachable URL refuses the client unless ``--verify-client-url-fail-open`` is given (Go's flag of
that name defaults to true). ``--write-derp-map`` writes a one-region ``tailcfg.DERPMap`` naming this
relay, for ``localnet --derp-map FILE``.
"""

from __future__ import annotations

import argparse
import json
import signal
from pathlib import Path
from types import FrameType

DEFAULT_STUN_PORT = 3478  # Go derper's --stun-port


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("derper", help="run a standalone DERP relay (and STUN server)",
                       description="A standalone DERP relay: open to any client, or only to those an "
                                   "admission controller URL approves.")
    p.add_argument("--listen", default="127.0.0.1:3340", metavar="HOST:PORT",
                   help="address of the DERP listener (default 127.0.0.1:3340; port 0: any)")
    p.add_argument("--tls", nargs="?", const="files", choices=("files", "self-signed"), default=None,
                   help="serve TLS: with --cert/--key, or 'self-signed' (nodes then need InsecureForTests "
                        "in their DERP map; --write-derp-map sets it)")
    p.add_argument("--cert", type=Path, default=None, metavar="FILE",
                   help="PEM certificate (chain) for --tls")
    p.add_argument("--key", type=Path, default=None, metavar="FILE", help="PEM private key for --tls")
    p.add_argument("--hostname", default="", metavar="NAME",
                   help="the relay's host name: the self-signed certificate's name and HostName in the "
                        "written DERP map (default: the listen host)")
    p.add_argument("--stun-port", type=int, default=DEFAULT_STUN_PORT, metavar="N",
                   help=f"UDP port of the STUN server on the listen host (default {DEFAULT_STUN_PORT}; "
                        "0: any)")
    p.add_argument("--no-stun", action="store_true", help="run no STUN server")
    p.add_argument("--verify-client-url", default=None, metavar="URL",
                   help="admission controller: POST each client's tailcfg.DERPAdmitClientRequest here and "
                        "admit only on {\"Allow\": true}")
    p.add_argument("--verify-client-url-fail-open", action="store_true",
                   help="admit clients while the admission controller is unreachable (Go's default; "
                        "ours is to refuse them)")
    p.add_argument("--write-derp-map", type=Path, default=None, metavar="FILE",
                   help="write a one-region DERP map naming this relay to FILE once listening")
    p.add_argument("--region-id", type=int, default=900, help="region ID in the written map (default 900)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pytsnet.derper.server import Derper

    if args.tls == "files" and (args.cert is None or args.key is None):
        raise SystemExit("pytsnet derper: error: --tls needs --cert FILE and --key FILE "
                         "(or --tls self-signed)")
    if args.tls != "files" and (args.cert is not None or args.key is not None):
        raise SystemExit("pytsnet derper: error: --cert/--key are for --tls (without self-signed)")
    if args.verify_client_url is not None and not args.verify_client_url.startswith(("http://", "https://")):
        raise SystemExit("pytsnet derper: error: --verify-client-url must be an http:// or https:// URL")
    try:
        derper = Derper(args.listen, tls=args.tls, cert=args.cert, key=args.key, hostname=args.hostname,
                        stun_port=None if args.no_stun else args.stun_port,
                        verify_client_url=args.verify_client_url,
                        verify_fail_open=args.verify_client_url_fail_open).start()
    except (ValueError, OSError) as e:
        raise SystemExit(f"pytsnet derper: error: {e}") from None
    def interrupted(_sig: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt  # SIGTERM stops as Ctrl-C does: listeners closed, temp files removed

    signal.signal(signal.SIGTERM, interrupted)
    try:
        print(f"derper: DERP {derper.url}", flush=True)
        print("derper: STUN " + (f"udp/{derper.stun_port}" if derper.stun is not None else "off"), flush=True)
        if args.verify_client_url:
            mode = "fail open" if args.verify_client_url_fail_open else "fail closed"
            print(f"derper: admitting clients by {args.verify_client_url} ({mode})", flush=True)
        else:
            print("derper: open to every client", flush=True)
        if args.write_derp_map is not None:
            try:
                dm = derper.derp_map(args.region_id)
            except ValueError as e:  # DerpMapError: a wildcard listener without --hostname
                raise SystemExit(f"pytsnet derper: error: {e}") from None
            tmp = args.write_derp_map.with_name(args.write_derp_map.name + ".tmp")
            tmp.write_text(json.dumps(dm, indent=2) + "\n")
            tmp.replace(args.write_derp_map)  # readers never see half a map
            print(f"derper: DERP map written to {args.write_derp_map}", flush=True)
        derper.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        derper.close()
    return 0
