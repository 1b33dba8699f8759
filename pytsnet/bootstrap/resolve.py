"""Which credential logs the node in, and minting an auth key from an OAuth client or an ID token.

Go tsnet's order: ``auth_key`` (``TS_AUTHKEY``, ``TS_AUTH_KEY``), which may itself be an OAuth client
secret; else ``client_secret`` (``TS_CLIENT_SECRET``); else workload identity (``client_id`` plus
``id_token`` or ``audience``). Minting happens only when it is needed: a node with stored state logs in
with its node key (Go: the auth key is ignored), unless ``TSNET_FORCE_LOGIN`` is set. Tags are checked
before any request (``TagsRequired``), which is the error Go users of tsnsrv #237 never got.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING

from pytsnet.bootstrap import api
from pytsnet.bootstrap.attributes import is_client_secret, parse_client_id, parse_client_secret
from pytsnet.bootstrap.provider import provider_id_token
from pytsnet.errors import ConfigError, TagsRequired

if TYPE_CHECKING:
    from pytsnet.config import Config

__all__ = ["TAILSCALE_API", "default_base_url", "force_login", "resolve_auth_key"]

log = logging.getLogger("pytsnet.bootstrap")
TAILSCALE_API = "https://api.tailscale.com"
TAILSCALE_CONTROL = "https://controlplane.tailscale.com"


def force_login() -> bool:
    """``TSNET_FORCE_LOGIN``, read as Go's ``envknob.Bool`` (``strconv.ParseBool``)."""
    return os.environ.get("TSNET_FORCE_LOGIN", "").strip().lower() in ("1", "t", "true")


def default_base_url(cfg: Config) -> str:
    """``Config.base_url``, else Tailscale's API for Tailscale's control, else the control URL."""
    if cfg.base_url:
        return str(cfg.base_url).rstrip("/")
    control = str(cfg.control_url or "").rstrip("/")
    return TAILSCALE_API if control in ("", TAILSCALE_CONTROL) else control


def resolve_auth_key(cfg: Config, *, has_state: bool) -> str:
    """The auth key to log in with ("" for none): ``cfg.auth_key`` as is, or one minted now.

    ``cfg`` is resolved (environment applied). Raises ``TagsRequired`` or ``ConfigError`` before any
    request, ``OAuthRejected``/``TagsNotPermitted`` when the API refuses, ``NetworkUnreachable``."""
    auth_key = str(cfg.auth_key or "")
    secret = auth_key or str(cfg.client_secret or "")
    client_id, id_token, audience = str(cfg.client_id or ""), str(cfg.id_token or ""), str(cfg.audience or "")
    if cfg.client_secret and not auth_key and not is_client_secret(secret):
        raise ConfigError("Config.client_secret (TS_CLIENT_SECRET) is not an OAuth client secret "
                          "(tskey-client-…); an auth key goes in Config.auth_key")
    if has_state and not force_login():
        if is_client_secret(secret) or (not auth_key and client_id):
            log.debug("node state exists: logging in with the stored node key, no auth key minted "
                      "(TSNET_FORCE_LOGIN=1 to mint one and log in again)")
        return "" if is_client_secret(auth_key) else auth_key
    if is_client_secret(secret):
        return _via_oauth(cfg, secret)
    if auth_key:
        return auth_key
    if client_id or id_token or audience:
        return _via_identity(cfg, client_id, id_token, audience)
    return ""


def _via_oauth(cfg: Config, secret: str) -> str:
    if not cfg.tags:
        raise TagsRequired("an OAuth client secret (Config.client_secret, TS_CLIENT_SECRET or a "
                           "tskey-client- auth key)")
    opts = parse_client_secret(secret)
    base = opts.base_url or default_base_url(cfg)
    # tskey-client-<id>-<secret>: the client ID is the middle part (Go sends a placeholder; both work).
    client_id = opts.credential.removeprefix("tskey-client-").rpartition("-")[0] or "some-client-id"
    log.info("minting an auth key for tags %s with an OAuth client at %s", list(cfg.tags), base)
    token = api.client_credentials_token(base, client_id, opts.credential)
    return api.create_auth_key(base, token, tuple(cfg.tags), ephemeral=opts.ephemeral,
                               preauthorized=opts.preauthorized)


def _via_identity(cfg: Config, client_id: str, id_token: str, audience: str) -> str:
    if not client_id:  # HEAD tsnet's checks, in its order
        which = "ID token" if id_token else "audience"
        raise ConfigError(f"workload identity: an {which} is set but Config.client_id (TS_CLIENT_ID) "
                          "is empty")
    if not id_token and not audience:
        raise ConfigError("workload identity: Config.client_id is set but Config.id_token (TS_ID_TOKEN) "
                          "and Config.audience (TS_AUDIENCE) are empty")
    if id_token and audience:
        raise ConfigError("workload identity: set only one of Config.id_token and Config.audience")
    if not cfg.tags:
        raise TagsRequired("workload identity (Config.client_id)")
    opts = parse_client_id(client_id)
    base = default_base_url(cfg) if cfg.base_url else str(cfg.control_url).rstrip("/")  # Go: the control URL
    token = id_token or provider_id_token(audience)
    log.info("minting an auth key for tags %s with workload identity at %s", list(cfg.tags), base)
    access = api.exchange_id_token(base, opts.credential, token)
    return api.create_auth_key(base, access, tuple(cfg.tags), ephemeral=opts.ephemeral,
                               preauthorized=opts.preauthorized)
