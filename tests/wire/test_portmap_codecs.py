# ruff: noqa: E501  (real routers' strings, kept on one line)
"""wire.portmap: NAT-PMP, PCP and UPnP codecs against Go's test vectors (real routers' replies) and
RFC layouts; the parsers under hypothesis raise only typed errors."""

from __future__ import annotations

import contextlib
import ipaddress
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from portmap_go_vectors import GO

from pytsnet.wire.errors import WireError
from pytsnet.wire.portmap import PortmapParseError, natpmp, pcp, upnp

# Go pcp_test.go examplePCPMapResponse: a real router's MAP reply for port 1234, its public external
# address (last 4 bytes) replaced by 203.0.113.246 (RFC 5737): no real host is named in our tests
EXAMPLE_PCP_MAP_RESPONSE = bytes([
    2, 129, 0, 0, 0, 0, 28, 32, 0, 2, 155, 237, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 129, 112, 9, 24, 241, 208,
    251, 45, 157, 76, 10, 188, 17, 0, 0, 0, 4, 210, 4, 210, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 255, 255, 203, 0,
    113, 246])


def test_pcp_map_response_go_vector() -> None:
    r = pcp.parse_map_response(EXAMPLE_PCP_MAP_RESPONSE)
    assert (r.result, r.lifetime, r.protocol) == (0, 7200, pcp.PROTO_UDP)
    assert (str(r.external_ip), r.external_port, r.internal_port) == ("203.0.113.246", 1234, 1234)
    assert r.epoch == 0x29bed


def test_pcp_map_request_layout() -> None:
    nonce = bytes(range(12))
    pkt = pcp.map_request(ipaddress.ip_address("10.77.0.2"), nonce, 41641, 0, 7200)
    assert len(pkt) == 60 and pkt[:2] == b"\x02\x01"
    assert struct.unpack_from("!I", pkt, 4)[0] == 7200
    assert pkt[8:24] == b"\0" * 10 + b"\xff\xff" + bytes([10, 77, 0, 2])
    assert pkt[24:36] == nonce and pkt[36] == 17
    assert struct.unpack_from("!HH", pkt, 40) == (41641, 0)
    assert pkt[44:60] == b"\0" * 10 + b"\xff\xff\0\0\0\0"  # Go's wildcardIP
    # a reply built as Go's buildPCPMapResponse does round-trips
    reply = bytearray(60)
    reply[0], reply[1] = 2, 0x81
    struct.pack_into("!I", reply, 4, 1 << 30)
    reply[24:37] = pkt[24:37]
    reply[40:42] = pkt[40:42]
    struct.pack_into("!H", reply, 42, 4242)
    reply[44:60] = b"\0" * 10 + b"\xff\xff\x7f\0\0\x01"
    r = pcp.parse_map_response(bytes(reply))
    assert (r.nonce, r.external_port, str(r.external_ip), r.lifetime) == (nonce, 4242, "127.0.0.1", 1 << 30)


def test_pcp_announce_and_refusals() -> None:
    assert pcp.announce_request(ipaddress.ip_address("10.0.0.2"))[:2] == b"\x02\x00"
    with pytest.raises(PortmapParseError):
        pcp.parse_map_response(EXAMPLE_PCP_MAP_RESPONSE[:59])
    with pytest.raises(PortmapParseError):
        pcp.parse_response(b"\x00" + EXAMPLE_PCP_MAP_RESPONSE[1:])  # a NAT-PMP version byte
    with pytest.raises(PortmapParseError):
        pcp.parse_response(b"\x02\x01" + EXAMPLE_PCP_MAP_RESPONSE[2:])  # a request


