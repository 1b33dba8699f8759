"""``pytsnet derper`` and ``pytsnet localnet --derp-map`` as a user runs them (subprocesses on
loopback): banners, the written DERP map, the probes, relaying, admission at ``/derp/admit``,
refusals of bad flags and bad map files, and a clean stop."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from pytsnet.derper.admit import request_body
from pytsnet.derper.derpmap import DerpMapError, load_derp_map, single_node_map, validate_derp_map
from pytsnet.localnet.testclient import ControlClient
from pytsnet.testing.derpclient import DerpTestClient, insecure_tls
from pytsnet.wire.keys import NodePrivate


def pytsnet(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pytsnet", *args], capture_output=True, text=True,
                          timeout=timeout, check=False)


@contextmanager
def serving(*args: str, lines: int, stop: int = signal.SIGTERM) -> Iterator[list[str]]:
    """Run ``pytsnet ARGS`` until the block ends, yielding its first ``lines`` stdout lines; it must
    then stop cleanly (exit 0) on ``stop``."""
    p = subprocess.Popen([sys.executable, "-m", "pytsnet", *args], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    try:
        assert p.stdout is not None
        banner = [p.stdout.readline().strip() for _ in range(lines)]
        yield banner
    finally:
        p.send_signal(stop)
        try:
            rc = p.wait(timeout=20)
        except subprocess.TimeoutExpired:
            p.kill()
            raise
    assert rc == 0, p.stderr.read() if p.stderr else rc


def test_derper_command_serves_probes_relays_and_writes_its_map(tmp_path: Path) -> None:
    dm_file = tmp_path / "derp.json"
    with serving("derper", "--listen", "127.0.0.1:0", "--stun-port", "0", "--tls", "self-signed",
                 "--write-derp-map", str(dm_file), lines=4) as banner:
        assert banner[0].startswith("derper: DERP https://127.0.0.1:") and banner[0].endswith("/derp"), banner
        assert banner[1].startswith("derper: STUN udp/") and banner[2] == "derper: open to every client"
        assert banner[3] == f"derper: DERP map written to {dm_file}", banner
        port = int(banner[0].rsplit(":", 1)[1].removesuffix("/derp"))
        dm = load_derp_map(dm_file)
        [node] = dm["Regions"]["900"]["Nodes"]
        assert (node["IPv4"], node["DERPPort"], node["InsecureForTests"]) == ("127.0.0.1", port, True)
        assert node["STUNPort"] == int(banner[1].rsplit("/", 1)[1]), (node, banner)

        with httpx.Client(verify=False, trust_env=False, timeout=10) as h:
            base = f"https://127.0.0.1:{port}"
            assert h.get(f"{base}/derp/probe").status_code == 200
            r = h.get(f"{base}/generate_204", headers={"X-Tailscale-Challenge": "abc.123"})
            assert r.status_code == 204 and r.headers["X-Tailscale-Response"] == "response abc.123"
            assert h.get(f"{base}/derp").status_code == 426  # no Upgrade: DERP
            assert h.get(f"{base}/nothing-here").status_code == 404

        async def relay() -> None:
            a = await DerpTestClient.connect(port, tls=insecure_tls())
            b = await DerpTestClient.connect(port, tls=insecure_tls())
            a.send(b.key, b"via the derper process")
            got = await b.recv_packet()
            assert (got.src, got.packet) == (a.key, b"via the derper process")
            await a.aclose()
            await b.aclose()

        asyncio.run(asyncio.wait_for(relay(), 30))


@pytest.mark.parametrize(("args", "message"), [
    (["--tls"], "--tls needs --cert FILE and --key FILE"),
    (["--cert", "c.pem", "--key", "k.pem"], "--cert/--key are for --tls"),
    (["--verify-client-url", "ftp://192.0.2.1/admit"], "must be an http:// or https:// URL"),
    (["--tls", "--cert", "/nonexistent/c.pem", "--key", "/nonexistent/k.pem"], "No such file"),
    (["--listen", "nonsense"], "HOST:PORT"),
])
def test_derper_refuses_bad_flags(args: list[str], message: str) -> None:
    r = pytsnet("derper", "--no-stun", *args) if "--listen" in args else \
        pytsnet("derper", "--listen", "127.0.0.1:0", "--no-stun", *args)
    assert r.returncode != 0 and message in r.stderr, (r.returncode, r.stderr)
    assert "Traceback" not in r.stderr


def test_localnet_derp_map_flag_hands_out_that_map_and_admits_its_nodes(tmp_path: Path) -> None:
    """``localnet --derp-map FILE``: nodes get the file's map (localnet's own relay off), and
    ``/derp/admit`` answers from the node list: registered → Allow, unknown → not, malformed → 400."""
    dm = single_node_map("192.0.2.10", 8443, 3478, hostname="derp.example.com")
    dm["Regions"]["900"]["Nodes"][0]["CanPort80"] = True  # a field kept as written
    dm_file = tmp_path / "derp.json"
    dm_file.write_text(json.dumps(dm))
    state = tmp_path / "state"
    with serving("localnet", "--state", str(state), "--listen", "127.0.0.1:0", "--derp-map", str(dm_file),
                 lines=3, stop=signal.SIGINT) as banner:
        assert banner[0].startswith("localnet control server: http://127.0.0.1:"), banner
        assert banner[1] == f"localnet DERP map: {dm_file} (regions 900)", banner
        url = banner[0].split(": ", 1)[1]
        assert banner[2] == f"localnet DERP admission: {url}/derp/admit (derper --verify-client-url)"
        key = pytsnet("localnet", "--state", str(state), "authkey", "create").stdout.strip()

        async def node() -> tuple[dict[str, object], NodePrivate]:
            cc = await ControlClient.connected(url)
            try:
                await cc.register(key, hostname="mapped")
                async for msg in cc.map_stream():
                    return msg, cc.node
            finally:
                await cc.close()
            raise AssertionError("no map")

        first, node_key = asyncio.run(asyncio.wait_for(node(), 30))
        assert first["DERPMap"] == dm, first["DERPMap"]

        with httpx.Client(trust_env=False, timeout=10) as h:
            def admit(body: bytes) -> httpx.Response:
                return h.post(f"{url}/derp/admit", content=body)
            r = admit(request_body(node_key.public(), "192.0.2.1"))
            assert r.status_code == 200 and r.json() == {"Allow": True}
            r = admit(request_body(NodePrivate.generate().public(), "192.0.2.1"))
            assert r.status_code == 200 and r.json() == {"Allow": False}
            assert admit(b"{not json").status_code == 400
            assert h.get(f"{url}/derp/admit").status_code == 405


@pytest.mark.parametrize(("content", "extra", "message"), [
    (None, [], "cannot read DERP map"),
    ("{", [], "is not JSON"),
    ('{"Regions": {}}', [], "has no Regions"),
    ('{"Regions": {"1": {"RegionID": 2, "Nodes": [{"HostName": "x"}]}}}', [], "RegionID is 2"),
    (json.dumps(single_node_map("192.0.2.1", 443, 3478)), ["--no-relay"], "replaces the relay"),
])
def test_localnet_refuses_a_bad_derp_map(tmp_path: Path, content: str | None, extra: list[str],
                                         message: str) -> None:
    f = tmp_path / "derp.json"
    if content is not None:
        f.write_text(content)
    r = pytsnet("localnet", "--state", str(tmp_path / "s"), "--listen", "127.0.0.1:0", "--derp-map", str(f),
                *extra)
    assert r.returncode != 0 and message in r.stderr, (r.returncode, r.stderr)
    assert "Traceback" not in r.stderr


def test_validate_derp_map() -> None:
    good = single_node_map("2001:db8::1", 443, -1)
    node = good["Regions"]["900"]["Nodes"][0]
    assert (node["IPv6"], node["IPv4"], node["STUNPort"]) == ("2001:db8::1", "none", -1)
    assert validate_derp_map(good) is good
    with pytest.raises(DerpMapError, match="host name"):  # a wildcard listener is no address to dial
        single_node_map("0.0.0.0", 443, 3478)
    wild = single_node_map("0.0.0.0", 443, 3478, hostname="derp.example.com")["Regions"]["900"]["Nodes"][0]
    assert wild["HostName"] == "derp.example.com" and "IPv4" not in wild and "IPv6" not in wild
    for bad in ([], {"Regions": None}, {"Regions": {"1": {"RegionID": 1, "Nodes": []}}},
                {"Regions": {"1": {"RegionID": 1, "Nodes": [{"Name": "a"}]}}},
                {"Regions": {"x": {"RegionID": 1}}}, {"Regions": {"1": {"RegionID": 1, "Nodes": "a"}}}):
        with pytest.raises(DerpMapError):
            validate_derp_map(bad)
