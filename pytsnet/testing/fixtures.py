"""Pytest fixtures shared by tests/ and chaos/ (loaded with ``-p`` from pyproject's addopts).

Every test runs with ``TS_CONTROL_URL`` pointing at a closed local port, so one that forgets its
control URL fails here instead of dialing Tailscale's public default. ``netns`` is one namespace
with only loopback and no route out; ``netns_factory`` makes more on demand. Both skip, visibly,
where namespaces cannot be made (not root); under CI a skip fails.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from pytsnet.testing.netns import Netns, isolated_netns, netns_available, unique_tag


@pytest.fixture(autouse=True)
def _no_default_control_plane(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TS_CONTROL_URL", "http://127.0.0.1:9")
    # 20a: a node's ACME client never reaches Let's Encrypt from a test
    monkeypatch.setenv("TS_DEBUG_ACME_DIRECTORY_URL", "https://127.0.0.1:9/directory")


@pytest.fixture
def netns() -> Iterator[Netns]:
    reason = netns_available()
    if reason:
        pytest.skip(reason)
    with isolated_netns() as ns:
        yield ns


@pytest.fixture
def netns_factory() -> Iterator[Callable[..., Netns]]:
    """Call it to get more isolated namespaces; all are torn down after the test."""
    reason = netns_available()
    if reason:
        pytest.skip(reason)
    made: list[Netns] = []

    def make(prefix: str = "pt") -> Netns:
        ns = Netns(f"{prefix}{unique_tag()}")
        made.append(ns)
        ns.assert_no_route_out()
        return ns

    yield make
    for ns in reversed(made):
        ns.close()
