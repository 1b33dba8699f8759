"""Hypothesis: random and mutated bytes into every controlbase parser; only typed wire errors escape."""

from __future__ import annotations

import contextlib

from hypothesis import given, settings
from hypothesis import strategies as st

from pytsnet.wire.controlbase import (
    ClientHandshake,
    ClientStream,
    Conn,
    EarlyPayloadReader,
    ErrorMessage,
    InitiationMessage,
    ResponseMessage,
    accept_initiation,
)
from pytsnet.wire.errors import WireError
from pytsnet.wire.keys import MachinePrivate, MachinePublic

MACHINE = MachinePrivate.generate()
CONTROL = MachinePrivate.generate()
VALID_INIT = ClientHandshake(MACHINE, CONTROL.public(), 145).initiation


def mutate(base: bytes) -> st.SearchStrategy[bytes]:
    def apply(edits: list[tuple[int, int]], cut: int) -> bytes:
        b = bytearray(base)
        for pos, val in edits:
            b[pos % len(b)] = val
        return bytes(b[:cut])
    return st.builds(apply, st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=4),
                     st.integers(0, len(base) + 1))


def only_typed(fn, data: bytes) -> None:  # type: ignore[no-untyped-def]
    with contextlib.suppress(WireError):
        fn(data)


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.binary(max_size=200), mutate(VALID_INIT)))
def test_initiation_parsers(data: bytes) -> None:
    only_typed(InitiationMessage.parse, data)
    only_typed(lambda d: accept_initiation(d, CONTROL), data)


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_response_parsers(draw: st.DataObject) -> None:
    client = ClientHandshake(MACHINE, CONTROL.public(), 145)
    resp = accept_initiation(client.initiation, CONTROL).response
    data = draw.draw(st.one_of(st.binary(max_size=120), mutate(resp)))
    only_typed(ResponseMessage.parse, data)
    only_typed(ErrorMessage.parse, data)
    only_typed(client.receive_response, data)
    stream = ClientStream(ClientHandshake(MACHINE, CONTROL.public(), 145))
    only_typed(stream.receive_data, data)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=5000), max_size=4), st.integers(0, 3))
def test_record_decoder(chunks: list[bytes], valid: int) -> None:
    peer = MachinePublic.from_raw(bytes(32))
    tx = Conn(send_key=b"k" * 32, receive_key=b"r" * 32, protocol_version=1, peer=peer, handshake_hash=b"")
    rx = Conn(send_key=b"r" * 32, receive_key=b"k" * 32, protocol_version=1, peer=peer, handshake_hash=b"")
    feed = [tx.send(b"ok" * valid), *chunks]
    for chunk in feed:
        try:
            rx.receive_data(chunk)
        except WireError:
            break
        assert rx.buffered < 4096


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=64), max_size=5))
def test_early_payload_reader(chunks: list[bytes]) -> None:
    reader = EarlyPayloadReader()
    for chunk in [b"\xff\xff\xffTS", *chunks]:
        only_typed(reader.feed, chunk)
