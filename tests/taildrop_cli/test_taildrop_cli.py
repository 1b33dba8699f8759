"""``pytsnet file cp|get`` as processes against a LocalAPI socket whose Taildrop backend is in
memory: Go's argument forms and errors, stdin, the conflict modes, ``--wait``, ``/dev/null``, the
plain progress lines off a terminal and the rich bar on one (a tmux pane read with capture-pane)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from pytsnet.testing.taildrop_localapi import FakeTaildrop, fake_target, served

pytestmark = pytest.mark.timeout(120)

ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}


@pytest.fixture
def fake() -> FakeTaildrop:
    return FakeTaildrop(targets=[fake_target(2, "bob"), fake_target(3, "carol", online=False)])


@pytest.fixture
def sock(fake: FakeTaildrop) -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="tdcli", dir="/tmp"))
    try:
        with served(fake, d / "localapi.sock"):
            yield d / "localapi.sock"
    finally:
        shutil.rmtree(d, ignore_errors=True)


def file_cmd(sock: Path, *args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[str]:
    r = subprocess.run([sys.executable, "-m", "pytsnet", "file", args[0], "--socket", str(sock), *args[1:]],
                       input=stdin.decode() if stdin is not None else None, capture_output=True, text=True,
                       timeout=60, env=ENV)
    return r


def test_cp_sends_files_with_plain_progress_off_a_terminal(fake: FakeTaildrop, sock: Path,
                                                          tmp_path: Path) -> None:
    data = os.urandom(2 * 1024 * 1024 + 7)
    (tmp_path / "one.bin").write_bytes(data)
    (tmp_path / "two.txt").write_bytes(b"second")
    r = file_cmd(sock, "cp", str(tmp_path / "one.bin"), str(tmp_path / "two.txt"), "100.64.0.2:")
    assert r.returncode == 0, r.stderr
    assert [(p.target, p.name, p.size) for p in fake.pushed] == [("stable-bob", "one.bin", len(data)),
                                                               ("stable-bob", "two.txt", 6)]
    assert fake.pushed[0].data == data and fake.pushed[1].data == b"second"
    lines = r.stderr.splitlines()
    assert f"one.bin: {len(data)}/{len(data)} bytes (100.00%)" in lines
    assert lines[-1] == "two.txt: 6/6 bytes (100.00%)"
    assert "\x1b" not in r.stderr  # no terminal codes in a pipe


def test_cp_target_forms_as_go(fake: FakeTaildrop, sock: Path, tmp_path: Path) -> None:
    f = tmp_path / "f.txt"
    f.write_bytes(b"x")
    for target in ["bob:", "bob.tail-fake.ts.net:", "[fd7a:115c:a1e0::2]:"]:
        r = file_cmd(sock, "cp", str(f), target)
        assert r.returncode == 0, (target, r.stderr)
    assert [p.target for p in fake.pushed] == ["stable-bob"] * 3
    r = file_cmd(sock, "cp", "--name", "renamed.txt", str(f), "carol:")
    assert r.returncode == 0 and "# warning: carol is offline" in r.stderr
    assert (fake.pushed[-1].target, fake.pushed[-1].name) == ("stable-carol", "renamed.txt")
    fake.pushed.clear()
    bad = {
        ("cp", str(f), "bob"): "final argument to 'pytsnet file cp' must end in colon",
        ("cp", str(f), "fd7a:115c:a1e0::2:"): "an IPv6 literal must be written as [fd7a:115c:a1e0::2]",
        ("cp", str(f), "[100.64.0.2]:"): "unexpected brackets around target",
        ("cp", str(f)): "usage: pytsnet file cp <files...> <target>:",
        ("cp", "--name", "n", str(f), str(f), "bob:"): "can't use --name= with multiple files",
        ("cp", "-", str(f), "bob:"): "can't use '-' as STDIN file when providing filename arguments",
        ("cp", str(tmp_path), "bob:"): "directories not supported",
        ("cp", str(tmp_path / "missing"), "bob:"): "No such file or directory",
        ("cp", "--targets", "bob:"): "invalid arguments with --targets",
    }
    for args, want in bad.items():
        r = file_cmd(sock, *args)
        assert r.returncode == 1 and want in r.stderr, (args, r.stderr)
    assert fake.pushed == []


def test_cp_targets_and_stdin(fake: FakeTaildrop, sock: Path) -> None:
    r = file_cmd(sock, "cp", "--targets")
    assert r.returncode == 0 and r.stdout.splitlines() == ["100.64.0.2\tbob", "100.64.0.3\tcarol\toffline"]
    assert file_cmd(sock, "cp", "-", "bob:", stdin=b"some text\n").returncode == 0
    assert file_cmd(sock, "cp", "--name", "named.log", "-", "bob:", stdin=b"abc").returncode == 0
    assert [(p.name, p.data, p.size) for p in fake.pushed] == [("stdin.txt", b"some text\n", None),
                                                             ("named.log", b"abc", None)]


def test_get_moves_files_with_conflict_modes(fake: FakeTaildrop, sock: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    fake.add("a.txt", b"new a")
    fake.add("b.bin", b"\x00\x01")
    r = file_cmd(sock, "get", "--verbose", str(out))
    assert r.returncode == 0, r.stderr
    assert (out / "a.txt").read_bytes() == b"new a" and (out / "b.bin").read_bytes() == b"\x00\x01"
    assert "moved 2/2 files" in r.stdout and fake.inbox == {}

    fake.add("a.txt", b"second a")
    r = file_cmd(sock, "get", str(out))  # skip (the default): refused, left in the inbox
    assert r.returncode == 1 and "refusing to overwrite file" in r.stderr and "moved 0/1 files" in r.stderr
    assert (out / "a.txt").read_bytes() == b"new a" and "a.txt" in fake.inbox
    assert file_cmd(sock, "get", "--conflict=rename", str(out)).returncode == 0
    assert (out / "a (1).txt").read_bytes() == b"second a"
    fake.add("a.txt", b"third a")
    assert file_cmd(sock, "get", "--conflict=rename", str(out)).returncode == 0
    assert (out / "a (2).txt").read_bytes() == b"third a"
    fake.add("a.txt", b"fourth a")
    (out / "victim").write_bytes(b"keep")
    (out / "a.txt").unlink()
    (out / "a.txt").symlink_to(out / "victim")  # overwrite replaces a planted symlink, never follows it
    assert file_cmd(sock, "get", "--conflict=OVERWRITE", str(out)).returncode == 0
    assert not (out / "a.txt").is_symlink() and (out / "a.txt").read_bytes() == b"fourth a"
    assert (out / "victim").read_bytes() == b"keep" and fake.inbox == {}

    r = file_cmd(sock, "get", "--conflict=merge", str(out))
    assert r.returncode == 2 and "is not one of (skip|overwrite|rename)" in r.stderr
    r = file_cmd(sock, "get", str(out / "victim"))
    assert r.returncode == 1 and "is not a directory" in r.stderr


def test_get_wait_and_dev_null(fake: FakeTaildrop, sock: Path, tmp_path: Path) -> None:
    threading.Timer(1.0, fake.add, ("late.txt", b"late")).start()
    t0 = time.monotonic()
    r = file_cmd(sock, "get", "--wait", str(tmp_path))
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "late.txt").read_bytes() == b"late" and time.monotonic() - t0 >= 0.9
    fake.add("x", b"1")
    fake.add("y", b"2")
    assert file_cmd(sock, "get", "--wait", "/dev/null").returncode == 1
    assert len(fake.inbox) == 2
    assert file_cmd(sock, "get", "/dev/null").returncode == 0 and fake.inbox == {}


def _tmux(server: str, *args: str) -> str:
    return subprocess.run(["tmux", "-L", server, *args], capture_output=True, text=True, timeout=10,
                          check=True).stdout


PCT = re.compile(r"(\d{1,3})%")


@pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux (.ci/run installs it)")
def test_cp_progress_bar_in_a_tmux_pane(fake: FakeTaildrop, sock: Path, tmp_path: Path) -> None:
    """On a terminal the bar moves: at least two distinct percentages below 100 are seen, then 100."""
    data = os.urandom(4 * 1024 * 1024)
    (tmp_path / "movie.bin").write_bytes(data)
    fake.read_delay = 0.05  # 64 KiB per 50 ms: about 3 s for the file
    server = f"pytsnet-td-{uuid.uuid4().hex[:8]}"
    done = tmp_path / "done"
    cmd = (f"{sys.executable} -m pytsnet file cp --socket {sock} {tmp_path / 'movie.bin'} bob:; "
           f"echo rc=$? > {done}; sleep 60")
    _tmux(server, "new-session", "-d", "-x", "200", "-y", "50", "-s", "cp", cmd)
    try:
        seen: list[int] = []
        screens = []
        deadline = time.monotonic() + 60
        while not done.exists():
            assert time.monotonic() < deadline, screens[-3:]
            screen = _tmux(server, "capture-pane", "-p", "-t", "cp")
            screens.append(screen)
            line = next((ln for ln in screen.splitlines() if "movie.bin" in ln), "")
            m = PCT.search(line)
            if m and (not seen or seen[-1] != int(m.group(1))):
                seen.append(int(m.group(1)))
            time.sleep(0.1)
        final = _tmux(server, "capture-pane", "-p", "-t", "cp")
    finally:
        subprocess.run(["tmux", "-L", server, "kill-server"], capture_output=True, timeout=10)
    assert done.read_text().strip() == "rc=0", final
    bar = next(ln for ln in final.splitlines() if "movie.bin" in ln)
    assert "100%" in bar and "4.0/4.0 MiB" in bar and "━" in bar, final
    moving = sorted({p for p in seen if 0 < p < 100})
    assert len(moving) >= 2, (seen, screens[-3:])
    assert seen == sorted(seen)  # it only goes forward
    assert fake.pushed[0].data == data
