"""STUN against Go's ``net/stun/stun_test.go`` vectors (responses captured from real servers,
TestParseBindingRequest, TestResponse) and the RFC 5769 sample messages."""

from __future__ import annotations

import contextlib
import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rfc5769_vectors import RFC5769_IPV4, RFC5769_IPV6, RFC5769_REQUEST, RFC_TX

from pytsnet.wire import stun
from pytsnet.wire.errors import ParseError

ip = ipaddress.ip_address

# (name, hex, tx id, addr, port): tailscale/tailscale de9ec7ee net/stun/stun_test.go responseTests.
RESPONSE_TESTS = [
    ("google-1", "0101000c2112a4422360b11e3ec68ffa93e08007002000080001c7866957856f",
     "2360b11e3ec68ffa93e08007", "72.69.33.45", 59028),
    ("google-2", "0101000c2112a442f9f121cbde7d7c75923ce271002000080001c7876957856f",
     "f9f121cbde7d7c75923ce271", "72.69.33.45", 59029),
    ("stun-sipgate-net-10000",
     "010100442112a442482eb64715e8b28eaead644400010008" "0001e4ab4845212d000400080001" "2710d90a449800050008"
     "00012711d9747a8a802000080001c5b96957856f80220010" "566f766964612e6f726720302e393600",
     "482eb64715e8b28eaead6444", "72.69.33.45", 58539),
    ("stun-powervoip-com-3478",
     "010100242112a4427e57966829f444609d1deaa600010008" "0001e9d34845212d0004000800010d964d48a9d4"
     "0005000800010d974d48a9d5",
     "7e57966829f444609d1deaa6", "72.69.33.45", 59859),
    ("in-process-pion-server",
     "010100242112a442ebc2d36ef471217c4f3e308e8022000a" "656e64706f696e7465720000002000080001ce665e12a443"
     "80280004b699bb02010100242112a442",
     "ebc2d36ef471217c4f3e308e", "127.0.0.1", 61300),
    ("stuntman-server-ipv6",
     "010100482112a44206f56685d28af3e69ce341e200010014" "000290ce260200d1b4cfc10038b231fffeef96f6802b0014"
     "00020d962604a880000200d10000000000c5700100200014" "0002b1dc0710a493b23aa785ea38c219620cd714",
     "06f56685d28af3e69ce341e2", "2602:d1:b4cf:c100:38b2:31ff:feef:96f6", 37070),
    ("software-a",
     "010100142112a442ebc2d36ef471217c4f3e308e80220001" "61000000002000080001ce665e12a443",
     "ebc2d36ef471217c4f3e308e", "127.0.0.1", 61300),
    ("software-abc",
     "010100142112a442ebc2d36ef471217c4f3e308e80220003" "61626300002000080001ce665e12a443",
     "ebc2d36ef471217c4f3e308e", "127.0.0.1", 61300),
    ("no-4in6", "010100182112a4424fd5d202dcb37d31fc773306002000140002cd3d2112a4424fd5d202dcb382ce2dc3fcc7",
     "4fd5d202dcb37d31fc773306", "209.180.207.193", 60463),
]  # fmt: skip


@pytest.mark.parametrize("name,data,tx,addr,port", RESPONSE_TESTS, ids=[t[0] for t in RESPONSE_TESTS])
def test_parse_response_go_vectors(name: str, data: str, tx: str, addr: str, port: int) -> None:
    got_tx, (got_addr, got_port) = stun.parse_response(bytes.fromhex(data))
    assert got_tx.hex() == tx
    assert got_addr == ip(addr) and got_port == port




def test_rfc5769_responses() -> None:
    assert stun.parse_response(RFC5769_IPV4) == (RFC_TX, (ip("192.0.2.1"), 32853))
    assert stun.parse_response(RFC5769_IPV6) == (RFC_TX, (ip("2001:db8:1234:5678:11:2233:4455:6677"), 32853))
    stun.check_fingerprint(RFC5769_IPV4)
    stun.check_fingerprint(RFC5769_IPV6)


def test_rfc5769_request_parses_tolerantly() -> None:
    msg = stun.parse_message(RFC5769_REQUEST)
    assert msg.message_type == stun.BINDING_REQUEST and msg.tx_id == RFC_TX
    assert (stun.ATTR_SOFTWARE, b"STUN test client") in msg.attributes
    assert (0x0006, b"evtj:h6vY") in msg.attributes  # USERNAME, 9 bytes padded to 12
    stun.check_fingerprint(RFC5769_REQUEST)
    with pytest.raises(stun.StunParseError, match="non-Tailscale"):
        stun.parse_binding_request(RFC5769_REQUEST)
    bad = bytearray(RFC5769_REQUEST)
    bad[-1] ^= 1
    with pytest.raises(stun.StunParseError, match="FINGERPRINT"):
        stun.check_fingerprint(bytes(bad))


def test_request_layout_and_parse_binding_request() -> None:
    tx = stun.new_tx_id()
    req = stun.request(tx)
    assert len(req) == 40 and req[:8] == bytes.fromhex("000100142112a442") and req[8:20] == tx
    assert req[20:24] == bytes.fromhex("80220008") and req[24:32] == b"tailnode"  # TestAttrOrderForXdpDERP
    assert stun.parse_binding_request(req) == tx
    for i in range(40):  # any flipped bit is caught (the FINGERPRINT covers the transaction ID too)
        bad = bytearray(req)
        bad[i] ^= 0x01
        with pytest.raises(stun.StunParseError):
            stun.parse_binding_request(bytes(bad))


@pytest.mark.parametrize(
    "n,addr,port", [(1, "1.2.3.4", 254), (2, "1.2.3.4", 257), (3, "1::4", 254), (4, "1::4", 257)]
)
def test_response_roundtrip_go(n: int, addr: str, port: int) -> None:
    tx = bytes([n]) * 12
    assert stun.parse_response(stun.response(tx, ip(addr), port)) == (tx, (ip(addr), port))


def test_is_stun_go_cases() -> None:
    c = b"\x21\x12\xa4\x42"
    assert not stun.is_stun(b"")
    assert not stun.is_stun(bytes(20))
    assert not stun.is_stun(bytes(4) + c + bytes(11))
    assert stun.is_stun(bytes(4) + c + bytes(12))
    assert stun.is_stun(bytes(4) + c + bytes(12) + b"foo")
    assert not stun.is_stun(b"\xf0" + bytes(3) + c + bytes(12))
    assert not stun.is_stun(b"\x40" + bytes(3) + c + bytes(12))
    assert stun.is_stun(b"\x20" + bytes(3) + c + bytes(12))


_SEEDS = [bytes.fromhex(t[1]) for t in RESPONSE_TESTS] + [RFC5769_REQUEST, RFC5769_IPV4, RFC5769_IPV6]


@settings(max_examples=400, deadline=None)
@given(
    data=st.one_of(
        st.binary(max_size=200),
        st.binary(max_size=200).map(lambda b: b"\x01\x01" + b[:2] + stun.MAGIC_COOKIE + b[2:]),
        st.tuples(st.sampled_from(_SEEDS), st.integers(0, 200), st.integers(0, 255), st.integers(0, 200)).map(
            lambda t: t[0][: t[1] % (len(t[0]) + 1)] + bytes([t[2]]) + t[0][t[3] % (len(t[0]) + 1) :]
        ),
    )
)
def test_parsers_only_raise_parse_error(data: bytes) -> None:
    parsers = (stun.parse_response, stun.parse_binding_request, stun.parse_message, stun.check_fingerprint)
    for parser in parsers:
        with contextlib.suppress(ParseError):
            parser(data)
