"""Serve's TLS contexts (``actors/serve/certs``, ``ContextCache``): one per pair, bounded, renewed.

Loading a pair is counted through ``server_ssl_context`` (what a cache miss costs); the contexts
are compared by identity. The end-to-end twin (two tailnet connections, then a renewal) is in
``test_serve_e2e.py::test_tls_contexts_shared_per_pair_and_renewed``.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable

import pytest
import trustme

from pytsnet.actors.cert import tls as cert_tls
from pytsnet.actors.cert.tls import ContextCache
from pytsnet.actors.serve.certs import MAX_CONTEXTS, ServeCerts

Pair = tuple[bytes, bytes]


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def _pair(ca: trustme.CA, name: str) -> Pair:
    leaf = ca.issue_cert(name)
    return b"".join(b.bytes() for b in leaf.cert_chain_pems), leaf.private_key_pem.bytes()


@pytest.fixture
def loads(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """The cert PEMs ``server_ssl_context`` loaded during the test."""
    seen: list[bytes] = []
    real: Callable[..., ssl.SSLContext] = cert_tls.server_ssl_context

    def counting(cert_pem: bytes, key_pem: bytes, **kw: object) -> ssl.SSLContext:
        seen.append(cert_pem)
        return real(cert_pem, key_pem, **kw)
    monkeypatch.setattr(cert_tls, "server_ssl_context", counting)
    return seen


def test_same_pair_one_context_renewed_pair_replaces_it(ca: trustme.CA, loads: list[bytes]) -> None:
    pairs = {"a.ts.net": _pair(ca, "a.ts.net")}
    certs = ServeCerts(lambda d: pairs[d])
    first = certs.context("a.ts.net")
    assert certs.context("a.ts.net") is first and len(loads) == 1  # a second connection: no reload
    pairs["a.ts.net"] = _pair(ca, "a.ts.net")  # renewed
    renewed = certs.context("a.ts.net")
    assert renewed is not first and len(loads) == 2
    assert len(certs.contexts) == 1  # the old pair's context is gone at once, not left to age out
    assert certs.context("a.ts.net") is renewed


def test_domains_keep_their_own_contexts(ca: trustme.CA, loads: list[bytes]) -> None:
    pairs = {d: _pair(ca, d) for d in ("a.ts.net", "svc.ts.net")}
    certs = ServeCerts(lambda d: pairs[d])
    a, s = certs.context("a.ts.net"), certs.context("svc.ts.net")
    assert a is not s and certs.context("a.ts.net") is a and certs.context("svc.ts.net") is s
    assert len(loads) == 2  # alternating names do not thrash


def test_bounded_lru(ca: trustme.CA, loads: list[bytes]) -> None:
    pairs = {f"n{i}.ts.net": _pair(ca, f"n{i}.ts.net") for i in range(MAX_CONTEXTS + 1)}
    certs = ServeCerts(lambda d: pairs[d])
    first = certs.context("n0.ts.net")
    for i in range(1, MAX_CONTEXTS):
        certs.context(f"n{i}.ts.net")
    assert certs.context("n0.ts.net") is first  # used again: now the most recent
    certs.context(f"n{MAX_CONTEXTS}.ts.net")  # one over: the least recently used (n1) goes
    assert len(certs.contexts) == MAX_CONTEXTS
    n = len(loads)
    assert certs.context("n0.ts.net") is first and len(loads) == n
    certs.context("n1.ts.net")
    assert len(loads) == n + 1


def test_a_pair_shared_by_two_names_stays_while_one_uses_it(ca: trustme.CA) -> None:
    shared = _pair(ca, "a.ts.net")
    cache = ContextCache(alpn=(), max_entries=4)
    ctx = cache.context(*shared, name="a.ts.net")
    assert cache.context(*shared, name="b.ts.net") is ctx
    cache.context(*_pair(ca, "a.ts.net"), name="a.ts.net")  # a renewed; b still serves the old pair
    assert cache.context(*shared, name="b.ts.net") is ctx and len(cache) == 2


def test_failures_are_not_kept(ca: trustme.CA) -> None:
    cert, _ = _pair(ca, "a.ts.net")
    _, other_key = _pair(ca, "a.ts.net")
    cache = ContextCache(alpn=(), max_entries=4)
    with pytest.raises(ssl.SSLError):
        cache.context(cert, other_key, name="a.ts.net")  # a key not matching the cert
    assert len(cache) == 0

    def down(domain: str) -> Pair:
        raise OSError("ACME down")
    with pytest.raises(OSError):
        ServeCerts(down).context("a.ts.net")
    with pytest.raises(ValueError):
        ContextCache(max_entries=0)
