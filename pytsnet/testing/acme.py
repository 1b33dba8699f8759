"""A real ACME CA for tests: Let's Encrypt's ``pebble`` and its ``pebble-challtestsrv``, started in a
network namespace with no route out (both are Go binaries), on the namespace's loopback.

``with pebble_stack(ns, tmp) as ca:`` gives the directory URL (``ca.directory_url``), the CA file
that pebble's own HTTPS listener chains to (``ca.tls_ca_file``: what ``SSL_CERT_FILE`` or
``Config.acme_ca_file`` must name for a node to talk to it), the management URL of challtestsrv
(``ca.dns01_api``: localnet's ``--dns01-api``) and, once asked, the root that signs issued
certificates (``ca.issuer_root()``: pebble makes a new one every start, at ``/roots/0``). Pass
``dns_server="127.0.0.1:PORT"`` to have pebble resolve DNS-01 TXT records at another server
(localnet's own) instead of challtestsrv, which is then not started.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import socket
import ssl
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from pytsnet.testing.netns import Netns

__all__ = ["PebbleStack", "free_ports", "pebble_available", "pebble_stack"]

PEBBLE, CHALLTESTSRV = "/usr/bin/pebble", "/usr/bin/pebble-challtestsrv"
_SKEW, _LIFE = datetime.timedelta(minutes=5), datetime.timedelta(days=1)  # the listener cert's validity


def pebble_available() -> str | None:
    """None when both binaries are here, else why not (a skip reason)."""
    missing = [p for p in (PEBBLE, CHALLTESTSRV) if not os.access(p, os.X_OK)]
    return f"needs {', '.join(missing)} (apt-get install pebble)" if missing else None


def free_ports(ns: Netns, *kinds: int) -> list[int]:
    """One port per socket type in ``kinds``, free on the namespace's loopback now and distinct from
    each other: all are bound at once, then released (picked one by one, two could be the same port,
    and the second server to bind it would fail)."""
    def pick() -> list[int]:
        socks: list[socket.socket] = []
        try:
            for kind in kinds:
                socks.append(socket.socket(socket.AF_INET, kind))
                socks[-1].bind(("127.0.0.1", 0))
            return [int(s.getsockname()[1]) for s in socks]
        finally:
            for s in socks:
                s.close()
    return ns.call(pick)


@dataclass
class PebbleStack:
    directory_url: str
    tls_ca_file: Path
    """The CA of pebble's own HTTPS listener (generated here): trust it to talk ACME to pebble."""
    management_url: str
    """Pebble's management API (``/roots/0``, ``/intermediates/0``)."""
    dns01_api: str
    """challtestsrv's management API (``POST /set-txt``), or "" when ``dns_server`` was given."""
    dns_server: str
    """Where pebble resolves DNS-01 records (``HOST:PORT``)."""
    ns: Netns

    def _get(self, url: str) -> bytes:
        ctx = ssl.create_default_context(cafile=str(self.tls_ca_file))
        def fetch() -> bytes:
            with urllib.request.urlopen(url, context=ctx, timeout=5) as r:
                return bytes(r.read())
        return self.ns.call(fetch)

    def issuer_root(self) -> bytes:
        """PEM of the root that signs the certificates pebble issues (new at every start)."""
        return self._get(f"{self.management_url}/roots/0")


