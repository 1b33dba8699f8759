"""``make demo`` installs only what the demo runs, and building pytsnet prints no setuptools warnings
(issue 11 part 5: it used to install the test extra and open with license deprecation warnings)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_demo_installs_runtime_deps_only(tmp_path: Path) -> None:
    # Run as a top-level make even under `make test` (a sub-make prints "Entering directory" lines).
    env = {k: v for k, v in os.environ.items() if k not in ("MAKELEVEL", "MAKEFLAGS", "MFLAGS")}
    plan = subprocess.run(["make", "--no-print-directory", "-n", "demo", f"VENV={tmp_path / 'venv'}"],
                          cwd=REPO, capture_output=True, text=True, check=True, env=env).stdout
    installs = [line for line in plan.splitlines() if " install " in line]
    assert installs, plan
    assert all("[test]" not in line and "--upgrade" not in line for line in installs), installs
    assert any(line.rstrip().endswith("install -q -e .") for line in installs), installs
    assert plan.rstrip().splitlines()[-1].endswith("-m pytsnet demo")


def test_building_pytsnet_prints_no_setuptools_warning(tmp_path: Path) -> None:
    src = tmp_path / "src"
    shutil.copytree(REPO, src, ignore=shutil.ignore_patterns(".venv", ".cache", ".git", "build", "dist",
                                                             "*.egg-info", "__pycache__", ".*_cache"))
    out = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-v",
                          "-w", str(tmp_path / "dist"), str(src)], capture_output=True, text=True, check=True)
    log = out.stdout + out.stderr
    assert "BuildBackendWarning" not in log and "SetuptoolsDeprecationWarning" not in log, [
        line for line in log.splitlines() if "arning" in line]
