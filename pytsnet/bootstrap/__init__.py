"""Bootstrap: turn an OAuth client secret or a workload identity into an auth key before login.

Go's ``feature/oauthkey`` and ``feature/identityfederation`` (v1.90.9), which tsnet calls before the
backend starts: :func:`resolve_auth_key` picks the credential (``Config.auth_key``, then an OAuth
client secret, then client ID + ID token), and for the last two mints a single-use auth key with
``Config.tags`` through the control server's API (``POST /api/v2/tailnet/-/keys``). Secrets never
reach a log line, a repr or an error message.
"""

from pytsnet.bootstrap.resolve import resolve_auth_key

__all__ = ["resolve_auth_key"]
