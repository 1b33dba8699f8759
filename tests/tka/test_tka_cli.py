"""``pytsnet lock …`` against a running ``python -m pytsnet up`` (its LocalAPI socket), with a Python
peer: init (dry run, then ``--confirm`` printing the generated secret once), status in Go's words,
log, a wrong disablement secret refused, the printed one turning the lock off for the peer too."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pytsnet.device import ActorDevice
from pytsnet.localnet.server import LocalTailnet
from pytsnet.testing.polling import wait_until
from pytsnet.testing.tailnet import new_device, wait_for_peers

pytestmark = pytest.mark.timeout(240)

ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}


def cli(state: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pytsnet", "lock", *args, "--dir", str(state)],
                          capture_output=True, text=True, timeout=90, env=ENV)


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[tuple[Path, ActorDevice]]:
    state = Path(tempfile.mkdtemp(prefix="lk", dir="/tmp"))  # a short socket path
    with LocalTailnet(tmp_path / "control", listen="127.0.0.1:0") as net:
        other = new_device(net, tmp_path, "other").start()
        proc = subprocess.Popen(
            [sys.executable, "-m", "pytsnet", "up", "--control-url", net.control_url, "--authkey",
             net.create_authkey(), "--dir", str(state), "--hostname", "cli"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV)
        try:
            other.wait_until_running_blocking(30)
            wait_for_peers(other, ["cli"])
            deadline = time.monotonic() + 30
            while cli(state, "status").returncode != 0:
                assert time.monotonic() < deadline, "the LocalAPI socket serves"
                time.sleep(0.2)
            yield state, other
        finally:
            proc.kill()
            proc.wait(10)
            other.close()
            shutil.rmtree(state, ignore_errors=True)


def test_lock_cli_init_status_log_disable(rig: tuple[Path, ActorDevice]) -> None:
    state, other = rig
    out = cli(state, "status").stdout
    assert out.startswith("Tailnet Lock is NOT enabled.\n"), out
    m = re.search(r"This node's tailnet-lock key: (tlpub:[0-9a-f]{64})", out)
    assert m, out
    key = m.group(1)

    dry = cli(state, "init", key)
    assert dry.returncode == 0 and "--confirm" in dry.stdout and f" - {key} (25519 key)" in dry.stdout
    assert not json.loads(cli(state, "status", "--json").stdout)["Enabled"], "a dry run changes nothing"

    done = cli(state, "init", "--confirm", "--gen-disablements", "1", key)
    assert done.returncode == 0, done.stderr
    secrets = re.findall(r"\tdisablement-secret:([0-9A-F]{64})\n", done.stdout)
    assert len(secrets) == 1 and done.stdout.endswith("Initialization complete.\n"), done.stdout

    def enabled_and_signed() -> bool:
        st = json.loads(cli(state, "status", "--json").stdout)
        return bool(st["Enabled"] and st["NodeKeySigned"])

    wait_until(enabled_and_signed, 40, "the lock is on and this node signed", interval=0.3)
    wait_until(lambda: other.lock_status().node_key_signed, 30, "the peer was signed by init")
    st = json.loads(cli(state, "status", "--json").stdout)
    assert len(st["Head"]) == 32 and [k["Votes"] for k in st["TrustedKeys"]] == [1]
    text = cli(state, "status").stdout
    assert "Tailnet Lock is ENABLED." in text and f"\t{key}\t1\t(self)" in text
    assert "This node is accessible under Tailnet Lock." in text

    log = cli(state, "log")
    assert log.returncode == 0, log.stderr
    assert re.search(r"^update [A-Z2-7]+ \(checkpoint\)$", log.stdout, re.M), log.stdout
    assert json.loads(cli(state, "log", "--json").stdout)[0]["Change"] == "checkpoint"

    wrong = cli(state, "disable", "disablement-secret:" + "00" * 32)
    assert wrong.returncode != 0 and "incorrect disablement secret" in wrong.stderr, wrong.stderr
    assert other.lock_status().enabled
    ok = cli(state, "disable", "disablement-secret:" + secrets[0])
    assert ok.returncode == 0, ok.stderr
    wait_until(lambda: not other.lock_status().enabled, 40, "the peer's lock is off")
    wait_until(lambda: not json.loads(cli(state, "status", "--json").stdout)["Enabled"], 40, "ours too",
               interval=0.3)
