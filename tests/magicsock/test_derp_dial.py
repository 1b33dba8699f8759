"""The DERP client dials on its I/O side: a relay that accepts TCP and never answers the upgrade
does not stop the DerpClient actor from answering asks and queueing (or dropping) sends."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest
from magicsock_nodes import REGION, make_node
from magicsock_relay import MiniDerp

from pytsnet.actors.magicsock.derp_client import MAX_PENDING
from pytsnet.messages.magicsock import DerpSend, DerpSends, DerpStatusRequest
from pytsnet.testing.polling import wait_until
from pytsnet.wire.keys import NodePrivate


class SilentServer:
    """Accepts TCP connections and never writes, or answers each with ``answer`` and closes."""

    def __init__(self, answer: bytes = b"") -> None:
        self.answer = answer
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.sock.getsockname()[1]
        self.accepted: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted.append(conn)
            if self.answer:
                conn.recv(4096)
                conn.sendall(self.answer)
                conn.close()

    def close(self) -> None:
        self.sock.close()
        for c in self.accepted:
            c.close()


@pytest.fixture
def silent() -> Iterator[SilentServer]:
    s = SilentServer()
    yield s
    s.close()


def test_actor_answers_while_a_dial_hangs(silent: SilentServer) -> None:
    node = make_node("silent", silent.port, 1, advertise=False)
    try:
        wait_until(lambda: silent.accepted, timeout=5, what="the home region's dial reached the server")
        ref = node.system.lookup(node.config.derp_name(REGION))
        assert ref is not None
        peer = NodePrivate.generate().public().to_text()
        for i in range(3):  # each ask is answered at once although the dial waits for its 101
            t0 = time.monotonic()
            st = ref.ask(DerpStatusRequest(), timeout=1.0)
            assert time.monotonic() - t0 < 1.0
            assert not st.connected and st.connects == 0
            ref.tell(DerpSends(peer=peer, datas=tuple(bytes([i]) * 10 for _ in range(MAX_PENDING))))
            ref.tell(DerpSend(peer=peer, data=b"x"))
        st = ref.ask(DerpStatusRequest(), timeout=1.0)
        # three bursts of MAX_PENDING + 3 singles into a queue of MAX_PENDING: the oldest dropped, counted
        assert st.dropped == 3 * MAX_PENDING + 3 - MAX_PENDING
        assert len(silent.accepted) == 1  # sends wait for the dial under way, they do not start more
    finally:
        node.system.shutdown()


def test_a_hung_dial_gives_up_and_retries(silent: SilentServer, monkeypatch: pytest.MonkeyPatch) -> None:
    import pytsnet.actors.magicsock.derp_link as derp_link

    monkeypatch.setattr(derp_link, "DIAL_DEADLINE", 0.5)
    node = make_node("silent-retry", silent.port, 1, advertise=False)
    try:
        wait_until(lambda: len(silent.accepted) >= 2, timeout=10,
                   what="a second dial after the first timed out")
        st = node.derp_status()
        assert not st.connected and "TimeoutError" in st.last_error
    finally:
        node.system.shutdown()


def test_a_refused_upgrade_is_a_failed_dial_with_its_status() -> None:
    server = SilentServer(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
    node = make_node("refused", server.port, 1, advertise=False)
    try:
        wait_until(lambda: len(server.accepted) >= 5, timeout=15, what="retries after the refusal")
        st = node.derp_status()
        assert not st.connected and st.connects == 0 and "HTTP 403 Forbidden" in st.last_error
        ref = node.system.lookup(node.config.derp_name(REGION))
        assert ref is not None
        assert len(ref._cell.io_loops) <= 2  # each dial's finished io-loop is let go, not kept per retry
    finally:
        node.system.shutdown()
        server.close()


def test_dial_then_connect_to_a_real_relay() -> None:
    relay = MiniDerp()
    node = make_node("dialer", relay.port, 1, advertise=False)
    try:
        wait_until(lambda: node.derp_status().connected, timeout=10, what="DERP handshake done")
        assert node.derp_status().connects == 1
    finally:
        node.system.shutdown()
        relay.close()
