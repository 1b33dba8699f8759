"""The port mapper's blocking exchanges with the gateway (run on the actor's I/O thread).

Each protocol maps one UDP port and can delete it again. The bytes are ``wire.portmap``'s; this
module only adds sockets, timeouts and the gateway's address. Go ``net/portmapper``: NAT-PMP and PCP
to the gateway's port 5351 from a fresh UDP socket; UPnP by SSDP (unicast to the gateway and to the
multicast group), the root description and SOAP over HTTP.
"""

from __future__ import annotations

import contextlib
import http.client
import ipaddress
import os
import socket
import time
from dataclasses import dataclass, replace
from urllib.parse import urlsplit, urlunsplit

from pytsnet.wire.errors import WireError
from pytsnet.wire.portmap import PortmapParseError, natpmp, pcp, upnp

__all__ = ["Mapping", "PortmapError", "default_gateway", "map_port", "release", "release_sockets"]

RTF_GATEWAY = 0x2


class PortmapError(Exception):
    """A protocol could not map (no answer, a refusal, a malformed reply): the next one is tried.
    From ``map_port``: every protocol failed, ``failed`` names them."""

    def __init__(self, message: str, failed: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.failed = failed


@dataclass(frozen=True)
class Mapping:
    protocol: str
    gateway: str
    internal_ip: str
    local_port: int
    external_ip: str
    external_port: int
    lifetime: int
    nonce: bytes = b""  # PCP: renewals and the delete carry the same nonce
    service_type: str = ""  # UPnP: the service the mapping was made on
    control_url: str = ""
    failed: tuple[str, ...] = ()  # map_port: the protocols tried first that could not map

    @property
    def external(self) -> str:
        return f"{self.external_ip}:{self.external_port}"


def default_gateway() -> str | None:
    """The IPv4 default route's gateway in this thread's namespace (``/proc/thread-self/net/route``)."""
    try:
        lines = open("/proc/thread-self/net/route").read().splitlines()[1:]  # noqa: SIM115
    except OSError:
        return None
    for line in lines:
        f = line.split()
        if len(f) >= 4 and f[1] == "00000000" and int(f[3], 16) & RTF_GATEWAY:
            return str(ipaddress.IPv4Address(int(f[2], 16).to_bytes(4, "little")))
    return None


def _self_ip(gateway: str) -> str:
    """Our address on the gateway's side: what a PCP request must name (else ADDRESS_MISMATCH)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect((gateway, natpmp.PORT))
        return str(s.getsockname()[0])


def _exchange(gateway: str, requests: list[bytes], timeout: float, want: int) -> list[bytes]:
    """Send ``requests`` to the gateway's 5351 and collect ``want`` replies from it (one retry)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("0.0.0.0", 0))
        for _attempt in range(2):
            for r in requests:
                s.sendto(r, (gateway, natpmp.PORT))
            got: list[bytes] = []
            deadline = time.monotonic() + timeout
            while len(got) < want:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                s.settimeout(left)
                try:
                    data, src = s.recvfrom(1500)
                except TimeoutError:
                    break
                except ConnectionRefusedError as e:  # an ICMP port unreachable: nothing listens
                    raise PortmapError(f"gateway {gateway}:{natpmp.PORT} refused") from e
                if src[0] == gateway:
                    got.append(data)
            if len(got) >= want:
                return got
    raise PortmapError(f"no reply from {gateway}:{natpmp.PORT}")


def _map_pmp(gateway: str, local_port: int, prev: Mapping | None, lifetime: int, timeout: float) -> Mapping:
    req = natpmp.map_udp_request(local_port, prev.external_port if prev else 0, lifetime)
    ip, port, granted = None, 0, 0
    for data in _exchange(gateway, [natpmp.external_address_request(), req], timeout, 2):
        try:
            r = natpmp.parse_response(data)
        except PortmapParseError as e:
            raise PortmapError(f"NAT-PMP: {e}") from e
        if r.result != 0:
            raise PortmapError(f"NAT-PMP: {natpmp.RESULT_NAMES.get(r.result, r.result)}")
        if r.opcode == natpmp.OP_REPLY | natpmp.OP_PUBLIC_ADDR:
            ip = r.public_ip
        elif r.opcode == natpmp.OP_REPLY | natpmp.OP_MAP_UDP and r.internal_port == local_port:
            port, granted = r.external_port, r.lifetime
    if ip is None or not port or not granted:
        raise PortmapError("NAT-PMP: no external address or port")
    return Mapping("pmp", gateway, _self_ip(gateway), local_port, str(ip), port, granted)


def _map_pcp(gateway: str, local_port: int, prev: Mapping | None, lifetime: int, timeout: float) -> Mapping:
    me = _self_ip(gateway)
    nonce = prev.nonce if prev and prev.nonce else os.urandom(12)
    prev_ext = ipaddress.ip_address(prev.external_ip) if prev else None
    req = pcp.map_request(ipaddress.ip_address(me), nonce, local_port, prev.external_port if prev else 0,
                          lifetime, prev_ext)
    (data,) = _exchange(gateway, [req], timeout, 1)
    try:
        r = pcp.parse_map_response(data)
    except PortmapParseError as e:
        raise PortmapError(f"PCP: {e}") from e
    if r.result != 0:
        raise PortmapError(f"PCP: {pcp.RESULT_NAMES.get(r.result, r.result)}")
    if r.nonce != nonce or r.internal_port != local_port or not r.external_port or not r.lifetime:
        raise PortmapError("PCP: the reply is not for our request")
    return Mapping("pcp", gateway, me, local_port, str(r.external_ip), r.external_port, r.lifetime,
                   nonce=nonce)


def _ssdp(gateway: str, timeout: float) -> upnp.SsdpResponse:
    """The gateway's IGD location (Go: unicast ``ssdp:all`` to the gateway, both searches multicast)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("0.0.0.0", 0))
        s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 2)
        with contextlib.suppress(OSError):
            s.sendto(upnp.m_search("ssdp:all"), (gateway, upnp.SSDP_PORT))
        for st in ("ssdp:all", upnp.IGD1):
            with contextlib.suppress(OSError):  # no multicast route: the unicast one may answer
                s.sendto(upnp.m_search(st), (upnp.MULTICAST, upnp.SSDP_PORT))
        deadline = time.monotonic() + timeout * 2
        found: list[upnp.SsdpResponse] = []
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            s.settimeout(left)
            try:
                data, _src = s.recvfrom(upnp.MAX_SSDP + 1)
            except TimeoutError:
                break
            except OSError:
                continue
            with contextlib.suppress(PortmapParseError):
                r = upnp.parse_ssdp_response(data)
                found.append(r)
                if "InternetGatewayDevice" in r.st or "InternetGatewayDevice" in r.usn:
                    break
        igd = [r for r in found if "InternetGatewayDevice" in r.st or "InternetGatewayDevice" in r.usn]
        if not (igd or found):
            raise PortmapError("UPnP: no SSDP reply")
        return (igd or found)[0]


def _http(url: str, body: bytes | None, headers: dict[str, str], timeout: float,
          sock: socket.socket | None = None) -> bytes:
    """One HTTP exchange; ``sock``: a TCP socket made earlier (in the node's namespace) to use."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port or 80, timeout=timeout)
    try:
        if sock is not None:
            sock.settimeout(timeout)
            sock.connect((parts.hostname or "", parts.port or 80))
            conn.sock = sock
        path = urlunsplit(("", "", parts.path or "/", parts.query, ""))
        conn.request("POST" if body is not None else "GET", path, body=body, headers=headers)
        resp = conn.getresponse()
        data = resp.read(upnp.MAX_XML + 1)
        if len(data) > upnp.MAX_XML:
            raise PortmapError(f"UPnP: {url} sent more than {upnp.MAX_XML} bytes")
        if resp.status not in (200, 500):  # a SOAP fault comes with 500
            raise PortmapError(f"UPnP: {url} answered {resp.status}")
        return data
    except (OSError, http.client.HTTPException) as e:
        raise PortmapError(f"UPnP: {url}: {e}") from e
    finally:
        conn.close()


def _soap(service: upnp.IgdService, action: str, body: bytes, timeout: float,
          sock: socket.socket | None = None) -> dict[str, str]:
    data = _http(service.control_url, body, upnp.soap_headers(service.service_type, action), timeout, sock)
    return upnp.parse_soap_response(data, action)


def _on_gateway(url: str, gateway: str) -> str:
    """Go (issue 5502): a description URL on another host is repointed at the gateway."""
    parts = urlsplit(url)
    if parts.hostname == gateway:
        return url
    return urlunsplit((parts.scheme, f"{gateway}:{parts.port or 80}", parts.path, parts.query, ""))


def _map_upnp(gateway: str, local_port: int, prev: Mapping | None, lifetime: int, timeout: float) -> Mapping:
    me = _self_ip(gateway)
    if prev is not None and prev.control_url:
        services = [upnp.IgdService(prev.service_type, prev.control_url)]
    else:
        found = _ssdp(gateway, timeout)
        location = _on_gateway(found.location, gateway)
        try:
            services = upnp.find_services(_http(location, None, {}, timeout * 2), location)
        except PortmapParseError as e:
            raise PortmapError(f"UPnP: root description: {e}") from e
        services = [upnp.IgdService(s.service_type, _on_gateway(s.control_url, gateway)) for s in services]
    if not services:
        raise PortmapError("UPnP: no WANIPConnection/WANPPPConnection service")
    want = prev.external_port if prev else 0
    if want < 1024:  # Go: never a wildcard or privileged external port
        want = 1024 + int.from_bytes(os.urandom(2), "big") % (65535 - 1024)
    errors = []
    for svc in services:
        try:
            port = _add(svc, want, local_port, me, lifetime, timeout)
            granted = lifetime
        except upnp.SoapFault as e:
            if e.code not in (402, 725):
                errors.append(str(e))
                continue
            try:  # Go (issues 9343, 15223): only permanent leases here
                port, granted = _add(svc, want, local_port, me, 0, timeout), 0
            except (upnp.SoapFault, PortmapParseError) as e2:
                errors.append(str(e2))
                continue
        except PortmapParseError as e:
            errors.append(str(e))
            continue
        try:
            ext = upnp.parse_external_ip(_soap(svc, "GetExternalIPAddress",
                                               upnp.get_external_ip(svc.service_type), timeout * 2))
        except WireError as e:
            errors.append(str(e))
            continue
        return Mapping("upnp", gateway, me, local_port, str(ext), port, granted,
                       service_type=svc.service_type, control_url=svc.control_url)
    raise PortmapError(f"UPnP: {'; '.join(errors)[:300]}")


def _add(svc: upnp.IgdService, want: int, local_port: int, me: str, lease: int, timeout: float) -> int:
    if svc.service_type.endswith("WANIPConnection:2"):
        out = _soap(svc, "AddAnyPortMapping",
                    upnp.add_any_port_mapping(svc.service_type, want, local_port, me, lease), timeout * 2)
        reserved = out.get("NewReservedPort", "")
        if not reserved.isdigit() or not 0 < int(reserved) < 65536:
            raise PortmapParseError(f"AddAnyPortMapping reserved port {reserved[:10]!r}")
        return int(reserved)
    _soap(svc, "AddPortMapping", upnp.add_port_mapping(svc.service_type, want, local_port, me, lease),
          timeout * 2)
    return want


_MAPPERS = {"pmp": _map_pmp, "pcp": _map_pcp, "upnp": _map_upnp}


def map_port(gateway: str, local_port: int, protocols: tuple[str, ...], prev: Mapping | None,
             lifetime: int, timeout: float) -> Mapping:
    """Map UDP ``local_port``: a renewal tries ``prev``'s protocol first, then the others in order."""
    order = list(protocols)
    if prev is not None and prev.protocol in order:
        order.remove(prev.protocol)
        order.insert(0, prev.protocol)
    errors: list[str] = []
    failed: list[str] = []
    for proto in order:
        try:
            m = _MAPPERS[proto](gateway, local_port, prev if prev and prev.protocol == proto else None,
                                lifetime, timeout)
            return replace(m, failed=tuple(failed))
        except (PortmapError, OSError) as e:
            errors.append(f"{proto}: {e}")
            failed.append(proto)
    raise PortmapError("; ".join(errors), tuple(failed))


def release_sockets() -> tuple[socket.socket, socket.socket]:
    """A UDP and a TCP socket for ``release``, made now: a socket belongs to the network namespace
    of the thread that made it, and the release may run on another thread (the one stopping us)."""
    return socket.socket(socket.AF_INET, socket.SOCK_DGRAM), socket.socket(socket.AF_INET, socket.SOCK_STREAM)


def release(m: Mapping, timeout: float, udp: socket.socket, tcp: socket.socket) -> None:
    """Delete the mapping (best effort: a gateway that does not answer keeps it until it expires).
    ``udp``/``tcp`` come from ``release_sockets`` and are closed here."""
    try:
        if m.protocol in ("pmp", "pcp"):
            if m.protocol == "pmp":
                req = natpmp.map_udp_request(m.local_port, 0, natpmp.LIFETIME_DELETE)
            else:  # the same nonce, lifetime 0 (RFC 6887 §15)
                req = pcp.map_request(ipaddress.ip_address(m.internal_ip), m.nonce, m.local_port,
                                      m.external_port, 0, ipaddress.ip_address(m.external_ip))
            udp.sendto(req, (m.gateway, natpmp.PORT))
            udp.settimeout(timeout)
            with contextlib.suppress(OSError):
                udp.recvfrom(1500)
        elif m.protocol == "upnp":
            svc = upnp.IgdService(m.service_type, m.control_url)
            body = upnp.delete_port_mapping(m.service_type, m.external_port)
            _soap(svc, "DeletePortMapping", body, timeout, tcp)
    except (OSError, PortmapError, WireError):
        pass
    finally:
        udp.close()
        tcp.close()
