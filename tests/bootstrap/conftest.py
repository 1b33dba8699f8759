"""A local tailnet per test, a device factory, and an ID-token issuer (a P-256 key localnet trusts)."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from pytsnet.config import Config
from pytsnet.device import ActorDevice
from pytsnet.localnet.server import LocalTailnet


@pytest.fixture
def net(tmp_path: Path) -> Iterator[LocalTailnet]:
    with LocalTailnet(tmp_path / "control", listen="127.0.0.1:0") as n:
        yield n


@pytest.fixture
def make_device(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., ActorDevice]]:
    for var in ("TS_AUTHKEY", "TS_AUTH_KEY", "TS_CLIENT_SECRET", "TS_CLIENT_ID", "TS_ID_TOKEN", "TS_AUDIENCE",
                "TS_BASE_URL", "TSNET_FORCE_LOGIN"):
        monkeypatch.delenv(var, raising=False)
    made: list[ActorDevice] = []

    def make(name: str, net: LocalTailnet, **kw: Any) -> ActorDevice:
        kw.setdefault("backoff_max", 1.0)
        kw.setdefault("dir", tmp_path / name)
        dev = ActorDevice(Config(hostname=name, control_url=net.control_url, bind_host="127.0.0.1", **kw))
        made.append(dev)
        return dev

    yield make
    for dev in made:
        dev.close()


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


@pytest.fixture
def issuer() -> Issuer:
    return Issuer()
