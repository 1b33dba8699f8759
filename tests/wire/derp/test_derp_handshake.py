"""ClientInfo/ServerInfo boxes and the client↔server session state machines, driven against each other."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pytsnet.wire.derp import frames as f
from pytsnet.wire.derp.client_info import (
    ClientInfo,
    ServerInfo,
    open_client_info,
    open_server_info,
    seal_client_info,
    seal_server_info,
)
from pytsnet.wire.derp.errors import DerpCryptoError, DerpParseError, DerpProtocolError, DerpTimeoutError
from pytsnet.wire.derp.handshake import (
    ClientAuthenticated,
    ClientConnection,
    FrameReceived,
    ServerConnection,
    ServerInfoReceived,
    ServerKeyReceived,
    State,
)
from pytsnet.wire.errors import CryptoError, WireError
from pytsnet.wire.keys import NodePrivate

SERVER = NodePrivate.from_raw(bytes([1] * 32))
CLIENT = NodePrivate.from_raw(bytes([2] * 32))
OTHER = NodePrivate.from_raw(bytes([3] * 32))


def test_client_info_json_matches_go_field_names() -> None:
    assert ClientInfo().to_json() == b'{"version":2,"CanAckPings":true}'
    mesh = bytes(range(32))
    j = json.loads(ClientInfo(mesh_key=mesh, is_prober=True, app_name="x").to_json())
    assert j == {"meshKey": mesh.hex(), "version": 2, "CanAckPings": True, "IsProber": True, "AppName": "x"}
    assert ClientInfo.from_json(b'{"Version":2,"canackpings":true}') == ClientInfo()  # Go: case-insensitive
    assert ServerInfo().to_json() == b'{"version":2}'
    si = ServerInfo(2, 1000, 2000)
    assert ServerInfo.from_json(si.to_json()) == si


def test_boxes_open_with_right_keys_only() -> None:
    frame = seal_client_info(CLIENT, SERVER.public(), ClientInfo(app_name="t"))
    assert frame.client_key == CLIENT.public()
    assert open_client_info(SERVER, frame).app_name == "t"
    with pytest.raises(CryptoError):
        open_client_info(OTHER, frame)  # wrong server key
    with pytest.raises(DerpCryptoError):  # forged sender: box made by OTHER, claims CLIENT
        forged = seal_client_info(OTHER, SERVER.public(), ClientInfo())
        open_client_info(SERVER, f.ClientInfoFrame(CLIENT.public(), forged.sealed))
    tampered = bytearray(frame.sealed)
    tampered[-1] ^= 1
    with pytest.raises(DerpCryptoError):
        open_client_info(SERVER, f.ClientInfoFrame(frame.client_key, bytes(tampered)))

    sframe = seal_server_info(SERVER, CLIENT.public(), ServerInfo())
    assert open_server_info(CLIENT, SERVER.public(), sframe) == ServerInfo()
    with pytest.raises(DerpCryptoError):
        open_server_info(OTHER, SERVER.public(), sframe)
    with pytest.raises(DerpCryptoError):
        open_server_info(CLIENT, OTHER.public(), sframe)


@pytest.mark.parametrize("body", [b"not json", b"[1]", b'{"version":"2"}', b'{"CanAckPings":1}', b"[" * 5000])
def test_bad_client_info_json_is_parse_error(body: bytes) -> None:
    from pytsnet.wire.derp.client_info import seal

    frame = f.ClientInfoFrame(CLIENT.public(), seal(CLIENT, SERVER.public(), body))
    with pytest.raises(DerpParseError):
        open_client_info(SERVER, frame)


def _pump(a: ClientConnection | ServerConnection, b: ClientConnection | ServerConnection, now: float) -> list:
    return b.receive_data(a.data_to_send(), now)


def test_client_and_server_interoperate() -> None:
    srv = ServerConnection(SERVER, now=0.0, jitter=lambda: 0.0)
    cli = ClientConnection(CLIENT, now=0.0, info=ClientInfo(app_name="pytsnet"))
    assert cli.state is State.AWAIT_SERVER_KEY
    with pytest.raises(DerpProtocolError):
        cli.send_packet(OTHER.public(), b"too early")

    assert _pump(srv, cli, 0.1) == [ServerKeyReceived(SERVER.public())]
    cli.send_packet(OTHER.public(), b"early packet")  # allowed before ServerInfo, as in Go
    (auth, early) = _pump(cli, srv, 0.2)
    assert isinstance(auth, ClientAuthenticated)
    assert auth.client_key == CLIENT.public() and auth.info.app_name == "pytsnet" and not auth.is_mesh_peer
    assert early == FrameReceived(f.SendPacket(OTHER.public(), b"early packet"))

    srv.accept(now=0.3, info=ServerInfo(token_bucket_bytes_per_second=1 << 20))
    (ev,) = _pump(srv, cli, 0.4)
    assert isinstance(ev, ServerInfoReceived) and ev.info.token_bucket_bytes_per_second == 1 << 20
    assert cli.state is State.CONNECTED and srv.state is State.CONNECTED

    srv.send_packet(OTHER.public(), b"payload")
    srv.send_frame(f.Ping(b"pingping"))
    evs = _pump(srv, cli, 1.0)
    assert evs == [
        FrameReceived(f.RecvPacket(OTHER.public(), b"payload")),
        FrameReceived(f.Ping(b"pingping")),
    ]
    cli.note_preferred(True)
    evs = _pump(cli, srv, 1.1)  # the client's auto-Pong and the NotePreferred
    assert evs == [FrameReceived(f.Pong(b"pingping")), FrameReceived(f.NotePreferred(True))]


def test_fast_start_ignores_server_key() -> None:
    srv = ServerConnection(SERVER, now=0.0)
    cli = ClientConnection(CLIENT, now=0.0, server_key=SERVER.public())
    assert cli.state is State.AWAIT_SERVER_INFO
    assert isinstance(_pump(cli, srv, 0.0)[0], ClientAuthenticated)
    srv.accept(now=0.0)
    assert [type(e) for e in _pump(srv, cli, 0.0)] == [ServerInfoReceived]  # ServerKey skipped


def test_wrong_server_key_fails_with_crypto_error() -> None:
    srv = ServerConnection(SERVER, now=0.0)
    cli = ClientConnection(CLIENT, now=0.0, server_key=OTHER.public())  # pinned the wrong key
    with pytest.raises(CryptoError):
        _pump(cli, srv, 0.0)
    assert srv.state is State.CLOSED
    with pytest.raises(DerpProtocolError):
        srv.receive_data(b"", 0.0)


def test_mesh_frames_need_the_mesh_key() -> None:
    mesh = bytes([9] * 32)
    for client_mesh, allowed in ((mesh, True), (None, False), (bytes(32 * [8]), False)):
        srv = ServerConnection(SERVER, now=0.0, mesh_key=mesh)
        cli = ClientConnection(CLIENT, now=0.0, info=ClientInfo(mesh_key=client_mesh))
        _pump(srv, cli, 0.0)
        (auth,) = _pump(cli, srv, 0.0)
        assert auth.is_mesh_peer is allowed
        srv.accept(0.0)
        cli.send_frame(f.WatchConns())
        if allowed:
            assert _pump(cli, srv, 0.0) == [FrameReceived(f.WatchConns())]
        else:
            with pytest.raises(DerpProtocolError):
                _pump(cli, srv, 0.0)


def test_server_timers() -> None:
    srv = ServerConnection(SERVER, now=100.0, jitter=lambda: 2.5)
    assert srv.next_deadline() == 110.0
    srv.handle_timeout(109.9)
    with pytest.raises(DerpTimeoutError):
        srv.handle_timeout(110.0)

    srv = ServerConnection(SERVER, now=0.0, jitter=lambda: 2.5)
    cli = ClientConnection(CLIENT, now=0.0)
    _pump(srv, cli, 0.0)
    _pump(cli, srv, 1.0)
    srv.accept(now=1.0)
    srv.data_to_send()
    assert srv.next_deadline() == 63.5
    srv.handle_timeout(63.0)
    assert srv.data_to_send() == b""
    srv.handle_timeout(63.5)
    assert srv.data_to_send() == f.encode(f.KeepAlive())
    assert srv.next_deadline() == 126.0


def test_client_read_deadline() -> None:
    srv = ServerConnection(SERVER, now=0.0)
    cli = ClientConnection(CLIENT, now=0.0)
    _pump(srv, cli, 5.0)
    assert cli.next_deadline() == 125.0
    cli.handle_timeout(124.0)
    with pytest.raises(DerpTimeoutError):
        cli.handle_timeout(125.0)
    assert cli.state is State.CLOSED


def test_client_drops_short_frames_like_go() -> None:
    cli = ClientConnection(CLIENT, now=0.0, server_key=SERVER.public())
    evs = cli.receive_data(f.encode_header(0x05, 3) + b"abc" + f.encode(f.KeepAlive()), 0.0)
    assert evs == [FrameReceived(f.KeepAlive())]


def test_first_frame_must_be_server_key_or_client_info() -> None:
    with pytest.raises(DerpProtocolError):
        ClientConnection(CLIENT, now=0.0).receive_data(f.encode(f.KeepAlive()), 0.0)
    with pytest.raises(DerpProtocolError):
        ServerConnection(SERVER, now=0.0).receive_data(f.encode(f.SendPacket(CLIENT.public(), b"")), 0.0)


def _handshake_bytes() -> tuple[bytes, bytes]:
    srv = ServerConnection(SERVER, now=0.0)
    cli = ClientConnection(CLIENT, now=0.0, info=ClientInfo(app_name="fuzz"))
    to_cli = srv.data_to_send()
    cli.receive_data(to_cli, 0.0)
    cli.send_packet(OTHER.public(), b"data")
    to_srv = cli.data_to_send()
    srv.receive_data(to_srv, 0.0)
    srv.accept(0.0)
    srv.send_packet(OTHER.public(), b"x")
    return to_cli + srv.data_to_send(), to_srv


_TO_CLI, _TO_SRV = _handshake_bytes()


def _mutate(base: bytes) -> st.SearchStrategy[bytes]:
    return st.lists(st.tuples(st.integers(0, len(base) - 1), st.integers(0, 255)), max_size=4).map(
        lambda ms: _apply(base, ms)
    )


def _apply(base: bytes, ms: list[tuple[int, int]]) -> bytes:
    b = bytearray(base)
    for i, v in ms:
        b[i] = v
    return bytes(b)


@settings(max_examples=200, deadline=None)
@given(data=st.one_of(st.binary(max_size=300), _mutate(_TO_CLI)))
def test_client_state_machine_only_raises_typed_errors(data: bytes) -> None:
    cli = ClientConnection(CLIENT, now=0.0)
    try:
        cli.receive_data(data, 0.0)
    except WireError:
        assert cli.state is State.CLOSED


@settings(max_examples=200, deadline=None)
@given(data=st.one_of(st.binary(max_size=300), _mutate(_TO_SRV)))
def test_server_state_machine_only_raises_typed_errors(data: bytes) -> None:
    srv = ServerConnection(SERVER, now=0.0)
    try:
        srv.receive_data(data, 0.0)
    except WireError:
        assert srv.state is State.CLOSED
