"""``Derper``: a standalone DERP relay (+ STUN) on its own thread and event loop, as Go's ``cmd/derper``.

It is localnet's relay (:class:`~pytsnet.localnet.derp_server.DerpServer`: ``/derp``, ``/derp/probe``,
``/derp/latency-check``, ``/generate_204``) and STUN server on a listener of their own, with what an
exposed relay needs around them: TLS (a certificate from files, or a self-signed one for tests, with
Go's meta cert so Go clients use fast start), a cap on open connections (total and per source
address), and client admission. Like Go's ``derper`` it is open to every client by default; with
``verify_client_url`` each client's node key is POSTed to that admission controller first
(:mod:`pytsnet.derper.admit`; fail closed unless ``verify_fail_open``).

Sockets are made on the relay's thread, which starts in the network namespace of the thread that
called :meth:`Derper.start` (so ``with ns.entered(): derper.start()`` serves inside ``ns``).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import shutil
import tempfile
import threading
from dataclasses import asdict
from pathlib import Path
from typing import Any, Literal

from pytsnet.derper.admit import VERIFY_TIMEOUT, AdmissionClient
from pytsnet.derper.derpmap import single_node_map
from pytsnet.localnet.derp_server import DerpServer
from pytsnet.localnet.derp_tls import CERT_FILE, ensure_certificate, meta_certificate, server_context
from pytsnet.localnet.limits import ConnectionGate, ConnectionLimits
from pytsnet.localnet.loop_thread import LoopThreadServer
from pytsnet.localnet.server import parse_listen
from pytsnet.localnet.stun_server import StunServer
from pytsnet.wire.derp.frames import PROTOCOL_VERSION

TlsMode = Literal["self-signed", "files"]
MAX_CONNECTIONS = 4096
MAX_CONNECTIONS_PER_IP = 256


class Derper(LoopThreadServer):
    """A DERP relay listening on ``listen`` (``HOST:PORT``; port 0: any).

    ``tls``: None (plain HTTP; Go nodes then need ``TS_DEBUG_USE_DERP_HTTP=1``), ``"self-signed"``
    (a certificate for ``hostname`` made in ``cert_dir``, or a temporary directory; nodes need
    ``InsecureForTests`` in their map) or ``"files"`` (``cert``/``key`` PEM files). ``stun_port``:
    the UDP STUN port on the same host (0: any; None: no STUN)."""

    def __init__(self, listen: str = "127.0.0.1:0", *, tls: TlsMode | None = None, cert: Path | None = None,
                 key: Path | None = None, hostname: str = "", cert_dir: Path | None = None,
                 stun_port: int | None = 0, verify_client_url: str | None = None,
                 verify_fail_open: bool = False, verify_timeout: float = VERIFY_TIMEOUT,
                 max_connections: int = MAX_CONNECTIONS,
                 max_connections_per_ip: int = MAX_CONNECTIONS_PER_IP) -> None:
        self.listen = parse_listen(listen)
        if tls == "files" and (cert is None or key is None):
            raise ValueError("TLS from files needs both a certificate and a key file")
        self.tls = tls
        self._cert, self._key, self._cert_dir = cert, key, cert_dir
        self.hostname = hostname
        self._stun_port = stun_port
        self._verify = (verify_client_url, verify_fail_open, verify_timeout)
        self._limits = ConnectionLimits(max_connections=max_connections,
                                        max_connections_per_ip=max_connections_per_ip)
        self.derp: DerpServer | None = None
        self.stun: StunServer | None = None
        self.admission: AdmissionClient | None = None
        self._tmp: str | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stop: asyncio.Event | None = None

    # -- lifecycle --------------------------------------------------------------------------
    def start(self) -> Derper:
        ready: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._thread = threading.Thread(target=self._run, args=(ready,), name="derper", daemon=True)
        self._thread.start()
        try:
            ready.result(timeout=30)
        except BaseException:
            self._thread.join(timeout=10)
            self._cleanup_tmp()
            raise
        return self

    def _ssl_context(self, derp: DerpServer) -> Any:
        """The listener's TLS context, its chain = leaf + Go's meta cert (written in a private
        temporary directory, so a certificate directory we were given is never written to)."""
        self._tmp = tempfile.mkdtemp(prefix="pytsnet-derper-")
        work = Path(self._tmp)
        if self.tls == "self-signed":
            cert, key = ensure_certificate(self._cert_dir or work, self.hostname or self.listen[0])
        else:
            assert self._cert is not None and self._key is not None
            cert, key = work / CERT_FILE, self._key
            shutil.copyfile(self._cert, cert)
        if cert.parent != work:
            shutil.copyfile(cert, work / CERT_FILE)
            cert = work / CERT_FILE
        return server_context(cert, key, meta_certificate(derp.public.raw, PROTOCOL_VERSION))

    async def _start_servers(self) -> None:
        url, fail_open, timeout = self._verify
        if url:
            self.admission = AdmissionClient(url, fail_open=fail_open, timeout=timeout)
        derp = DerpServer(verify=self.admission)
        derp.gate = ConnectionGate(self._limits)
        host, port = self.listen
        ssl = self._ssl_context(derp) if self.tls is not None else None
        await derp.start(host, port, ssl=ssl)
        self.derp = derp
        if self._stun_port is not None:
            stun = StunServer()
            try:
                await stun.start(host, self._stun_port)
            except BaseException:
                await derp.close()
                raise
            self.stun = stun

    def _run(self, ready: concurrent.futures.Future[None]) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        try:
            self._stop = asyncio.Event()
            loop.run_until_complete(self._start_servers())
        except BaseException as e:
            loop.run_until_complete(self._shutdown())
            loop.close()
            ready.set_exception(e)
            return
        ready.set_result(None)
        try:
            loop.run_until_complete(self._stop.wait())
        finally:
            loop.run_until_complete(self._shutdown())
            loop.close()

    async def _shutdown(self) -> None:
        if self.stun is not None:
            self.stun.close()
        if self.derp is not None:
            await self.derp.close()
        if self.admission is not None:
            await self.admission.aclose()

    def close(self) -> None:
        if self._loop is not None and self._thread is not None and self._thread.is_alive():
            stop = self._stop
            if stop is not None:
                self._loop.call_soon_threadsafe(stop.set)
            self._thread.join(timeout=10)
        self._cleanup_tmp()

    def _cleanup_tmp(self) -> None:
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    # -- facts ------------------------------------------------------------------------------
    @property
    def host(self) -> str:
        assert self.derp is not None, "not started"
        return self.derp.host

    @property
    def port(self) -> int:
        assert self.derp is not None, "not started"
        return int(self.derp.port)

    @property
    def stun_port(self) -> int:
        """The bound STUN port; -1 without STUN (what a DERP map's ``STUNPort`` says for that)."""
        return int(self.stun.port) if self.stun is not None else -1

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'https' if self.tls else 'http'}://{host}:{self.port}/derp"

    def derp_map(self, region_id: int = 900, *, insecure_for_tests: bool | None = None) -> dict[str, Any]:
        """A one-region DERP map naming this relay (``InsecureForTests`` by default when self-signed)."""
        insecure = self.tls == "self-signed" if insecure_for_tests is None else insecure_for_tests
        return single_node_map(self.host, self.port, self.stun_port, hostname=self.hostname,
                               region_id=region_id, insecure_for_tests=insecure)

    def stats(self) -> dict[str, Any]:
        """A snapshot of the relay's counters (taken on its loop): DERP, admission, STUN, refusals."""
        def snap() -> dict[str, Any]:
            assert self.derp is not None
            d = self.derp.stats
            out: dict[str, Any] = {
                "accepted": d.accepted, "rejected_verify": d.rejected_verify,
                "verify_errors": d.verify_errors, "stream_errors": d.stream_errors,
                "bad_upgrades": d.bad_upgrades, "packets_forwarded": d.packets_forwarded,
                "bytes_forwarded": d.bytes_forwarded, "drops": dict(d.drops),
                "clients": len(self.derp.clients),
                "conns_refused": self.derp.conns_refused,
                "keys": {k.to_text(): asdict(v) for k, v in d.keys.items()},
            }
            if self.admission is not None:
                out["admission"] = asdict(self.admission.stats)
            if self.stun is not None:
                out["stun"] = asdict(self.stun.stats)
            return out
        return self._call(snap)
