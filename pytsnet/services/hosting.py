"""``ServiceHosting``: the services this node hosts (its ``ServiceListener``s) and what it advertises.

Go's tsnet counts listeners per service (``advertisedServices``) and edits ``Prefs.AdvertiseServices``
when the first opens and the last closes; the advertisement control sees is ``Hostinfo.ServicesHash``
over every hosted service and its ports, so here any open or close recomputes that hash and hands it
to ``advertise`` (the device's lite update to control).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable

from pytsnet.errors import ServiceUnavailable
from pytsnet.services.listener import DEFAULT_BACKLOG, ServiceListener, services_hash

__all__ = ["ServiceHosting"]


class ServiceHosting:
    def __init__(self, advertise: Callable[[str], None]) -> None:
        self._advertise = advertise
        self._lock = threading.Lock()
        self._listeners: dict[tuple[str, int], ServiceListener] = {}

    def open(self, name: str, port: int, fqdn: str, vips: Callable[[], list[str]],
             backlog: int = DEFAULT_BACKLOG) -> ServiceListener:
        with self._lock:
            if (name, port) in self._listeners:
                raise ServiceUnavailable(f"a Service handler already exists for {name} port {port}")
            lst = ServiceListener(name, port, fqdn, vips, self._closed, backlog)
            self._listeners[(name, port)] = lst
            h = self._hash()
        try:
            self._advertise(h)
        except BaseException:
            with self._lock:
                self._listeners.pop((name, port), None)
            raise
        return lst

    def listener(self, name: str, port: int) -> ServiceListener | None:
        with self._lock:
            return self._listeners.get((name, port))

    def close_all(self) -> None:
        with self._lock:
            listeners = list(self._listeners.values())
        for lst in listeners:
            lst.close()

    def _closed(self, lst: ServiceListener) -> None:
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
