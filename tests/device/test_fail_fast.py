"""Issue 11 part 3: a device that cannot work says why at once, not when the caller's timeout ends.

Each case answers in under a second although the caller allows ten: a malformed control URL is a
``ConfigError`` at ``start()``; the first failed attempt to reach control is a ``NetworkUnreachable``
state in ``watch_state()`` at once (and ``wait_until_running(fail_fast=True)`` raises it) while
retries go on; a login URL is in the state and logged the moment control sends it; the default
control URL is named in the log and in the error.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from device_helpers import free_port

from pytsnet.config import DEFAULT_CONTROL_URL, Config
from pytsnet.device import ActorDevice, DeviceState
from pytsnet.errors import ConfigError, NeedsLogin, NetworkUnreachable
from pytsnet.localnet.server import LocalTailnet
from pytsnet.testing.netns import Netns

Make = Callable[..., ActorDevice]
FAST = 1.0
"""Every fail-fast answer must come within this, although the caller's timeout is 10 s."""


@pytest.mark.parametrize(("url", "says"), [
    ("localhost:8080", "has no scheme: use http://localhost:8080"),
    ("127.0.0.1:9", "has no scheme"),
    ("ftp://example.test", "scheme must be http or https"),
    ("http://", "has no host"),
    ("http://127.0.0.1:99999", "bad port"),
])
def test_malformed_control_url_is_config_error_at_start(tmp_path: Path, url: str, says: str) -> None:
    dev = ActorDevice(Config(dir=tmp_path, hostname="x", control_url=url))
    t0 = time.monotonic()
    with pytest.raises(ConfigError) as e:
        dev.start()
    assert time.monotonic() - t0 < FAST
    assert isinstance(e.value, ValueError) and says in str(e.value) and "TS_CONTROL_URL" in str(e.value)
    assert dev.system is None  # nothing was started, nothing to close
    dev.close()


def test_control_down_is_network_unreachable_at_once(make_device: Make, caplog: pytest.LogCaptureFixture
                                                     ) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    caplog.set_level(logging.WARNING, logger="pytsnet")
    dev = make_device("down", url, "tskey-whatever")
    t0 = time.monotonic()
    with pytest.raises(NetworkUnreachable) as e:
        dev.wait_until_running_blocking(10, fail_fast=True)
    assert time.monotonic() - t0 < FAST
    assert url in str(e.value) and not e.value.permanent
    assert any(url in r.getMessage() and r.name == "pytsnet.control" for r in caplog.records)


def test_watch_state_shows_first_failure_at_once_and_retries_go_on(tmp_path: Path, make_device: Make) -> None:
    port = free_port()
    late = LocalTailnet(tmp_path / "late", listen=f"127.0.0.1:{port}")
    dev = make_device("patient", f"http://127.0.0.1:{port}", late.create_authkey())

    async def first_error() -> tuple[DeviceState, float]:
        t0 = time.monotonic()
        async for st in dev.watch_state():
            if st.error_kind == "network_unreachable":
                return st, time.monotonic() - t0
        raise AssertionError("watch ended")

    async def async_fail_fast() -> float:
        t0 = time.monotonic()
        with pytest.raises(NetworkUnreachable):
            await dev.wait_until_running(10, fail_fast=True)
        return time.monotonic() - t0

    try:
        st, took = asyncio.run(first_error())
        assert took < FAST and st.state == "Starting" and f"127.0.0.1:{port}" in st.error
        assert asyncio.run(async_fail_fast()) < FAST
        late.start()
        assert dev.wait_until_running_blocking(15).state == "Running"  # the retries went on
    finally:
        dev.close()
        late.close()


def test_login_url_is_in_state_and_logged_at_once(net: LocalTailnet, make_device: Make,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="pytsnet")
    dev = make_device("human", net.control_url)
    t0 = time.monotonic()
    with pytest.raises(NeedsLogin) as e:
        dev.wait_until_running_blocking(10, fail_fast=True)
    assert time.monotonic() - t0 < FAST
    assert e.value.url.startswith(net.control_url + "/auth/") and dev.state.auth_url == e.value.url
    logged = [r for r in caplog.records if e.value.url in r.getMessage() and r.levelno == logging.INFO]
    assert logged and logged[0].name == "pytsnet.control"


def test_default_control_url_is_named_in_log_and_error(netns: Netns, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    """No control URL anywhere: Tailscale's is used and named. Run in a namespace with no route out,
    so the attempt to reach it fails at once and nothing leaves this machine."""
    monkeypatch.delenv("TS_CONTROL_URL", raising=False)
    caplog.set_level(logging.INFO, logger="pytsnet")
    devs: list[ActorDevice] = []

    def attempt() -> tuple[float, str]:
        dev = ActorDevice(Config(dir=tmp_path / "d", hostname="nourl", auth_key="tskey-x"))
        devs.append(dev)
        dev.start()
        t0 = time.monotonic()
        try:
            dev.wait_until_running_blocking(10, fail_fast=True)
        except NetworkUnreachable as e:
            return time.monotonic() - t0, str(e)
        raise AssertionError("reached control from an isolated namespace")

    try:
        took, error = netns.call(attempt)
    finally:
        for d in devs:
            d.close()
    assert took < FAST and DEFAULT_CONTROL_URL in error
    named = [r.getMessage() for r in caplog.records
             if r.name == "pytsnet.device" and r.levelno == logging.INFO]
    assert any(DEFAULT_CONTROL_URL in m and "TS_CONTROL_URL" in m for m in named)
