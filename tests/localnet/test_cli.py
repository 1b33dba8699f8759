"""The admin CLI edits the state dir of a running server; the server notices (data_version poll)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

from pytsnet.localnet import LocalTailnet
from pytsnet.localnet.testclient import ControlClient


def cli(state, *args: str) -> str:
    return subprocess.run([sys.executable, "-m", "pytsnet", "localnet", "--state", str(state), *args],
                          check=True, capture_output=True, text=True, timeout=30).stdout


def test_cli_authkey_and_approve_against_running_server(tmp_path):
    with LocalTailnet(tmp_path) as net:
        key = cli(tmp_path, "authkey", "create", "--tags", "tag:ci").strip()
        assert key.startswith("tskey-auth-")

        async def main():
            c = ControlClient(net.control_url)
            await c.connect()
            assert (await c.register(key, hostname="keyed"))["MachineAuthorized"] is True
            d = ControlClient(net.control_url)
            await d.connect()
            r = await d.register("", hostname="inter")
            follow = asyncio.ensure_future(d.register("", followup=r["AuthURL"]))
            listing = await asyncio.to_thread(cli, tmp_path, "nodes", "list")
            rows = [json.loads(line) for line in listing.splitlines() if line]
            pending = [x for x in rows if x["state"] == "pending"]
            assert [x["hostname"] for x in pending] == ["inter"]
            await asyncio.to_thread(cli, tmp_path, "nodes", "approve", str(pending[0]["id"]))
            assert (await asyncio.wait_for(follow, 10))["MachineAuthorized"] is True

        asyncio.run(main())
        assert {n.hostname: n.tags for n in net.nodes()} == {"keyed": ["tag:ci"], "inter": []}


def _serve_banner(state, *flags: str) -> list[str]:
    """Start ``localnet`` serving, read its banner lines, stop it (SIGINT)."""
    p = subprocess.Popen([sys.executable, "-m", "pytsnet", "localnet", "--state", str(state), *flags],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        lines = [p.stdout.readline().strip() for _ in range(2)]  # type: ignore[union-attr]
    finally:
        p.send_signal(2)
        p.wait(timeout=15)
    return lines


def test_cli_serve_flags_no_relay_and_derp_tls(tmp_path):
    off = _serve_banner(tmp_path / "a", "--no-relay")
    assert off[0].startswith("localnet control server: http://127.0.0.1:")
    assert off[1] == "localnet DERP relay: off"
    tls = _serve_banner(tmp_path / "b", "--derp-tls")
    assert tls[1].startswith("localnet DERP relay: https://127.0.0.1:") and "STUN udp/" in tls[1], tls
    assert (tmp_path / "b" / "derp-cert.pem").exists()
    plain = _serve_banner(tmp_path / "c")
    assert plain[1].startswith("localnet DERP relay: http://127.0.0.1:"), plain
