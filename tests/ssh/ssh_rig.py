"""Two nodes on a LocalTailnet: ``server`` runs ``listen_ssh`` on tailnet port 22 (on an asyncio loop in
a thread of its own), ``client`` lends its loopback SOCKS5 proxy to the real OpenSSH client
(``ProxyCommand`` = ``ssh_socks_connect.py``). ``ssh_rules``: policy.json's ``ssh`` section."""

from __future__ import annotations

import asyncio
import os
import shlex
import socket
import subprocess
import sys
import threading
from collections.abc import Coroutine, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from pytsnet.device import ActorDevice
from pytsnet.localnet.server import LocalTailnet
from pytsnet.ssh import SessionHandler, SSHListener
from pytsnet.testing.polling import wait_until
from pytsnet.testing.tailnet import local_tailnet

CONNECTOR = Path(__file__).with_name("ssh_socks_connect.py")
SSH = "/usr/bin/ssh"
_T = TypeVar("_T")


class LoopThread:
    """An asyncio loop running in a daemon thread: the server side's event loop."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="ssh-test-loop", daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, _T], timeout: float = 30.0) -> _T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)


@dataclass
class Rig:
    net: LocalTailnet
    server: ActorDevice
    client: ActorDevice
    listener: SSHListener
    loop: LoopThread
    proxy_port: int
    cred: str
    home: Path

    @property
    def server_ip(self) -> str:
        return next(ip for ip in self.server.tailscale_ips() if ":" not in ip)

    def ssh_argv(self, user: str, *extra: str, tty: bool = False) -> list[str]:
        proxy = shlex.join([sys.executable, str(CONNECTOR), str(self.proxy_port), "tsnet", self.cred,
                            "%h", "%p"])
        return [SSH, "-F", "/dev/null", "-o", f"ProxyCommand={proxy}", "-o", "StrictHostKeyChecking=no",
                "-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes", "-o", "ConnectTimeout=20",
                "-o", "LogLevel=ERROR", "-tt" if tty else "-T", "-l", user, self.server_ip, *extra]

    def env(self) -> dict[str, str]:
        return {"HOME": str(self.home), "PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8"}

    def ssh(self, user: str, *command: str, timeout: float = 60.0) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(self.ssh_argv(user, *command), capture_output=True, timeout=timeout,
                              env=self.env(), stdin=subprocess.DEVNULL, check=False)

    def raw_connect(self, port: int = 22) -> socket.socket:
        """A plain TCP connection to the server's tailnet port through the client's SOCKS5 proxy."""
        sys.path.insert(0, str(CONNECTOR.parent))
        try:
            from ssh_socks_connect import connect
        finally:
            sys.path.remove(str(CONNECTOR.parent))
        s: socket.socket = connect(self.proxy_port, "tsnet", self.cred, self.server_ip, port)
        return s


def ssh_policy_seen(dev: ActorDevice, rules: int | None = None) -> bool:
    nm = dev.dataplane_info().netmap
    if nm is None or nm.ssh_policy is None:
        return False
    return rules is None or len(nm.ssh_policy.rules) == rules


@contextmanager
def ssh_rig(tmp: Path, ssh_rules: Sequence[dict[str, Any]], handler: SessionHandler | None = None,
            *, server_rules: int | None = None) -> Iterator[Rig]:
    with local_tailnet(tmp, ["server", "client"]) as tn:
        server, client = tn["server"], tn["client"]
        tn.net.set_policy({"ssh": list(ssh_rules)})
        wait_until(lambda: ssh_policy_seen(server, server_rules), 20, "the server's netmap has its SSHPolicy",
                   interval=0.05)
        lt = LoopThread()
        try:
            listener = lt.run(server.listen_ssh(22, handler))
            addr, cred, _ = client.loopback()
            home = tmp / "home"
            home.mkdir()
            try:
                yield Rig(tn.net, server, client, listener, lt, int(addr.rsplit(":", 1)[1]), cred, home)
            finally:
                lt.run(listener.aclose())
        finally:
            lt.stop()
