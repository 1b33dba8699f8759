"""UPnP IGD (sans-IO): SSDP discovery, the root description, and the SOAP calls a port mapper needs.

Go ``net/portmapper/upnp.go`` (goupnp): M-SEARCH for ``ssdp:all`` and ``InternetGatewayDevice:1``;
the services it accepts, best first: WANIPConnection:2, WANIPConnection:1, WANPPPConnection:1, then
the legacy ``urn:dslforum-org`` WANPPPConnection:1 and WANIPConnection:1;
``AddAnyPortMapping`` on v2 (the router picks a free port), else ``AddPortMapping``; the description
``tailscale-portmap``; a lease of ``pmpMapLifetimeSec`` (retried as permanent on error 402/725).

The XML comes from a LAN device we do not trust: it is bounded in size and depth and parsed with the
stdlib parser only after refusing any DTD (no entity can be declared, so none is expanded).
"""

from __future__ import annotations

import ipaddress
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit
from xml.sax.saxutils import escape

from pytsnet.wire.errors import ProtocolError
from pytsnet.wire.portmap import PortmapParseError

__all__ = ["IGD1", "MAPPING_DESCRIPTION", "MAX_SSDP", "MAX_XML", "MULTICAST", "SERVICES", "SSDP_PORT",
           "IgdService", "SoapFault", "SsdpResponse", "add_any_port_mapping", "add_port_mapping",
           "delete_port_mapping", "find_services", "get_external_ip", "m_search", "parse_external_ip",
           "parse_soap_response", "parse_ssdp_response", "soap_headers"]

MULTICAST = "239.255.255.250"
SSDP_PORT = 1900
IGD1 = "urn:schemas-upnp-org:device:InternetGatewayDevice:1"
SERVICES = ("urn:schemas-upnp-org:service:WANIPConnection:2",
            "urn:schemas-upnp-org:service:WANIPConnection:1",
            "urn:schemas-upnp-org:service:WANPPPConnection:1",
            # Go's legacy clients (deprecated in 2015, still in the field: Huawei HG531)
            "urn:dslforum-org:service:WANPPPConnection:1",
            "urn:dslforum-org:service:WANIPConnection:1")
MAPPING_DESCRIPTION = "tailscale-portmap"  # Go tsPortMappingDesc: what a router's UI shows
MAX_SSDP = 8192
MAX_XML = 64 << 10
MAX_DEPTH = 32
_SOAP_ENV = "http://schemas.xmlsoap.org/soap/envelope/"


@dataclass(frozen=True)
class SsdpResponse:
    location: str
    server: str
    usn: str
    st: str


@dataclass(frozen=True)
class IgdService:
    service_type: str
    control_url: str  # absolute (resolved against URLBase or the description's location)


class SoapFault(ProtocolError):
    """The router answered a SOAP call with a fault: ``code`` is the UPnPError code (0: none given)."""

    def __init__(self, code: int, description: str) -> None:
        super().__init__(f"UPnP error {code}: {description}")
        self.code = code
        self.description = description


def m_search(st: str) -> bytes:
    """An SSDP search, as Go sends it (MX 2)."""
    return (f"M-SEARCH * HTTP/1.1\r\nHOST: {MULTICAST}:{SSDP_PORT}\r\nST: {st}\r\n"
            'MAN: "ssdp:discover"\r\nMX: 2\r\n\r\n').encode()


