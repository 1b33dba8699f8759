"""``ServiceHosting``: the services this node hosts (its ``ServiceListener``s) and what it advertises.

Go's tsnet counts listeners per service (``advertisedServices``) and edits ``Prefs.AdvertiseServices``
when the first opens and the last closes; the advertisement control sees is ``Hostinfo.ServicesHash``
over every hosted service and its ports, so here any open or close recomputes that hash and hands it
to ``advertise`` (the device's lite update to control).

It also holds Serve's ``ServiceAcceptor``s (a service port in the serve config's ``Services``): a VIP
SYN goes to the port's acceptor when Serve serves it, else to an app's TCP-mode ``ServiceListener``
(an HTTP-mode listener is fed by Serve's proxy, never by the VIP directly). Go advertises only the
services of ``Prefs.AdvertiseServices`` as active; here that is the services with an open listener,
so a hand-written ``Services`` entry is served only while ``listen_service`` advertises the service.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable

from pytsnet.errors import ServiceUnavailable
from pytsnet.services.fallback import ServiceTarget
from pytsnet.services.listener import DEFAULT_BACKLOG, HttpServiceListener, ServiceListener, services_hash
from pytsnet.services.serving import ServiceAcceptor

__all__ = ["ServiceHosting"]


class ServiceHosting:
    def __init__(self, advertise: Callable[[str], None]) -> None:
        self._advertise = advertise
        self._lock = threading.Lock()
        self._listeners: dict[tuple[str, int], ServiceListener | HttpServiceListener] = {}
        self._acceptors: dict[tuple[str, int], ServiceAcceptor] = {}

    def open(self, name: str, port: int, fqdn: str, vips: Callable[[], list[str]],
             backlog: int = DEFAULT_BACKLOG) -> ServiceListener:
        lst = ServiceListener(name, port, fqdn, vips, self._closed, backlog)
        self._register(lst)
        return lst

    def open_http(self, name: str, port: int, fqdn: str, https: bool, vips: Callable[[], list[str]],
                  on_close: Callable[[HttpServiceListener], None], backlog: int = DEFAULT_BACKLOG,
                  kind: type[HttpServiceListener] = HttpServiceListener) -> HttpServiceListener:
        """An HTTP-mode listener (or a TCP-forward one, ``kind``, 20h); ``on_close`` runs (the serve
        config cleaned) before it withdraws."""
        def closed(lst: HttpServiceListener) -> None:
            try:
                on_close(lst)
            finally:
                self._closed(lst)
        lst = kind(name, port, fqdn, https, vips, closed, backlog)
        try:
            self._register(lst)
        except BaseException:
            lst.abandon()
            raise
        return lst

    def _register(self, lst: ServiceListener | HttpServiceListener) -> None:
        name, port = lst.name, lst.port
        with self._lock:
            if (name, port) in self._listeners:
                raise ServiceUnavailable(f"a Service handler already exists for {name} port {port}")
            self._listeners[(name, port)] = lst
            h = self._hash()
        try:
            self._advertise(h)
        except BaseException:
            with self._lock:
                self._listeners.pop((name, port), None)
            raise

    def hosted(self, name: str, port: int) -> ServiceListener | HttpServiceListener | None:
        """The app's open listener of this service port, if any."""
        with self._lock:
            return self._listeners.get((name, port))

    def listener(self, name: str, port: int) -> ServiceTarget | None:
        """Who takes a SYN to this service port: Serve's acceptor, else a TCP-mode listener."""
        with self._lock:
            acc = self._acceptors.get((name, port))
            if acc is not None:
                return acc
            lst = self._listeners.get((name, port))
            return lst if isinstance(lst, ServiceListener) else None

    # -- Serve's side (``pytsnet.serve.listeners``) ----------------------------------------------------
    def open_acceptor(self, name: str, port: int) -> ServiceAcceptor:
        with self._lock:
            acc = self._acceptors.get((name, port))
            if acc is None:
                acc = self._acceptors[(name, port)] = ServiceAcceptor(name, port)
            return acc

    def close_acceptor(self, name: str, port: int) -> None:
        with self._lock:
            acc = self._acceptors.pop((name, port), None)
        if acc is not None:
            acc.close()

    def acceptor_ports(self) -> list[tuple[str, int]]:
        with self._lock:
            return sorted(self._acceptors)

    def close_all(self) -> None:
        with self._lock:
            listeners = list(self._listeners.values())
        for lst in listeners:
            lst.close()

    def _closed(self, lst: ServiceListener | HttpServiceListener) -> None:
        with self._lock:
            if self._listeners.get((lst.name, lst.port)) is not lst:
                return
            del self._listeners[(lst.name, lst.port)]
            h = self._hash()
        with contextlib.suppress(Exception):  # closing must not fail; the next open or restart re-tells
            self._advertise(h)

    def _hash(self) -> str:
        ports: dict[str, list[int]] = {}
        for name, port in self._listeners:
            ports.setdefault(name, []).append(port)
        return services_hash(ports)
