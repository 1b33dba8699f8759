"""The wheel holds the four layer folders under ``pytsnet`` (through the ``pytsnet/<layer>`` symlinks),
ships ``py.typed``, and installs no top-level layer module."""

from __future__ import annotations

import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest

from pytsnet.testing.source_tree import copy_source_tree

REPO = Path(__file__).resolve().parents[1]
LAYERS = ("actors", "messages", "netstack", "wire")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    src = tmp_path_factory.mktemp("src")
    out = tmp_path_factory.mktemp("dist")
    copy_source_tree(REPO, src)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "-q", "-w", str(out), str(src)], check=True, capture_output=True)
    (whl,) = out.glob("pytsnet-*.whl")
    return whl


def test_wheel_holds_only_the_pytsnet_namespace(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/", 1)[0] for n in names}
    assert tops <= {"pytsnet", next(t for t in tops if t.endswith(".dist-info"))}, tops
    assert "pytsnet/py.typed" in names
    for layer in LAYERS:
        assert f"pytsnet/{layer}/__init__.py" in names
        assert not any(n.startswith(f"{layer}/") for n in names)


def test_wheel_holds_every_module_of_the_tree(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    expected: set[str] = set()
    for top in ("pytsnet", *LAYERS):
        for sub in (REPO / top).rglob("*.py"):
            if "__pycache__" not in sub.parts:
                rel = sub.relative_to(REPO).as_posix()
                expected.add(rel if top == "pytsnet" else f"pytsnet/{rel}")
    assert not expected - names, sorted(expected - names)


def test_wheel_imports_layers_in_a_fresh_venv(wheel: Path, tmp_path: Path) -> None:
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    py = env_dir / "bin" / "python"
    subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)],
                   check=True, capture_output=True)
    # Dependencies come from the dev venv's site-packages; pytsnet itself only from the wheel.
    deps = sysconfig.get_paths()["purelib"]
    code = (
        "import importlib, importlib.util, sys\n"
        f"for layer in {LAYERS!r}:\n"
        "    m = importlib.import_module('pytsnet.' + layer)\n"
        "    assert 'site-packages' in m.__file__, m.__file__\n"
        "    assert importlib.util.find_spec(layer) is None, layer\n"
        "print('ok')\n"
    )
    out = subprocess.run([str(py), "-c", code], cwd=tmp_path, capture_output=True, text=True,
                         env={"PYTHONPATH": deps, "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
