"""The demo is real: it kills a child mid-stream and checks the tree's promises (exit 0 only if kept)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from pytsnet.cli import build_parser, main


def test_demo_in_process(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--runtime"]) == 0
    out = capsys.readouterr().out
    assert "start  worker-b incarnation 2" in out and "no message lost (OK)" in out


def test_python_dash_m_pytsnet_demo() -> None:
    cmd = [sys.executable, "-m", "pytsnet", "demo", "--runtime"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "worker-b#2 handled work 11" in proc.stdout


def test_subcommands_are_discovered() -> None:
    choices = build_parser()._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    assert {"demo", "trace"} <= set(choices)