def test_natpmp_requests_and_replies() -> None:
    # Go buildPMPRequestMappingPacket(localPort, prevPort, lifetime)
    assert natpmp.map_udp_request(41641, 0, 7200) == bytes.fromhex("00010000a2a9000000001c20")
    assert natpmp.external_address_request() == b"\x00\x00"
    addr = natpmp.parse_response(bytes.fromhex("0080000000000e10cb00710a"))
    assert addr.result == 0 and str(addr.public_ip) == "203.0.113.10" and addr.epoch == 3600
    m = natpmp.parse_response(bytes.fromhex("0081000000000e10a2a9a2aa00001c20"))
    assert (m.internal_port, m.external_port, m.lifetime) == (41641, 41642, 7200)
    refused = natpmp.parse_response(bytes.fromhex("00810002" + "00" * 12))
    assert refused.result == 2
    assert natpmp.parse_response(bytes.fromhex("008000000000000000000000")).public_ip is None  # 0.0.0.0
    for bad in (b"", b"\x00\x81" + bytes(9), b"\x02" + bytes(15), bytes.fromhex("0081") + bytes(12),
                b"\x00\x01" + bytes(10)):
        with pytest.raises(PortmapParseError):
            natpmp.parse_response(bad)


@pytest.mark.parametrize(("name", "location", "server"), [
    ("googleWifiUPnPDisco", "http://192.168.86.1:5000/rootDesc.xml", "Linux/5.4.0-1034-gcp UPnP/1.1 MiniUPnPd/1.9"),
    ("pfSenseUPnPDisco", "http://192.168.1.1:2189/rootDesc.xml", "FreeBSD/12.2-STABLE UPnP/1.1 MiniUPnPd/2.2.1"),
    ("sagemcomUPnPDisco", "http://192.168.0.1:49153/69692b70/gatedesc0b.xml", ""),
    ("huaweiUPnPDisco", "http://192.168.1.1:49652/49652gatedesc.xml",
     "Linux/4.4.240, UPnP/1.0, Portable SDK for UPnP devices/1.12.1"),
])
def test_ssdp_go_vectors(name: str, location: str, server: str) -> None:
    r = upnp.parse_ssdp_response(GO[name])
    assert (r.location, r.server) == (location, server)
    assert "InternetGatewayDevice" in r.usn


def test_m_search_as_go() -> None:
    assert upnp.m_search("ssdp:all") == (b"M-SEARCH * HTTP/1.1\r\nHOST: 239.255.255.250:1900\r\nST: ssdp:all\r\n"
                                          b'MAN: "ssdp:discover"\r\nMX: 2\r\n\r\n')


@pytest.mark.parametrize(("name", "service", "control"), [
    ("googleWifiRootDescXML", "urn:schemas-upnp-org:service:WANIPConnection:2", "/ctl/IPConn"),
    ("pfSenseRootDescXML", "urn:schemas-upnp-org:service:WANIPConnection:1", "/ctl/IPConn"),
    ("mikrotikRootDescXML", "urn:schemas-upnp-org:service:WANIPConnection:1", "/upnp/control/yomkmsnooi/wanipconn-1"),
    ("huaweiRootDescXML", "urn:dslforum-org:service:WANPPPConnection:1", None),
])
def test_root_description_go_vectors(name: str, service: str, control: str | None) -> None:
    """The service Go's selectBestService picks for each real router comes first."""
    found = upnp.find_services(GO[name], "http://127.0.0.1:5000/rootDesc.xml")
    assert found and found[0].service_type == service
    assert found[0].control_url.startswith("http://127.0.0.1:5000/")
    if control is not None:
        assert found[0].control_url == f"http://127.0.0.1:5000{control}"


