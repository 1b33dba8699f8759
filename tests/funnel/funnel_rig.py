"""The Funnel tests' tailnet and tools: ``web``, ``peer`` (both granted Funnel) and ``nofunnel`` on a
LocalTailnet with HTTPS and an ingress (``localnet --funnel``) on 127.0.0.1; certificates from a test
CA; ``curl`` on the host against the ingress's public port; raw ``/v0/ingress`` requests."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import trustme

from pytsnet.device import ActorDevice
from pytsnet.testing.polling import wait_until
from pytsnet.testing.tailnet import Tailnet, local_tailnet

Provider = Callable[[str], tuple[bytes, bytes]]


@contextmanager
def funnel_tailnet(tmp: Path, **net_options: Any) -> Iterator[Tailnet]:
    """The tailnet above (``net_options``: more ``LocalTailnet`` keywords), yielded once the ingress
    sees ``web``."""
    opts = {"https": True, "funnel": "127.0.0.1:0", "funnel_nodes": ["web", "peer"], **net_options}
    with local_tailnet(tmp, ["web", "peer", "nofunnel"], net_options=opts) as net:
        ingress = net.net.funnel
        assert ingress is not None
        wait_until(lambda: ingress.sees(net.name(net["web"])), 30, "the ingress sees web", interval=0.05)
        yield net


def provider_for(ca: trustme.CA, asked: list[str]) -> Provider:
    """A cert provider issuing a new leaf from ``ca`` on every call; ``asked`` records the domains."""
    def provide(domain: str) -> tuple[bytes, bytes]:
        asked.append(domain)
        cert = ca.issue_cert(domain)
        return b"".join(p.bytes() for p in cert.cert_chain_pems), cert.private_key_pem.bytes()
    return provide


def fqdn(dev: ActorDevice) -> str:
    return dev.state.name.rstrip(".")


def curl(ca_file: Path, name: str, port: int, path: str = "/") -> tuple[str, int]:
    """``curl`` on the host against the ingress's public port; its body and its own source port."""
    cmd = ["curl", "-sS", "--max-time", "20", "--cacert", str(ca_file),
           "--resolve", f"{name}:{port}:127.0.0.1", f"https://{name}:{port}{path}", "-w", "\n%{local_port}"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    body, _, local_port = out.stdout.rpartition("\n")
    return body, int(local_port)


def raw_peerapi(dev: ActorDevice, target: ActorDevice, request: bytes, reads: int = 1) -> bytes:
    """Send ``request`` to ``target``'s peerAPI from ``dev`` over the tailnet; what came back."""
    sock = dev.tcp_connect_blocking(Tailnet.ip(target), target.peerapi_port, timeout=10)
    sock.settimeout(10)
    try:
        sock.sendall(request)
        out = b""
        while out.count(b"HTTP/1.1 ") < reads or not out.endswith(b"\n"):
            chunk = sock.recv(4096)
            if not chunk:
                break
            out += chunk
        return out
    finally:
        sock.close()


def ingress_req(target: ActorDevice, src: str = "198.51.100.1:4000", tgt: str | None = None,
                method: str = "POST") -> bytes:
    """The ingress's ``/v0/ingress`` request for ``target`` (``tgt``: default its ``fqdn:443``)."""
    host = f"{Tailnet.ip(target)}:{target.peerapi_port}"
    tgt = tgt if tgt is not None else f"{fqdn(target)}:443"
    return (f"{method} /v0/ingress HTTP/1.1\r\nHost: {host}\r\nTailscale-Ingress-Src: {src}\r\n"
            f"Tailscale-Ingress-Target: {tgt}\r\nContent-Length: 0\r\n\r\n").encode()
