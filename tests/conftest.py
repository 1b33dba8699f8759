"""Shared fixtures: isolated namespaces for interop tests (skipped, visibly, without root)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from pytsnet.testing.netns import Netns, isolated_netns, netns_available


@pytest.fixture
def netns() -> Iterator[Netns]:
    reason = netns_available()
    if reason:
        pytest.skip(reason)
    with isolated_netns() as ns:
        yield ns


@pytest.fixture
def netns_factory() -> Iterator[object]:
    """Call it to get more isolated namespaces; all are torn down after the test."""
    reason = netns_available()
    if reason:
        pytest.skip(reason)
    made: list[Netns] = []

    def make(prefix: str = "pt") -> Netns:
        from pytsnet.testing.netns import unique_tag

        ns = Netns(f"{prefix}{unique_tag()}")
        made.append(ns)
        ns.assert_no_route_out()
        return ns

    yield make
    for ns in reversed(made):
        ns.close()


@pytest.fixture(autouse=True)
def _no_default_control_plane(monkeypatch: pytest.MonkeyPatch) -> None:
    """A test that forgets ``control_url`` must fail locally, never dial Tailscale's public default."""
    monkeypatch.setenv("TS_CONTROL_URL", "http://127.0.0.1:9")
