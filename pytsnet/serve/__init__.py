"""Serve (Go ``tailscale serve``): the node answers tailnet connections on configured ports itself.

A ``ServeConfig`` (Go's ``ipn.ServeConfig``, Go's JSON) maps ports to a TCP forward, a TLS-terminated
TCP forward, or HTTP/HTTPS web servers whose mount points Proxy, Text, Path or Redirect:

    cfg = ServeConfig.model_validate_json('{"TCP": {"80": {"HTTP": true}}, "Web": {"app.tail1.ts.net:80":'
                                          ' {"Handlers": {"/": {"Proxy": "3000"}}}}}')
    await dev.set_serve_config(cfg)      # checked, stored (state key "_serve/default"), applied
    cfg, etag = await dev.get_serve_config()

Set at runtime (open connections are not dropped), kept in the state store and applied again at
the next start; a bad config is ``ServeConfigInvalid`` and changes nothing. The models and the
sans-IO rules are ``pytsnet.wire.serve``; the actors are ``pytsnet.actors.serve``.
"""

from pytsnet.serve.listeners import ServeListeners
from pytsnet.wire.serve import (
    HTTPHandler,
    ServeConfig,
    ServeConfigError,
    ServiceConfig,
    TCPPortHandler,
    WebServerConfig,
    etag,
    parse_serve_config,
    to_go_json,
)

__all__ = [
    "SERVE_STATE_KEY",
    "HTTPHandler",
    "ServeConfig",
    "ServeConfigError",
    "ServeListeners",
    "ServiceConfig",
    "TCPPortHandler",
    "WebServerConfig",
    "etag",
    "parse_serve_config",
    "to_go_json",
]

SERVE_STATE_KEY = "_serve/default"
"""Go keeps the config under ``_serve/<profile ID>`` (``ipn.ServeConfigKey``); a pytsnet state store
holds one profile, named ``default`` here."""
