import ipaddress

from hypothesis import given
from hypothesis import strategies as st

from pytsnet.netstack.checksum import checksum, ones_sum, pseudo_header_sum


def reference(data: bytes, initial: int = 0) -> int:
    if len(data) % 2:
        data += b"\x00"
    s = initial
    for i in range(0, len(data), 2):
        s += (data[i] << 8) | data[i + 1]
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def test_rfc1071_example() -> None:
    # RFC 1071 §3: words 0001 f203 f4f5 f6f7 sum to ddf2 (folded), checksum 220d.
    assert ones_sum(bytes.fromhex("0001f203f4f5f6f7")) == 0xDDF2
    assert checksum(bytes.fromhex("0001f203f4f5f6f7")) == 0x220D


def test_known_ipv4_header() -> None:
    # A classic IPv4 header example; its checksum field is b861.
    hdr = bytes.fromhex("450000730000400040110000c0a80001c0a800c7")
    assert checksum(hdr) == 0xB861


@given(st.binary(max_size=3000), st.integers(0, 0xFFFF))
def test_matches_word_by_word_reference(data: bytes, initial: int) -> None:
    assert checksum(data, initial) == reference(data, initial)


def test_pseudo_header_v4() -> None:
    s = pseudo_header_sum(ipaddress.IPv4Address("10.0.0.1"), ipaddress.IPv4Address("10.0.0.2"), 6, 20)
    assert s == ones_sum(bytes.fromhex("0a0000010a000002000600 14".replace(" ", "")))
