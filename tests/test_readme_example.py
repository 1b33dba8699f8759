"""README's "Use" example runs as written: its python block, executed in a fresh interpreter against a
LocalTailnet on loopback, with only ``TS_AUTHKEY`` and ``TS_CONTROL_URL`` set (as a reader would)."""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from pytsnet.localnet.server import LocalTailnet
from pytsnet.testing.netns import isolated_netns, netns_available

README = Path(__file__).resolve().parent.parent / "README.md"


def readme_example() -> str:
    use = README.read_text().split("## Use", 1)[1]
    m = re.search(r"```python\n(.*?)```", use, re.S)
    assert m is not None, "README's Use section has no python block"
    return m.group(1)


def test_readme_example_uses_the_one_import_and_async_with() -> None:
    code = readme_example()
    assert "from pytsnet import" in code and "async with" in code
    assert "pytsnet.device" not in code and "pytsnet.config" not in code
    assert "tskey-" not in code and "http" not in code  # credentials and URL come from the environment


@contextlib.contextmanager
def _where_to_run(tmp_path: Path) -> Iterator[tuple[LocalTailnet, list[str]]]:
    """A LocalTailnet and the command prefix that runs the example beside it.

    The example sets no bind host, so its nodes listen on 0.0.0.0 and advertise every local
    address. As root, both run in a namespace of their own that holds only loopback, so nothing
    can be addressed but loopback; otherwise on the host, where those addresses are still this
    machine's own (the control URL is loopback)."""
    if netns_available() is not None:
        with LocalTailnet(tmp_path / "control", listen="127.0.0.1:0") as net:
            yield net, []
        return
    with isolated_netns("rd") as ns:
        net = LocalTailnet(tmp_path / "control", listen="127.0.0.1:0")
        with ns.entered():  # the server thread and its sockets live in the namespace
            net.start()
        try:
            yield net, ["ip", "netns", "exec", ns.name]
        finally:
            net.close()


@pytest.mark.parametrize("backend", ["as-written", "trio"])
def test_readme_example_runs_against_a_local_tailnet(tmp_path: Path, backend: str) -> None:
    code = readme_example()
    if backend == "trio":  # the example's own comment: the same program on trio
        code = code.replace("anyio.run(main)", 'anyio.run(main, backend="trio")')
    script = tmp_path / "example.py"
    script.write_text(code)
    with _where_to_run(tmp_path) as (net, prefix):
        env = {k: v for k, v in os.environ.items() if not k.startswith("TS_")}
        env.update(TS_AUTHKEY=net.create_authkey(reusable=True), TS_CONTROL_URL=net.control_url,
                   HOME=str(tmp_path), XDG_CONFIG_HOME=str(tmp_path / "config"))
        done = subprocess.run([*prefix, sys.executable, str(script)], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr
        out = done.stdout
        assert "sees ['hello-server']" in out, out
        assert "server got b'hello over the tailnet' from ('100." in out, out
        assert "server got (b'ping', ('100." in out, out
        # Ephemeral: both nodes logged out when the example's async with closed them.
        assert net.nodes() == []
