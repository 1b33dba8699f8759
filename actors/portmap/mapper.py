"""PortMapper: keeps magicsock's UDP port mapped on the gateway and tells the StunProber the endpoint.

Go ``net/portmapper`` as magicsock drives it: map the bound port (NAT-PMP, then PCP, then UPnP; a
test may pin one), renew at half the granted lifetime (asking for the same external port, PCP with
the same nonce), retry after ``retry`` seconds when nothing maps, and delete the mapping when the
node closes. The exchanges block (timeouts of ``timeout`` seconds), so they run on this actor's I/O
thread, one job at a time; the actor keeps the state and the timers. The endpoint is advertised by
the StunProber as the first of our endpoints (Go ``EndpointPortmapped``).
"""

from __future__ import annotations

import queue
from dataclasses import dataclass

from pytsnet.actors.portmap import client
from pytsnet.actors.runtime import Actor, StopReason, TimerHandle, handles
from pytsnet.messages.magicsock import MagicsockResend, UdpBound
from pytsnet.messages.portmap import (
    PortmapDone,
    PortmapEndpoint,
    PortmapSpawn,
    PortmapStatus,
    PortmapStatusRequest,
    PortmapTick,
)

__all__ = ["PortMapper"]

RELEASE_TIMEOUT = 1.0  # what closing waits for the gateway at most
_STOP = object()


@dataclass(frozen=True)
class _Job:
    gateway: str
    local_port: int
    prev: client.Mapping | None


class PortMapper(Actor):
    def __init__(self, config: PortmapSpawn) -> None:
        self.config = config
        self.local_port = 0
        self.mapping: client.Mapping | None = None
        self.busy = False  # a job is on the I/O thread
        self.mappings = self.failures = 0
        self.last_error = ""
        self.available: dict[str, bool] = {}  # protocol → whether the gateway mapped with it last time
        self._timer: TimerHandle | None = None
        self._jobs: queue.Queue[object] = queue.Queue()
        self._closing = False

    def on_start(self) -> None:
        self._release_socks = client.release_sockets()  # here: in the node's network namespace
        self.start_io_loop(self._work, lambda: self._jobs.put(_STOP))
        self.tell_named(self.config.udp, MagicsockResend(reply_to=self.name))  # the bound port

    def on_stop(self, reason: StopReason) -> None:
        self._closing = True
        udp, tcp = self._release_socks
        if self.mapping is not None:  # released here: the I/O thread has stopped before us
            client.release(self.mapping, RELEASE_TIMEOUT, udp, tcp)
            self.mapping = None
        else:
            udp.close()
            tcp.close()

    @handles(UdpBound)
    def on_bound(self, msg: UdpBound) -> None:
        if msg.port == self.local_port:
            return
        self.local_port = msg.port
        self.mapping = None  # a mapping of another port is of no use (it expires on its own)
        self._schedule(0.0)

    def _schedule(self, delay: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self.send_after(delay, PortmapTick())

    @handles(PortmapTick)
    def on_tick(self, msg: PortmapTick) -> None:
        if self.busy or not self.local_port:
            return
        gateway = self.config.gateway or client.default_gateway()
        if gateway is None:
            self._failed(self.local_port, "no default gateway")
            return
        self.busy = True
        self._jobs.put(_Job(gateway, self.local_port, self.mapping))

    def _work(self) -> PortmapDone | None:
        """The I/O thread: one map (or renew) exchange per job."""
        try:
            job = self._jobs.get(timeout=0.5)
        except queue.Empty:
            return None
        if job is _STOP:
            return None
        assert isinstance(job, _Job)
        gateway, port, prev = job.gateway, job.local_port, job.prev
        try:
            m = client.map_port(gateway, port, self.config.protocols, prev, self.config.lifetime,
                                self.config.timeout)
        except client.PortmapError as e:
            return PortmapDone(local_port=port, error=str(e)[:500], failed=e.failed)
        return PortmapDone(local_port=port, protocol=m.protocol, gateway=m.gateway, internal_ip=m.internal_ip,
                           external_ip=m.external_ip, external_port=m.external_port, lifetime=m.lifetime,
                           nonce=m.nonce, service_type=m.service_type, control_url=m.control_url,
                           failed=m.failed)

    @handles(PortmapDone)
    def on_done(self, msg: PortmapDone) -> None:
        self.busy = False
        made = None if not msg.protocol else client.Mapping(
            msg.protocol, msg.gateway, msg.internal_ip, msg.local_port, msg.external_ip, msg.external_port,
            msg.lifetime, nonce=msg.nonce, service_type=msg.service_type, control_url=msg.control_url)
        if msg.local_port != self.local_port:  # the port changed meanwhile: map the new one
            if made is not None:
                client.release(made, RELEASE_TIMEOUT, *client.release_sockets())
            self._schedule(0.0)
            return
        # what this attempt learned over what earlier ones did (a renewal tries its own protocol alone)
        available = self.available | dict.fromkeys(msg.failed, False) | (
            {msg.protocol: True} if msg.protocol else {})
        same_offer = available == self.available
        self.available = available
        if not msg.protocol or made is None:
            self._failed(msg.local_port, msg.error, tell=not same_offer)
            return
        changed = self.mapping is None or self.mapping.external != made.external or not same_offer
        self.mapping = made
        self.mappings += 1
        if self._closing:
            return
        if changed:
            self.tell_named(self.config.stun, PortmapEndpoint(endpoint=made.external, protocol=made.protocol,
                                                              available=available))
        # Go: renew at half the lifetime; a permanent UPnP lease (0) is re-checked as if it were ours
        self._schedule(max(1.0, (made.lifetime or self.config.lifetime) / 2))

    def _failed(self, port: int, error: str, *, tell: bool = False) -> None:
        """No mapping now; the StunProber hears of it if one was advertised, or (``tell``) if what
        the gateway offers changed."""
        self.failures += 1
        self.last_error = error
        if self.mapping is not None or tell:
            self.mapping = None
            self.tell_named(self.config.stun, PortmapEndpoint(endpoint=None, available=self.available))
        self._schedule(self.config.retry)

    @handles(PortmapStatusRequest)
    def status(self, msg: PortmapStatusRequest) -> PortmapStatus:
        m = self.mapping
        return PortmapStatus(protocol=m.protocol if m else "", external=m.external if m else None,
                             local_port=self.local_port, lifetime=m.lifetime if m else 0,
                             mappings=self.mappings, failures=self.failures, last_error=self.last_error)


