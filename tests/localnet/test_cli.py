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


# -- issue 11 part 5: options anywhere, --version, closed pipes, refusing a wrong state dir ----------
def run(*args: str, check: bool = False) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pytsnet", *args], check=check, capture_output=True,
                          text=True, timeout=30)


def test_cli_state_before_or_after_the_subcommand(tmp_path):
    from pytsnet.localnet.store import Store

    Store(tmp_path).close()  # an (empty) local tailnet
    before = run("localnet", "--state", str(tmp_path), "authkey", "create", "--reusable", check=True)
    after = run("localnet", "authkey", "create", "--state", str(tmp_path), check=True)
    middle = run("localnet", "authkey", "--state", str(tmp_path), "list", check=True)
    keys = [json.loads(line) for line in middle.stdout.splitlines()]
    assert [k["reusable"] for k in keys] == [True, False]
    assert before.stdout.strip() != after.stdout.strip()
    for where in (["nodes", "list", "--state", str(tmp_path)], ["nodes", "--state", str(tmp_path), "list"]):
        assert run("localnet", *where).returncode == 0
    missing = run("localnet", "nodes", "list")
    assert missing.returncode != 0 and "--state" in missing.stderr


def test_cli_version():
    from pytsnet import __version__

    out = run("--version", check=True)
    assert out.stdout.strip() == f"pytsnet {__version__}"


def test_admin_commands_refuse_a_dir_without_a_database(tmp_path):
    typo = tmp_path / "stat"
    for args in (["nodes", "list"], ["authkey", "create"], ["authkey", "list"], ["nodes", "approve", "1"],
                 ["nodes", "delete", "1"]):
        out = run("localnet", "--state", str(typo), *args)
        assert out.returncode == 2, (args, out)
        assert out.stdout == "" and len(out.stderr.strip().splitlines()) == 1, out.stderr
        assert "no local tailnet in" in out.stderr and "Traceback" not in out.stderr
    assert not typo.exists()  # nothing was created


def test_authkey_list_shows_ids_prefixes_flags_expiry_never_secrets(tmp_path):
    with LocalTailnet(tmp_path) as net:
        keys = [net.create_authkey(reusable=True, tags=["tag:ci"]), net.create_authkey(ephemeral=True,
                                                                                         expiry=3600),
                net.create_authkey(expiry=-1)]
        rows = [json.loads(line) for line in cli(tmp_path, "authkey", "list").splitlines()]
    assert [r["id"] for r in rows] == [1, 2, 3]
    for key, r in zip(keys, rows, strict=True):
        secret = key.rsplit("-", 1)[1]
        assert r["prefix"] == f"tskey-auth-{secret[:8]}…"
        listing = json.dumps(r)
        assert secret not in listing and secret[8:16] not in listing
    assert rows[0]["reusable"] and rows[0]["tags"] == ["tag:ci"] and rows[0]["expires"] is None
    assert rows[1]["ephemeral"] and rows[1]["expires"] and not rows[1]["expired"]
    assert rows[2]["expired"] is True


def test_list_into_a_closed_pipe_exits_quietly(tmp_path):
    from pytsnet.localnet.store import Store

    st = Store(tmp_path)
    u = st.ensure_user()
    for i in range(3000):  # far more than a pipe buffer holds
        st.create_authkey(user_id=u.id)
        st.add_node(machine_key=f"mkey:{i:064x}", node_key=f"nodekey:{i:064x}", user_id=u.id,
                    hostname=f"n{i}", authorized=True, ephemeral=False)
    st.close()
    for what in ("nodes", "authkey"):
        cmd = (f"{sys.executable} -m pytsnet localnet --state {tmp_path} {what} list 2>{tmp_path}/err"
               f" | head -n 1; echo \"rc=${{PIPESTATUS[0]}}\"")
        out = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, timeout=60, check=True)
        first, rc = out.stdout.splitlines()
        assert json.loads(first)["id"] == 1
        assert rc == "rc=141"
        assert (tmp_path / "err").read_text() == ""


def test_up_with_a_schemeless_control_url_fails_in_one_line(tmp_path):
    out = run("up", "--control-url", "127.0.0.1:8080", "--authkey", "tskey-x", "--dir", str(tmp_path / "n"))
    assert out.returncode == 2, out
    assert out.stderr.strip().splitlines() == [
        "pytsnet: error: control URL '127.0.0.1:8080' has no scheme: use http://127.0.0.1:8080 or "
        "https://127.0.0.1:8080 (Config.control_url or TS_CONTROL_URL)"]
