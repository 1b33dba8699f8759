"""The NAT lab's reflectors as an RFC 5780 STUN server (``pytsnet.testing.reflectors``), seen from
node namespaces with plain UDP sockets.

From a public node: a Binding request without CHANGE-REQUEST is answered from the socket it went
to, one with CHANGE-REQUEST from the grid's other port / other IP / both, each answer naming that
origin (RESPONSE-ORIGIN), the grid's alternate (OTHER-ADDRESS) and the node's address (XOR-MAPPED-
ADDRESS and MAPPED-ADDRESS). Behind NATs the answers show the filtering as miniupnpd's STUN test
reads it: a full-cone (``easy``) NAT lets all four in, an address-and-port-dependent one only the
unchanged answer. The ``who``/``via`` protocol keeps working beside it; bad STUN is counted, unanswered.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterator

import pytest

from pytsnet.testing.natlab import INTERNET_ADDR, REFLECTOR_ADDRS, SECOND_ADDR, LanSpec, NatLab, nat_lab
from pytsnet.testing.netns import Netns, netns_available
from pytsnet.wire import stun

pytestmark = [pytest.mark.root]

SERVER = REFLECTOR_ADDRS[0]  # (INTERNET_ADDR, 3478)
OTHER = (SECOND_ADDR, 3479)
WAIT = 1.0
# (change IP, change port) -> the socket that must answer a request sent to SERVER
CASES = {(False, False): SERVER, (False, True): (INTERNET_ADDR, 3479), (True, False): (SECOND_ADDR, 3478),
         (True, True): OTHER}


@pytest.fixture(scope="module")
def lab() -> Iterator[NatLab]:
    if reason := netns_available():
        pytest.skip(reason)
    with nat_lab(LanSpec("pub", "none"), LanSpec("easy", "easy"), LanSpec("filtering", "filtering")) as lab:
        yield lab


def _socket(ns: Netns) -> socket.socket:
    def make() -> socket.socket:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("0.0.0.0", 0))
        s.settimeout(WAIT)
        return s

    return ns.call(make)


def _ask(s: socket.socket, req: bytes, to: tuple[str, int] = SERVER) -> tuple[bytes, tuple[str, int]] | None:
    s.sendto(req, to)
    try:
        data, src = s.recvfrom(2048)
    except TimeoutError:
        return None
    return data, (src[0], src[1])


@pytest.mark.parametrize(("change_ip", "change_port"), list(CASES))
def test_change_request_is_answered_from_the_other_ip_and_port(lab: NatLab, change_ip: bool,
                                                               change_port: bool) -> None:
    pub = lab["pub"]
    with _socket(pub.node) as s:
        tx = stun.new_tx_id()
        got = _ask(s, stun.change_request(tx, change_ip=change_ip, change_port=change_port))
        assert got is not None, "no answer"
        data, src = got
        want = CASES[(change_ip, change_port)]
        assert src == want
        me = (ipaddress.ip_address(pub.node_addrs[0]), s.getsockname()[1])
        ip = ipaddress.ip_address
        assert stun.parse_response(data) == (tx, me)
        assert stun.address_attributes(data) == {
            stun.ATTR_XOR_MAPPED_ADDRESS: me, stun.ATTR_MAPPED_ADDRESS: me,
            stun.ATTR_RESPONSE_ORIGIN: (ip(want[0]), want[1]),
            stun.ATTR_OTHER_ADDRESS: (ip(OTHER[0]), OTHER[1])}


def test_tailscale_request_and_who_via_still_answered(lab: NatLab) -> None:
    pub = lab["pub"]
    with _socket(pub.node) as s:
        tx = stun.new_tx_id()
        got = _ask(s, stun.request(tx), to=OTHER)  # Go's/our own request: from where it went
        assert got is not None and got[1] == OTHER
        port = s.getsockname()[1]
        assert stun.parse_response(got[0]) == (tx, (ipaddress.ip_address(pub.node_addrs[0]), port))
        me = f"{pub.node_addrs[0]}:{port}".encode()
        assert _ask(s, b"who") == (me, SERVER)
        assert _ask(s, f"via {SECOND_ADDR} 3478".encode()) == (me, (SECOND_ADDR, 3478))


def test_bad_stun_is_counted_not_answered(lab: NatLab) -> None:
    before = lab.reflectors.dropped
    tx = bytes(12)
    not_request = stun.server_response(tx, (ipaddress.ip_address("192.0.2.1"), 1))
    bad_fp = bytearray(stun.request(tx))
    bad_fp[-1] ^= 1
    with _socket(lab["pub"].node) as s:
        for junk in (not_request, bytes(bad_fp), b"neither who nor via"):
            assert _ask(s, junk) is None
    assert lab.reflectors.dropped == before + 3


@pytest.mark.parametrize(("lan", "answered"), [
    ("easy", set(CASES)),  # endpoint-independent filtering: every answer gets in (a "full cone")
    ("filtering", {(False, False)}),  # address-and-port-dependent: only the unchanged one
])
def test_nat_filtering_seen_as_miniupnpds_stun_test_sees_it(lab: NatLab, lan: str,
                                                             answered: set[tuple[bool, bool]]) -> None:
    """miniupnpd's four requests from four sockets (a fresh mapping each): which answers arrive."""
    got: set[tuple[bool, bool]] = set()
    for case, origin in CASES.items():
        with _socket(lab[lan].node) as s:
            tx = stun.new_tx_id()
            answer = _ask(s, stun.change_request(tx, change_ip=case[0], change_port=case[1]))
            if answer is not None:
                assert answer[1] == origin
                mapped = stun.parse_response(answer[0])[1]
                assert (str(mapped[0]), mapped[1]) == (lab[lan].wan_addr, s.getsockname()[1])  # port kept
                got.add(case)
    assert got == answered
