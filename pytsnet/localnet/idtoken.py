"""Verify an ID token (a JWS-signed JWT) for a federated OAuth client: signature, then claims.

RS256 and ES256 only (what GitHub Actions, GCP and AWS issue); ``alg`` must match the client's key
type, so ``none`` or an HMAC made with the public key are refused. Claims: ``iss`` equals the
client's issuer, ``aud`` contains its audience, ``sub`` matches its pattern, ``exp`` is in the
future and ``nbf`` (if any) in the past, with ``LEEWAY`` of clock skew. Tokens over ``MAX_TOKEN``
bytes are refused before decoding.
"""

from __future__ import annotations

import base64
import binascii
import fnmatch
import json
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from pytsnet.localnet.oauth_clients import Federation

__all__ = ["LEEWAY", "MAX_TOKEN", "IdTokenRejected", "verify_id_token"]

MAX_TOKEN = 16 << 10
LEEWAY = 60.0


class IdTokenRejected(ValueError):
    """The token does not prove the federated identity; ``str(exc)`` says which check failed."""


def _b64(part: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))
    except (binascii.Error, ValueError):
        raise IdTokenRejected("malformed token (base64)") from None


def _json(part: str) -> dict[str, Any]:
    try:
        doc = json.loads(_b64(part))
    except ValueError:
        raise IdTokenRejected("malformed token (JSON)") from None
    if not isinstance(doc, dict):
        raise IdTokenRejected("malformed token (not an object)")
    return doc


def _verify_signature(alg: object, key: object, signed: bytes, sig: bytes) -> None:
    try:
        if alg == "RS256" and isinstance(key, rsa.RSAPublicKey):
            key.verify(sig, signed, padding.PKCS1v15(), hashes.SHA256())
        elif alg == "ES256" and isinstance(key, ec.EllipticCurvePublicKey) and len(sig) == 64:
            der = encode_dss_signature(int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big"))
            key.verify(der, signed, ec.ECDSA(hashes.SHA256()))
        else:
            raise IdTokenRejected(f"algorithm {str(alg)[:16]!r} does not match the client's key")
    except InvalidSignature:
        raise IdTokenRejected("bad signature") from None


def verify_id_token(token: str, fed: Federation, now: float) -> dict[str, Any]:
    """The token's claims if it proves ``fed``; ``IdTokenRejected`` otherwise."""
    if len(token) > MAX_TOKEN:
        raise IdTokenRejected("token too large")
    parts = token.split(".")
    if len(parts) != 3:
        raise IdTokenRejected("malformed token (want header.payload.signature)")
    header, claims = _json(parts[0]), _json(parts[1])
    key = load_pem_public_key(fed.public_key_pem.encode())
    _verify_signature(header.get("alg"), key, f"{parts[0]}.{parts[1]}".encode(), _b64(parts[2]))
    if claims.get("iss") != fed.issuer:
        raise IdTokenRejected("issuer does not match")
    aud = claims.get("aud")
    if not (aud == fed.audience or (isinstance(aud, list) and fed.audience in aud)):
        raise IdTokenRejected("audience does not match")
    sub = claims.get("sub")
    if not isinstance(sub, str) or not fnmatch.fnmatchcase(sub, fed.subject):
        raise IdTokenRejected("subject does not match")
    exp, nbf = claims.get("exp"), claims.get("nbf")
    if not isinstance(exp, int | float) or isinstance(exp, bool) or exp + LEEWAY <= now:
        raise IdTokenRejected("token expired (or has no exp)")
    if isinstance(nbf, int | float) and not isinstance(nbf, bool) and nbf - LEEWAY > now:
        raise IdTokenRejected("token not valid yet (nbf)")
    return claims
