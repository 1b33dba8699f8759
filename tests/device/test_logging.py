"""Issue 11 part 3, logging: DEBUG shows pytsnet's subsystems (not pykka/hpack noise), INFO tells the
lifecycle (login, Running, key expiry, path changes), ``ActorDevice(logger=…)`` routes one device's
records (Go's ``UserLogf``/``Logf``), and no secret ever reaches a log."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from device_helpers import eventually

from pytsnet.actors.control.store import MACHINE_KEY, NODE
from pytsnet.config import Config
from pytsnet.device import ActorDevice
from pytsnet.errors import AuthRejected
from pytsnet.localnet.server import LocalTailnet
from pytsnet.localnet.store import Store
from pytsnet.state import FileStore

PORT = 7200


class Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def text(self) -> str:
        """Everything a formatter could print: messages, exception text, every extra attribute."""
        fmt = logging.Formatter()
        out = []
        for r in self.records:
            out.append(fmt.format(r))
            out.extend(str(v) for v in vars(r).values())
        return "\n".join(out)


@pytest.fixture
def root_debug() -> Iterator[Collect]:
    """What an app gets from ``logging.basicConfig(level=logging.DEBUG)``: root at DEBUG, one handler."""
    root = logging.getLogger()
    h, old = Collect(), root.level
    root.addHandler(h)
    root.setLevel(logging.DEBUG)
    yield h
    root.removeHandler(h)
    root.setLevel(old)


def _device(net: LocalTailnet, tmp: Path, name: str, key: str, **kw: object) -> ActorDevice:
    return ActorDevice(Config(dir=tmp / name, hostname=name, auth_key=key, control_url=net.control_url,
                              backoff_max=1.0, bind_host="127.0.0.1"), **kw).start()  # type: ignore[arg-type]


def _talk(a: ActorDevice, b: ActorDevice) -> None:
    for d in (a, b):
        d.wait_until_running_blocking(20)
    eventually(lambda: len(a.peers()) == 1 and len(b.peers()) == 1, 20, "each sees the other")
    lst = b.listen_blocking(PORT)
    ca = a.tcp_connect_blocking(str(b.config.hostname), PORT, timeout=15)
    cb, _ = lst.accept()
    ca.sendall(b"ping")
    assert cb.recv(4) == b"ping"
    ca.close()
    cb.close()


def test_debug_shows_pytsnet_subsystems_and_lifecycle_not_dependency_noise(
        tmp_path: Path, root_debug: Collect) -> None:
    with LocalTailnet(tmp_path / "control", listen="127.0.0.1:0") as net:
        key = net.create_authkey(reusable=True)
        a, b = _device(net, tmp_path, "alpha", key), _device(net, tmp_path, "beta", key)
        try:
            _talk(a, b)
            node = next(n for n in net.nodes() if n.hostname == "alpha")
            admin = Store(tmp_path / "control")  # as the CLI does: the server sees other writers' commits
            admin.update_node(node.id, key_expiry=time.time() + 3600)
            admin.close()

            def expiry_logged() -> bool:
                return any("node key expires at" in r.getMessage() for r in root_debug.records)
            eventually(expiry_logged, 10, "key expiry logged")
            eventually(lambda: any(r.getMessage().startswith("path to ") for r in root_debug.records), 10,
                       "a path logged")
        finally:
            a.close()
            b.close()
    names = {r.name for r in root_debug.records}
    for sub in ("control", "device", "magicsock", "wgengine", "netstack", "dataplane", "runtime"):
        assert f"pytsnet.{sub}" in names, sorted(names)
    noisy = sorted(n for n in names if n.split(".")[0] in ("pykka", "hpack", "h2"))
    assert noisy == [], noisy
    info = [r.getMessage() for r in root_debug.records if r.levelno == logging.INFO and
            getattr(r, "pytsnet_device", "") == "alpha"]
    assert any(m.startswith("logged in to ") for m in info), info
    assert any("-> Running as alpha." in m for m in info), info
    assert any(m.startswith("path to ") for m in info), info


def test_device_logger_gets_that_devices_records_only(tmp_path: Path, root_debug: Collect) -> None:
    """Go's per-Server ``UserLogf``/``Logf``: one Logger, one LoggerAdapter, two devices, no mixing."""
    la, lb = logging.getLogger("app.alpha"), logging.getLogger("app.beta")
    ha, hb = Collect(), Collect()
    for lg, h in ((la, ha), (lb, hb)):
        lg.addHandler(h)
        lg.setLevel(logging.DEBUG)
        lg.propagate = False
    adapter = logging.LoggerAdapter(lb, {"tenant": "b"})
    try:
        with LocalTailnet(tmp_path / "control", listen="127.0.0.1:0") as net:
            key = net.create_authkey(reusable=True)
            a = _device(net, tmp_path, "alpha", key, logger=la)
            b = _device(net, tmp_path, "beta", key, logger=adapter)
            try:
                _talk(a, b)
            finally:
                a.close()
                b.close()
    finally:
        for lg, h in ((la, ha), (lb, hb)):
            lg.removeHandler(h)
            lg.propagate = True
            lg.setLevel(logging.NOTSET)
    for h, me in ((ha, "alpha"), (hb, "beta")):
        assert h.records, me
        assert {getattr(r, "pytsnet_device", None) for r in h.records} == {me}
        subs = {getattr(r, "pytsnet_subsystem", None) for r in h.records}
        assert {"control", "device", "magicsock", "netstack"} <= subs, subs
        assert any(r.levelno == logging.INFO and "-> Running" in r.getMessage() for r in h.records)
    assert all(getattr(r, "tenant", None) == "b" for r in hb.records)  # the adapter's own extra kept
    # Routed records do not also go to the pytsnet.* loggers, and no device record escapes its route
    # (the local tailnet's servers are not a device: they log to pytsnet.localnet.*).
    leaked = [r for r in root_debug.records
              if r.name.startswith("pytsnet.") and not r.name.startswith("pytsnet.localnet")]
    assert leaked == [], [(r.name, r.getMessage()) for r in leaked[:5]]


