"""One device per state dir, and a damaged state store refused by name (issue 13, part 4)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import pytsnet
from pytsnet.config import Config
from pytsnet.device import ActorDevice
from pytsnet.errors import StateDirLocked, StateStoreError
from pytsnet.localnet.server import LocalTailnet
from pytsnet.state import LOCK_FILE, NETMAP, NODE, FileStore


def _dev(d: Path, url: str = "http://127.0.0.1:9", key: str = "") -> ActorDevice:
    return ActorDevice(Config(dir=d, hostname="locked", control_url=url, auth_key=key, backoff_max=1.0))


def test_second_device_on_a_used_dir_fails_at_start_naming_the_holder(tmp_path: Path) -> None:
    first, second = _dev(tmp_path), _dev(tmp_path)
    first.start()
    try:
        with pytest.raises(StateDirLocked) as e:
            second.start()
        assert e.value.pid == os.getpid() and str(os.getpid()) in str(e.value)
        assert isinstance(e.value, StateStoreError) and isinstance(e.value, OSError)
        assert pytsnet.StateDirLocked is StateDirLocked
        assert second.system is None  # nothing of the second device runs
        assert (tmp_path / LOCK_FILE).stat().st_mode & 0o777 == 0o600
    finally:
        first.close()
    second.start()  # released on close
    second.close()


def test_a_crashed_holder_releases_the_dir(tmp_path: Path) -> None:
    code = ("import sys, time; from pytsnet.state import StateDirLock; StateDirLock(sys.argv[1]).acquire();"
            " print('held', flush=True); time.sleep(60)")
    p = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout is not None and p.stdout.readline().strip() == "held"
        with pytest.raises(StateDirLocked) as e:
            _dev(tmp_path).start()
        assert e.value.pid == p.pid
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait()
    dev = _dev(tmp_path).start()
    dev.close()


@pytest.mark.parametrize(("key", "value"), [
    (NODE, b"{not json"),
    (NODE, b"[1, 2]"),
    (NODE, json.dumps({"NodePrivate": "privkey:zz", "LoggedIn": True}).encode()),
    (NETMAP, b"\xff\xfe"),
    ("_machinekey", b"privkey:nope"),
])
def test_corrupt_state_value_is_a_typed_error_naming_the_key(tmp_path: Path, key: str, value: bytes) -> None:
    FileStore.in_dir(tmp_path).write_state(key, value)
    before = (tmp_path / "tailscaled.state").read_bytes()
    dev = _dev(tmp_path)
    with pytest.raises(StateStoreError) as e:
        dev.start()
    assert repr(key) in str(e.value)
    assert dev.system is None
    assert (tmp_path / "tailscaled.state").read_bytes() == before  # no fresh node key written over it
    dev.close()
    _dev(tmp_path).close()  # the lock was released with the refusal


def test_a_registered_node_restarts_with_its_identity(tmp_path: Path) -> None:
    """The check accepts what the client itself wrote (no false StateStoreError on a restart)."""
    with LocalTailnet(tmp_path / "control", listen="127.0.0.1:0") as net:
        key = net.create_authkey()
        dev = _dev(tmp_path / "node", net.control_url, key).start()
        try:
            ip = dev.wait_until_running_blocking(20).addresses
        finally:
            dev.close()
        again = _dev(tmp_path / "node", net.control_url).start()
        try:
            assert again.wait_until_running_blocking(20).addresses == ip
        finally:
            again.close()
