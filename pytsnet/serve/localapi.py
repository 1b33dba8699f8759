"""LocalAPI ``/localapi/v0/serve-config`` (Go ``ipn/localapi/serve.go``), over the device's Serve.

GET (read access): the config as Go's JSON with its ``Etag`` header. POST (write access): the body is
the new config; a non-empty ``If-Match`` must be the current ETag or the answer is 412 (Go
``ErrETagMismatch``); a config that cannot be served is Go's ``WriteErrorJSON`` (500,
``{"error": "updating config: …"}``) and changes nothing.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from pytsnet.errors import FunnelPortNotAllowed, FunnelUnavailable, ServeConfigInvalid, ServeETagMismatch
from pytsnet.localapi.server import LocalApi, LocalRequest, LocalResponse, Route
from pytsnet.wire.serve import ServeConfigError, parse_serve_config, to_go_json

if TYPE_CHECKING:
    from pytsnet.device import ActorDevice

__all__ = ["register"]


def _error_json(text: str) -> LocalResponse:
    return LocalResponse(500, (json.dumps({"error": text}) + "\n").encode(), "application/json")


def register(api: LocalApi, dev: ActorDevice) -> None:
    def serve_config(_api: LocalApi, req: LocalRequest) -> LocalResponse:
        if req.method == "GET":
            cfg, tag = dev.get_serve_config_blocking()
            return LocalResponse(200, to_go_json(cfg), "application/json", headers=(("Etag", tag),))
        if req.method != "POST":
            return LocalResponse.error(405, "method not allowed")
        try:
            cfg = parse_serve_config(req.body)
        except ServeConfigError as e:
            return _error_json(f"decoding config: {e}")
        try:
            dev.set_serve_config_blocking(cfg, etag=req.headers.get("if-match", ""))
        except ServeETagMismatch as e:
            return LocalResponse.error(412, str(e))
        except (ServeConfigInvalid, FunnelUnavailable, FunnelPortNotAllowed) as e:  # 20g: Funnel checks
            return _error_json(f"updating config: {e}")
        return LocalResponse(200, b"")

    api.routes["serve-config"] = Route(serve_config, "read", "serve config", frozenset({"POST"}))
