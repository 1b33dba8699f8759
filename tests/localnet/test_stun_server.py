"""The STUN server over real UDP on loopback: Tailscale Binding requests get XOR-MAPPED-ADDRESS."""

from __future__ import annotations

import asyncio
import ipaddress
import os
import socket

from pytsnet.localnet.stun_server import StunServer
from pytsnet.wire import stun


def _exchange(port: int, payloads: list[bytes], expect_reply: bool = True) -> tuple[bytes | None, tuple]:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        s.settimeout(2 if expect_reply else 0.3)
        for p in payloads:
            s.sendto(p, ("127.0.0.1", port))
        try:
            reply = s.recv(2048)
        except TimeoutError:
            reply = None
        return reply, s.getsockname()


def _with_server(fn) -> StunServer:
    async def main() -> StunServer:
        srv = StunServer()
        await srv.start()
        try:
            await asyncio.get_running_loop().run_in_executor(None, fn, srv)
        finally:
            srv.close()
        return srv

    return asyncio.run(main())


def test_binding_request_answered_with_mapped_address() -> None:
    def check(srv: StunServer) -> None:
        tx = stun.new_tx_id()
        reply, (ip, port) = _exchange(srv.port, [stun.request(tx)])
        assert reply is not None
        got_tx, (addr, mapped_port) = stun.parse_response(reply)
        assert got_tx == tx and addr == ipaddress.IPv4Address(ip) and mapped_port == port
        # XOR-MAPPED-ADDRESS specifically (not the MAPPED-ADDRESS fallback)
        assert any(t == stun.ATTR_XOR_MAPPED_ADDRESS for t, _ in stun.parse_message(reply).attributes)

    srv = _with_server(check)
    assert srv.stats.requests == 1 and srv.stats.bad == 0


def test_garbage_is_ignored_and_the_server_keeps_answering() -> None:
    def check(srv: StunServer) -> None:
        tx = stun.new_tx_id()
        req = stun.request(tx)
        bad_fp = req[:-1] + bytes([req[-1] ^ 1])
        garbage = [b"", os.urandom(1), os.urandom(20), os.urandom(1400), bad_fp, req + b"trailing"]
        reply, _ = _exchange(srv.port, garbage, expect_reply=False)
        assert reply is None
        reply, _ = _exchange(srv.port, [stun.request(tx)])
        assert reply is not None and stun.parse_response(reply)[0] == tx

    srv = _with_server(check)
    assert srv.stats.bad == 6 and srv.stats.requests == 1