def _tls_material(directory: Path) -> tuple[Path, Path, Path]:
    """A throwaway CA and a leaf for 127.0.0.1/localhost signed by it: pebble's HTTPS listener."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pytsnet pebble listener CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - _SKEW).not_valid_after(now + _LIFE)
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - _SKEW).not_valid_after(now + _LIFE)
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    ca_file, cert_file = directory / "listener-ca.pem", directory / "cert.pem"
    key_file = directory / "key.pem"
    ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_file.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key_file.chmod(0o600)
    return ca_file, cert_file, key_file


def _wait_tcp(ns: Netns, port: int, timeout: float, what: str, proc: subprocess.Popen[bytes] | None = None,
              log_file: Path | None = None) -> None:
    """Until ``port`` accepts; a ``proc`` that exits meanwhile fails at once, with its log's tail."""
    def probe() -> bool:
        with socket.socket() as s:
            s.settimeout(0.5)
            return s.connect_ex(("127.0.0.1", port)) == 0
    deadline = time.monotonic() + timeout
    while not ns.call(probe):
        exited = proc is not None and proc.poll() is not None
        if exited or time.monotonic() > deadline:
            why = f"exited ({proc.returncode})" if exited and proc is not None else f"not within {timeout} s"
            log = log_file.read_bytes() if log_file is not None and log_file.exists() else b""
            tail = log[-2000:].decode(errors="replace")
            raise AssertionError(f"{what} did not listen on 127.0.0.1:{port}: {why}; its log ends:\n{tail}")
        time.sleep(0.05)


@contextmanager
def pebble_stack(ns: Netns, workdir: Path, *, dns_server: str | None = None,
                 validity: int | None = None, timeout: float = 20.0) -> Iterator[PebbleStack]:
    """Start pebble (+ challtestsrv unless ``dns_server`` is given) in ``ns``; both are killed on exit.
    ``validity``: the lifetime of issued certificates in seconds (pebble's
    ``certificateValidityPeriod``; None: its default, about 5 years)."""
    workdir.mkdir(parents=True, exist_ok=True)
    ca_file, cert_file, key_file = _tls_material(workdir)
    acme_port, mgmt_port, chall_port, dns_port = free_ports(
        ns, socket.SOCK_STREAM, socket.SOCK_STREAM, socket.SOCK_STREAM, socket.SOCK_DGRAM)
    procs = []
    chall = None
    if dns_server is None:
        dns_server = f"127.0.0.1:{dns_port}"
        chall = ns.popen([CHALLTESTSRV, "-management", f"127.0.0.1:{chall_port}", "-dns01", dns_server,
                          "-http01", "", "-https01", "", "-tlsalpn01", ""],
                         stdout=open(workdir / "challtestsrv.log", "wb"), stderr=-2)  # noqa: SIM115
        procs.append(chall)
    cfg: dict[str, object] = {
        "listenAddress": f"127.0.0.1:{acme_port}", "managementListenAddress": f"127.0.0.1:{mgmt_port}",
        "certificate": str(cert_file), "privateKey": str(key_file), "httpPort": 5002, "tlsPort": 5001,
        "ocspResponderURL": "", "externalAccountBindingRequired": False}
    if validity is not None:
        cfg["certificateValidityPeriod"] = validity
    (workdir / "pebble.json").write_text(json.dumps({"pebble": cfg}))
    env = {**os.environ, "PEBBLE_VA_NOSLEEP": "1", "PEBBLE_WFE_NONCEREJECT": "0"}
    pebble = ns.popen([PEBBLE, "-config", str(workdir / "pebble.json"), "-dnsserver", dns_server],
                      env=env, stdout=open(workdir / "pebble.log", "wb"), stderr=-2)  # noqa: SIM115
    procs.append(pebble)
    try:
        _wait_tcp(ns, acme_port, timeout, "pebble", pebble, workdir / "pebble.log")
        _wait_tcp(ns, mgmt_port, timeout, "pebble management", pebble, workdir / "pebble.log")
        if chall is not None:
            _wait_tcp(ns, chall_port, timeout, "pebble-challtestsrv", chall, workdir / "challtestsrv.log")
        yield PebbleStack(directory_url=f"https://127.0.0.1:{acme_port}/dir", tls_ca_file=ca_file,
                          management_url=f"https://127.0.0.1:{mgmt_port}",
                          dns01_api=f"http://127.0.0.1:{chall_port}" if chall is not None else "",
                          dns_server=dns_server, ns=ns)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait(timeout=5)

