"""The wheel maps the four layer folders under ``pytsnet`` and installs no top-level layer module."""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LAYERS = ("actors", "messages", "netstack", "wire")
SKIP_DIRS = {".venv", ".cache", ".git", "build", "dist", ".pytest_cache", ".ruff_cache", ".hypothesis"}


def _copy_source(dst: Path) -> None:
    """Copy the tree as a clean clone would have it (no venv, caches or build output)."""
    tracked = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"],
                             cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    for rel in tracked:
        if rel.split("/", 1)[0] in SKIP_DIRS or not (REPO / rel).is_file():
            continue
        target = dst / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / rel, target)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    src = tmp_path_factory.mktemp("src")
    out = tmp_path_factory.mktemp("dist")
    _copy_source(src)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "-q", "-w", str(out), str(src)], check=True, capture_output=True)
    (whl,) = out.glob("pytsnet-*.whl")
    return whl


def test_wheel_holds_only_the_pytsnet_namespace(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/", 1)[0] for n in names}
    assert tops <= {"pytsnet", next(t for t in tops if t.endswith(".dist-info"))}, tops
    for layer in LAYERS:
        assert f"pytsnet/{layer}/__init__.py" in names
        assert not any(n.startswith(f"{layer}/") for n in names)


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