def test_soap_go_vectors() -> None:
    assert upnp.parse_soap_response(GO["testAddPortMappingResponse"], "AddPortMapping") == {}
    out = upnp.parse_soap_response(GO["testGetExternalIPAddressResponse"], "GetExternalIPAddress")
    assert str(upnp.parse_external_ip(out)) == "203.0.113.123"
    legacy = upnp.parse_soap_response(GO["testLegacyGetExternalIPAddressResponse"], "GetExternalIPAddress")
    assert legacy == {"NewExternalIPAddress": "203.0.113.123"}
    for name, code in (("testAddPortMappingPermanentLease", 725),
                       ("testAddPortMappingPermanentLease_InvalidArgs", 402)):
        with pytest.raises(upnp.SoapFault) as e:
            upnp.parse_soap_response(GO[name], "AddPortMapping")
        assert e.value.code == code
    with pytest.raises(PortmapParseError):
        upnp.parse_soap_response(GO["testGetStatusInfoResponse"], "AddPortMapping")
    for bad in ("0.0.0.0", "127.0.0.1", "not-an-ip", ""):
        with pytest.raises(PortmapParseError):
            upnp.parse_external_ip({"NewExternalIPAddress": bad})


def test_soap_requests_are_well_formed_and_escaped() -> None:
    st2 = "urn:schemas-upnp-org:service:WANIPConnection:2"
    body = upnp.add_any_port_mapping(st2, 40000, 41641, "10.77.0.2", 7200)
    assert b"<NewPortMappingDescription>tailscale-portmap</NewPortMappingDescription>" in body
    assert b"<NewLeaseDuration>7200</NewLeaseDuration>" in body and b"<NewProtocol>UDP</NewProtocol>" in body
    assert upnp.soap_headers(st2, "AddAnyPortMapping")["SOAPAction"] == f'"{st2}#AddAnyPortMapping"'
    evil = upnp.add_port_mapping(st2, 1, 2, "<x>&", 0)
    assert b"&lt;x&gt;&amp;" in evil
    for b in (upnp.delete_port_mapping(st2, 40000), upnp.get_external_ip(st2), evil):
        assert b.startswith(b'<?xml version="1.0"?>')


BILLION_LAUGHS = (b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;">]>'
                  b"<root>&lol2;</root>")


def test_xml_bounds() -> None:
    """No DTD (so no entity expansion), bounded size and depth, UTF-8 only: typed errors."""
    with pytest.raises(PortmapParseError, match="DTD"):
        upnp.find_services(BILLION_LAUGHS, "http://10.0.0.1/")
    with pytest.raises(PortmapParseError, match="DTD"):
        upnp.find_services(b'<!doctype root SYSTEM "file:///etc/passwd"><root/>', "http://10.0.0.1/")
    with pytest.raises(PortmapParseError):
        upnp.find_services(b"<root>" + b" " * upnp.MAX_XML + b"</root>", "http://10.0.0.1/")
    with pytest.raises(PortmapParseError, match="deeper"):
        upnp.find_services(b"<root>" + b"<a>" * 40 + b"</a>" * 40 + b"</root>", "http://10.0.0.1/")
    with pytest.raises(PortmapParseError):
        upnp.find_services('<?xml version="1.0" encoding="UTF-16"?><root/>'.encode("utf-16"), "http://10.0.0.1/")
    with pytest.raises(PortmapParseError):
        upnp.parse_ssdp_response(b"HTTP/1.1 200 OK\r\nLOCATION: file:///etc\r\n\r\n")


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_binary_parsers_raise_only_typed_errors(data: bytes) -> None:
    for parse in (natpmp.parse_response, pcp.parse_response, pcp.parse_map_response):
        with contextlib.suppress(PortmapParseError):
            parse(data)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.binary(max_size=600), st.text(max_size=300).map(str.encode),
                 st.sampled_from(list(GO.values())).flatmap(
                     lambda v: st.integers(0, len(v)).map(lambda n: v[:n]))))
def test_upnp_parsers_raise_only_typed_errors(data: bytes) -> None:
    for parse in (upnp.parse_ssdp_response,
                  lambda d: upnp.find_services(d, "http://10.0.0.1:5000/"),
                  lambda d: upnp.parse_soap_response(d, "AddPortMapping")):
        with contextlib.suppress(WireError):
            parse(data)