def parse_ssdp_response(data: bytes) -> SsdpResponse:
    """An HTTP-over-UDP search reply; it must carry a ``LOCATION`` (the root description)."""
    if len(data) > MAX_SSDP:
        raise PortmapParseError(f"SSDP reply of {len(data)} bytes (at most {MAX_SSDP})")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise PortmapParseError("SSDP reply is not UTF-8") from e
    head, sep, _ = text.partition("\r\n\r\n")
    if not sep:
        raise PortmapParseError("SSDP reply has no end of headers")
    lines = head.split("\r\n")
    status = lines[0].split(" ", 2)
    if len(status) < 2 or not status[0].startswith("HTTP/1.") or status[1] != "200":
        raise PortmapParseError(f"SSDP reply status {lines[0][:40]!r}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if not colon or not name or name != name.strip():
            raise PortmapParseError(f"SSDP header line {line[:40]!r}")
        headers.setdefault(name.lower(), value.strip())
    location = headers.get("location", "")
    parts = urlsplit(location)
    if parts.scheme != "http" or not parts.hostname:
        raise PortmapParseError(f"SSDP LOCATION {location[:80]!r} is not an http URL")
    return SsdpResponse(location, headers.get("server", ""), headers.get("usn", ""), headers.get("st", ""))


def _parse_xml(data: bytes) -> ET.Element:
    """Bounded, DTD-free XML: what a router sends, without entity expansion or a deep tree."""
    if len(data) > MAX_XML:
        raise PortmapParseError(f"XML of {len(data)} bytes (at most {MAX_XML})")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise PortmapParseError("XML is not UTF-8") from e
    upper = text.upper()
    if "<!DOCTYPE" in upper or "<!ENTITY" in upper:
        raise PortmapParseError("XML with a DTD is refused")
    try:
        root = ET.fromstring(text.encode("utf-8"))
    except ET.ParseError as e:
        raise PortmapParseError(f"malformed XML: {e}") from e
    stack = [(root, 1)]
    while stack:
        el, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise PortmapParseError(f"XML deeper than {MAX_DEPTH}")
        stack.extend((child, depth + 1) for child in el)
    return root


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _child_text(el: ET.Element, name: str) -> str:
    for child in el:
        if _local(child.tag) == name:
            return (child.text or "").strip()
    return ""


def find_services(description: bytes, location: str) -> list[IgdService]:
    """The root description's WAN connection services we can map with, best first (Go's order)."""
    root = _parse_xml(description)
    if _local(root.tag) != "root":
        raise PortmapParseError(f"root description's element is {_local(root.tag)!r}")
    base = _child_text(root, "URLBase") or location
    found: list[IgdService] = []
    for el in root.iter():
        if _local(el.tag) != "service":
            continue
        st = _child_text(el, "serviceType")
        control = _child_text(el, "controlURL")
        if st in SERVICES and control:
            url = urljoin(base, control)
            if urlsplit(url).scheme == "http":
                found.append(IgdService(st, url))
    found.sort(key=lambda s: SERVICES.index(s.service_type))
    return found


def _envelope(service_type: str, action: str, args: list[tuple[str, str]]) -> bytes:
    body = "".join(f"<{k}>{escape(v)}</{k}>" for k, v in args)
    return ('<?xml version="1.0"?>\r\n'
            f'<s:Envelope xmlns:s="{_SOAP_ENV}" s:encodingStyle="http://schemas.xmlsoap.org/soap/encoding/">'
            f'<s:Body><u:{action} xmlns:u="{escape(service_type)}">{body}</u:{action}></s:Body>'
            "</s:Envelope>\r\n").encode()


def soap_headers(service_type: str, action: str) -> dict[str, str]:
    return {"Content-Type": 'text/xml; charset="utf-8"', "SOAPAction": f'"{service_type}#{action}"'}


def add_port_mapping(service_type: str, external_port: int, internal_port: int, internal_client: str,
                     lease: int) -> bytes:
    return _envelope(service_type, "AddPortMapping", [
        ("NewRemoteHost", ""), ("NewExternalPort", str(external_port)), ("NewProtocol", "UDP"),
        ("NewInternalPort", str(internal_port)), ("NewInternalClient", internal_client),
        ("NewEnabled", "1"), ("NewPortMappingDescription", MAPPING_DESCRIPTION),
        ("NewLeaseDuration", str(lease))])


def add_any_port_mapping(service_type: str, external_port: int, internal_port: int, internal_client: str,
                         lease: int) -> bytes:
    """IGDv2: the router maps ``external_port`` or, if taken, a free one (``NewReservedPort``)."""
    return _envelope(service_type, "AddAnyPortMapping", [
        ("NewRemoteHost", ""), ("NewExternalPort", str(external_port)), ("NewProtocol", "UDP"),
        ("NewInternalPort", str(internal_port)), ("NewInternalClient", internal_client),
        ("NewEnabled", "1"), ("NewPortMappingDescription", MAPPING_DESCRIPTION),
        ("NewLeaseDuration", str(lease))])


def delete_port_mapping(service_type: str, external_port: int) -> bytes:
    return _envelope(service_type, "DeletePortMapping", [
        ("NewRemoteHost", ""), ("NewExternalPort", str(external_port)), ("NewProtocol", "UDP")])


def get_external_ip(service_type: str) -> bytes:
    return _envelope(service_type, "GetExternalIPAddress", [])


def parse_soap_response(data: bytes, action: str) -> dict[str, str]:
    """The ``<actionResponse>``'s arguments; a fault raises ``SoapFault``."""
    root = _parse_xml(data)
    body = next((c for c in root if _local(c.tag) == "Body"), None)
    if _local(root.tag) != "Envelope" or body is None:
        raise PortmapParseError("SOAP reply has no Envelope/Body")
    for el in body:
        name = _local(el.tag)
        if name == "Fault":
            err = next((e for e in el.iter() if _local(e.tag) == "UPnPError"), None)
            if err is None:
                raise SoapFault(0, _child_text(el, "faultstring")[:200])
            code = _child_text(err, "errorCode")
            return_code = int(code) if code.isdigit() and len(code) < 6 else 0
            raise SoapFault(return_code, _child_text(err, "errorDescription")[:200])
        if name == f"{action}Response":
            return {_local(c.tag): (c.text or "").strip() for c in el}
    raise PortmapParseError(f"SOAP reply has no {action}Response")


def parse_external_ip(fields: dict[str, str]) -> ipaddress.IPv4Address:
    """``GetExternalIPAddress``'s answer: a usable IPv4 address (Go refuses 0.0.0.0 and loopback)."""
    text = fields.get("NewExternalIPAddress", "")
    try:
        ip = ipaddress.IPv4Address(text)
    except ValueError as e:
        raise PortmapParseError(f"external IP {text[:40]!r}") from e
    if ip.is_unspecified or ip.is_loopback:
        raise PortmapParseError(f"unusable external IP {ip}")
    return ip
