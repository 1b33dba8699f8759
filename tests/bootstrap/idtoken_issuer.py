"""A stand-in CI identity provider: signs ES256 ID tokens with a P-256 key localnet can be told to trust."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature


def _b64(b: bytes) -> str:
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


class Issuer:
    """Signs ES256 ID tokens as a CI provider would (GitHub Actions' claims shape)."""

    def __init__(self, url: str = "https://token.actions.example") -> None:
        self.url = url
        self.key = ec.generate_private_key(ec.SECP256R1())

    @property
    def public_pem(self) -> str:
        return self.key.public_key().public_bytes(serialization.Encoding.PEM,
                                                  serialization.PublicFormat.SubjectPublicKeyInfo).decode()

    def token(self, *, sub: str = "repo:org/app:ref:refs/heads/main", aud: str = "api://tailscale",
              lifetime: float = 300, key: ec.EllipticCurvePrivateKey | None = None, **claims: Any) -> str:
        now = int(time.time())
        head = _b64(json.dumps({"alg": "ES256", "typ": "JWT"}).encode())
        body = _b64(json.dumps({"iss": self.url, "sub": sub, "aud": aud, "iat": now, "nbf": now,
                                "exp": now + int(lifetime), **claims}).encode())
        der = (key or self.key).sign(f"{head}.{body}".encode(), ec.ECDSA(hashes.SHA256()))
        r, s = decode_dss_signature(der)
        return f"{head}.{body}.{_b64(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"
