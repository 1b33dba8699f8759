"""localnet as an OIDC issuer: the ID tokens control mints for its nodes (``POST /machine/id-token``).

Go's node asks control for a token over Noise (``tailcfg.TokenRequest``); Tailscale's control answers
a ``tailcfg.TokenResponse`` whose JWT carries the claims listed in ``tailcfg.go`` (``sub`` the node's
MagicDNS name, ``aud``, ``exp``/``iat``/``nbf``, ``iss``, ``jti``; ``key``, ``addresses``, ``nid``,
``node``, ``domain``, ``tags`` or ``user``/``uid``). Tailscale's control is closed source, so the
issuer URL and key type are ours: ``iss`` is the control server's base URL, the key one ES256 key per
tailnet (its own 0600 file in the state dir, never in the database), published as
``/.well-known/jwks.json`` with ``/.well-known/openid-configuration`` pointing at it (the paths
Go's ``cmd/tsidp`` serves), so any OIDC verifier can check a token against localnet.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from pytsnet.localnet.store import Node, Store, User
from pytsnet.wire.tailcfg.token import check_audience

__all__ = ["JWKS_PATH", "OIDC_CONFIG_PATH", "TOKEN_LIFETIME", "OidcIssuer"]

JWKS_PATH = "/.well-known/jwks.json"
OIDC_CONFIG_PATH = "/.well-known/openid-configuration"
TOKEN_LIFETIME = 3600.0
"""An ID token's life (ours; Tailscale's is not documented): long enough for one federation login."""
def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class OidcIssuer:
    """The tailnet's signing key and the documents a verifier needs."""

    def __init__(self, store: Store) -> None:
        pem = store.private_key("id_token_private", lambda: ec.generate_private_key(ec.SECP256R1())
                                .private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()).decode())
        key = serialization.load_pem_private_key(pem.encode(), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
            raise ValueError("the id-token key file does not hold a P-256 key")
        self._key = key
        nums = key.public_key().public_numbers()
        self._jwk = {"kty": "EC", "crv": "P-256", "x": _b64(nums.x.to_bytes(32, "big")),
                     "y": _b64(nums.y.to_bytes(32, "big")), "use": "sig", "alg": "ES256"}
        self.kid = _b64(hashlib.sha256(json.dumps(self._jwk, sort_keys=True).encode()).digest()[:12])
        self._jwk["kid"] = self.kid

    def jwks(self) -> dict[str, Any]:
        return {"keys": [dict(self._jwk)]}

    def discovery(self, issuer: str) -> dict[str, Any]:
        """The OpenID Provider metadata a verifier reads: where the keys are, what is signed how."""
        return {"issuer": issuer, "jwks_uri": issuer + JWKS_PATH, "response_types_supported": ["id_token"],
                "subject_types_supported": ["public"], "id_token_signing_alg_values_supported": ["ES256"],
                "claims_supported": ["sub", "aud", "exp", "iat", "iss", "jti", "nbf", "key", "addresses",
                                     "nid", "node", "domain", "tags", "user", "uid"]}

    def claims(self, node: Node, user: User | None, *, name: str, domain: str, issuer: str, aud: str,
               now: float) -> dict[str, Any]:
        """The claims of ``tailcfg.TokenResponse`` for ``node`` (``name`` its MagicDNS name, no dot)."""
        out: dict[str, Any] = {
            "iss": issuer, "sub": name, "aud": [check_audience(aud)], "iat": int(now), "nbf": int(now),
            "exp": int(now + TOKEN_LIFETIME), "jti": secrets.token_hex(16), "key": node.node_key,
            "addresses": [a for a in (node.ipv4, node.ipv6) if a], "nid": node.stable_id,
            "node": name, "domain": domain}
        if node.tags:
            out["tags"] = [f"{domain}:{t}" for t in node.tags]
        elif user is not None:
            out["user"] = f"{domain}:{user.login_name}"
            out["uid"] = str(user.id)
        return out

    def sign(self, claims: dict[str, Any]) -> str:
        """A compact JWS (ES256, the raw r||s signature JOSE wants)."""
        header = {"alg": "ES256", "typ": "JWT", "kid": self.kid}
        signing = (_b64(json.dumps(header, separators=(",", ":")).encode()) + "."
                   + _b64(json.dumps(claims, separators=(",", ":")).encode()))
        r, s = decode_dss_signature(self._key.sign(signing.encode(), ec.ECDSA(hashes.SHA256())))
        return signing + "." + _b64(r.to_bytes(32, "big") + s.to_bytes(32, "big"))
