"""The CLI against a running ``python -m pytsnet up``: its LocalAPI socket in the state dir, the
commands' output in the tailscale CLI's formats, ``--json`` strict, ``logout`` and ``down``."""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pytsnet import __version__
from pytsnet.localapi.types import Status, WhoIsResponse
from pytsnet.localnet.server import LocalTailnet
from pytsnet.testing.tailnet import new_device, wait_for_peers

pytestmark = pytest.mark.timeout(180)

ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}


def cli(*args: str, script: bool = False) -> subprocess.CompletedProcess[str]:
    cmd = [str(Path(sys.executable).parent / "pytsnet")] if script else [sys.executable, "-m", "pytsnet"]
    return subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=60, env=ENV)


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, LocalTailnet, object]]:
    tmp = tmp_path_factory.mktemp("cli")
    state = Path(tempfile.mkdtemp(prefix="up", dir="/tmp"))
    with LocalTailnet(tmp / "control", listen="127.0.0.1:0") as net:
        other = new_device(net, tmp, "other").start()
        proc = subprocess.Popen(
            [sys.executable, "-m", "pytsnet", "up", "--control-url", net.control_url, "--authkey",
             net.create_authkey(), "--dir", str(state), "--hostname", "cli"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=ENV)
        try:
            other.wait_until_running_blocking(30)
            wait_for_peers(other, ["cli"])
            deadline = time.monotonic() + 30
            while True:  # the socket serves and the node sees its peer
                r = cli("status", "--dir", str(state))
                if r.returncode == 0 and " other " in r.stdout:
                    break
                assert time.monotonic() < deadline, (r.stdout, r.stderr)
                time.sleep(0.2)
            yield state, net, proc
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait(10)
            other.close()
            shutil.rmtree(state, ignore_errors=True)


def _json_status(state: Path) -> Status:
    r = cli("status", "--json", "--dir", str(state))
    assert r.returncode == 0, r.stderr
    return Status.model_validate_json(r.stdout)


def _login(state: Path, uid: int) -> str:
    st = _json_status(state)
    assert st.User is not None
    return st.User[str(uid)].LoginName


def test_socket_in_state_dir_mode_0600(rig: tuple[Path, LocalTailnet, object]) -> None:
    st = os.stat(rig[0] / "localapi.sock")
    assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600


def test_status_table_as_tailscale(rig: tuple[Path, LocalTailnet, object]) -> None:
    state = rig[0]
    st = _json_status(state)
    assert st.Self is not None and st.TailscaleIPs
    r = cli("status", "--dir", str(state))
    lines = r.stdout.splitlines()
    assert len(lines) == 2, r.stdout
    owner = st.User[str(st.Self.UserID)].LoginName if st.User else ""  # type: ignore[index]
    owner = owner[:owner.index("@") + 1] if "@" in owner else owner
    # Go: IP  name  owner  OS  status, tabwriter padding 2; self first, then the peer
    want = rf"{re.escape(st.TailscaleIPs[0])}\s+cli\s+{re.escape(owner)}\s+-\s*"
    assert re.fullmatch(want, lines[0]), lines
    peer = next(iter(st.Peer.values()))  # type: ignore[union-attr]
    assert lines[1].startswith(peer.TailscaleIPs[0]) and " other " in lines[1]  # type: ignore[index]
    assert lines[0].index("cli") == lines[1].index("other")  # columns aligned


def test_status_json_decodes_strictly(rig: tuple[Path, LocalTailnet, object]) -> None:
    st = _json_status(rig[0])
    assert st.BackendState == "Running" and st.Peer is not None
    assert {p.HostName for p in st.Peer.values()} == {"other"}


def test_ip_and_whois(rig: tuple[Path, LocalTailnet, object]) -> None:
    state = rig[0]
    st = _json_status(state)
    r = cli("ip", "-4", "--dir", str(state))
    assert r.stdout.split() == [st.TailscaleIPs[0]]  # type: ignore[index]
    peer = next(iter(st.Peer.values()))  # type: ignore[union-attr]
    assert cli("ip", "other", "--dir", str(state)).stdout.split() == peer.TailscaleIPs
    r = cli("whois", peer.TailscaleIPs[0], "--dir", str(state))  # type: ignore[index]
    assert r.returncode == 0, r.stderr
    name = peer.DNSName.rstrip(".")
    # Go's tabwriter(10, 5, 5): "  Addresses:" (12) + 5 sets the machine block, "  Name:" (7) + 5 the user's
    assert r.stdout.splitlines() == [
        "Machine:", f"  Name:{' ' * 10}{name}", f"  ID:{' ' * 12}{peer.ID}",
        f"  Addresses:{' ' * 5}[{peer.TailscaleIPs[0]}/32]", "User:",  # type: ignore[index]
        f"  Name:{' ' * 5}{_login(rig[0], peer.UserID)}", f"  ID:{' ' * 7}{peer.UserID}"], r.stdout
    r = cli("whois", "--json", peer.TailscaleIPs[0], "--dir", str(state))  # type: ignore[index]
    assert WhoIsResponse.model_validate_json(r.stdout).Node.Key == peer.PublicKey
    r = cli("whois", "100.127.255.254", "--dir", str(state))
    assert r.returncode == 2 and "no match for IP:port" in r.stderr


def test_version_netcheck_and_console_script(rig: tuple[Path, LocalTailnet, object]) -> None:
    state = rig[0]
    assert cli("version").stdout.strip() == __version__
    assert cli("version", "--daemon", "--dir", str(state)).stdout.strip() == __version__
    r = cli("netcheck", "--dir", str(state))
    assert r.returncode == 0 and "Report:" in r.stdout and "Nearest DERP" in r.stdout
    a, b = cli("ip", "--dir", str(state)), cli("ip", "--dir", str(state), script=True)
    assert a.returncode == b.returncode == 0 and a.stdout == b.stdout


def test_ping_until_direct(rig: tuple[Path, LocalTailnet, object]) -> None:
    state = rig[0]
    st = _json_status(state)
    peer = next(iter(st.Peer.values()))  # type: ignore[union-attr]
    r = cli("ping", "-c", "5", "other", "--dir", str(state))
    assert r.returncode == 0, (r.stdout, r.stderr)
    lines = r.stdout.splitlines()
    ip = re.escape(peer.TailscaleIPs[0])  # type: ignore[index]
    for ln in lines[:-1]:  # Go's format; DERP pongs first while no direct path answers
        assert re.fullmatch(rf"pong from other \({ip}\) via DERP\(\w*\) in \d+(ms|s)", ln), lines
    assert re.fullmatch(rf"pong from other \({ip}\) via [\d.]+:\d+ in \d+(ms|\.\d+s|s)", lines[-1]), lines
    me = cli("ping", "cli", "--dir", str(state))
    assert me.stdout.strip() == f"{st.TailscaleIPs[0]} is local Tailscale IP"  # type: ignore[index]


@pytest.mark.parametrize("kind", ["icmp", "tsmp"])
def test_ping_icmp_and_tsmp_one_pong(rig: tuple[Path, LocalTailnet, object], kind: str) -> None:
    """Go's ``--icmp``/``--tsmp``: one ping through WireGuard to the peer's netstack, one line, exit 0."""
    state = rig[0]
    st = _json_status(state)
    ip = re.escape(next(iter(st.Peer.values())).TailscaleIPs[0])  # type: ignore[union-attr,index]
    r = cli("ping", f"--{kind}", "other", "--dir", str(state))
    assert r.returncode == 0, (r.stdout, r.stderr)
    port = ", [1-9][0-9]*" if kind == "tsmp" else ""  # a TSMP pong names the peer's PeerAPI port
    want = rf"pong from other \({ip}{port}\) via {kind.upper()} in \d+(ms|s)\n"
    assert re.fullmatch(want, r.stdout), r.stdout


def test_no_socket_is_a_one_line_error(tmp_path: Path) -> None:
    r = cli("status", "--socket", str(tmp_path / "none.sock"))
    assert r.returncode == 2 and r.stderr.startswith("pytsnet: error: LocalAPI at ")


def test_logout_then_down(rig: tuple[Path, LocalTailnet, object]) -> None:
    state, _, proc = rig
    assert cli("logout", "--dir", str(state)).returncode == 0
    r = cli("status", "--dir", str(state))
    assert r.returncode == 1 and r.stdout.startswith("Logged out."), (r.stdout, r.stderr)
    assert cli("down", "--dir", str(state)).returncode == 0
    assert proc.wait(20) == 0  # type: ignore[attr-defined]
    assert not (state / "localapi.sock").exists()