def test_no_secrets_in_debug_logs(tmp_path: Path, root_debug: Collect) -> None:
    with LocalTailnet(tmp_path / "control", listen="127.0.0.1:0") as net:
        key = net.create_authkey(reusable=True)
        a, b = _device(net, tmp_path, "alpha", key), _device(net, tmp_path, "beta", key)
        try:
            _talk(a, b)
        finally:
            a.close()
            b.close()
    text = root_debug.text()
    assert len(root_debug.records) > 20
    secrets = [key, key.rsplit("-", 1)[-1]]
    for name in ("alpha", "beta"):
        store = FileStore.in_dir(tmp_path / name)
        machine = (store.read_state(MACHINE_KEY) or b"").decode()
        node = json.loads(store.read_state(NODE) or b"{}")["NodePrivate"]
        for k in (machine, node):
            assert k.startswith("privkey:")
            secrets += [k, k.removeprefix("privkey:")]
    for s in secrets:
        assert s not in text, f"a secret reached the logs: {s[:12]}…"


def test_noisy_dependencies_quiet_by_default_but_app_levels_win() -> None:
    code = ("import logging; logging.getLogger('hpack').setLevel(logging.DEBUG); import pytsnet; "
            "logging.getLogger('h2').setLevel(logging.INFO); import pytsnet.device; "
            "print([logging.getLogger(n).level for n in ('pykka', 'hpack', 'h2')])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[30, 10, 20]", out


def test_auth_key_echoed_by_control_never_reaches_state_or_logs(tmp_path: Path, root_debug: Collect,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """A control server that quotes the key back in its refusal (ours does not; others might)."""
    from pytsnet.localnet import control_server
    from pytsnet.localnet.authkeys import AuthKeyRejected

    def echo(store: object, key: str) -> object:
        raise AuthKeyRejected(f"unknown key {key}")

    monkeypatch.setattr(control_server, "consume_authkey", echo)
    secret = "tskey-auth-" + "5e" * 24
    with LocalTailnet(tmp_path / "control", listen="127.0.0.1:0") as net:
        dev = _device(net, tmp_path, "alpha", secret)
        try:
            with pytest.raises(AuthRejected) as e:
                dev.wait_until_running_blocking(10)
            assert "unknown key" in str(e.value) and secret not in str(e.value)
            assert secret not in dev.state.error
        finally:
            dev.close()
    assert any("unknown key" in r.getMessage() for r in root_debug.records)
    assert secret not in root_debug.text()
