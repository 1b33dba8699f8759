"""docs/frameworks.md "Everything else": its Python snippets and its shell command lines, run as written
against a tailnet whose peer ``web`` serves HTTP on 8080 (and a git repository at /repo.git)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from loopback_rig import Rig, clean_env, loopback_rig

from pytsnet.testing.snippets import commands, run_snippet, snippets

PAGE = Path(__file__).resolve().parents[2] / "docs" / "frameworks.md"
@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    with loopback_rig(tmp_path_factory.mktemp("snippets")) as r:
        yield r


@pytest.fixture(autouse=True)
def _no_proxy_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The snippets name their proxy; a proxy from the environment must not stand in for it."""
    for k in ("http_proxy", "https_proxy", "all_proxy", "no_proxy"):
        monkeypatch.delenv(k, raising=False)
        monkeypatch.delenv(k.upper(), raising=False)


@pytest.mark.parametrize("name", ["loopback", "httpx-proxy", "requests-proxy"])
def test_python_snippet(rig: Rig, name: str) -> None:
    ns: dict[str, object] = {"dev": rig.alpha}
    assert run_snippet(snippets(PAGE)[name], ns, name) is None
    if name == "loopback":
        got = (ns["addr"], ns["proxy_cred"], ns["local_api_cred"])
        assert got == (rig.addr, rig.cred, rig.local_api_cred)
    else:
        assert ns["answer"] == "hello alpha\n"


def test_every_command_line(rig: Rig, tmp_path: Path) -> None:
    cmds = commands(PAGE)
    assert set(cmds) == {"curl-socks5", "curl-http-proxy", "git"}
    env = {**clean_env(tmp_path), "TS_PROXY_ADDR": rig.addr, "TS_PROXY_CRED": rig.cred}
    out = {}
    for name, script in cmds.items():
        r = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=tmp_path, env=env,
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, (name, r.stderr)
        out[name] = r.stdout
    assert out["curl-socks5"] == "hello alpha\n"
    assert out["curl-http-proxy"] == "hello alpha\n" * 2
    assert (tmp_path / "repo" / "README").read_text() == "served over the tailnet\n"
