"""A flow that half-closed first keeps every byte the peer sent before its FIN, however slowly the app
reads (found by the netstack restart chaos test: downloads were cut short, ending in a clean EOF).

The client sends its request and half-closes; the server answers with nearly a whole receive
buffer and closes. The client's connection reaches TIME_WAIT and its flow actor ends while the app
has not read yet. Nothing may be lost: the flow's one receive buffer (issue 14) is the app's channel,
so every byte is there, readable after the actor is gone, then the EOF.
"""

from __future__ import annotations

import hashlib

import anyio
import pytest

from pytsnet.actors.runtime import ActorSystem
from pytsnet.net.stream import TcpStream
from pytsnet.netstack.config import StackConfig
from pytsnet.testing.netstack_pair import netstack_pair

SERVER, CLIENT, PORT = "10.9.1.1", "10.9.1.2", 7500
SIZE = StackConfig().recv_buffer - 4096  # within the receive window: the app channel's one buffer


@pytest.mark.parametrize("dispatcher", ["thread", "pool"])
def test_slow_reader_gets_every_byte_after_its_flow_reached_time_wait(dispatcher: str) -> None:
    blob = hashlib.shake_256(b"tail").digest(SIZE)
    with ActorSystem("unread-tw", dispatcher=dispatcher) as system:
        server, client = netstack_pair(system, ("ns-s", SERVER), ("ns-c", CLIENT))

        async def main() -> bytes:
            listener = await server.listen_tcp(PORT)
            served: list[TcpStream] = []
            async with anyio.create_task_group() as tg:
                async def serve() -> None:
                    conn = await listener.accept()
                    served.append(conn)
                    with pytest.raises(anyio.EndOfStream):
                        await conn.receive()
                    await conn.send(blob)
                    await conn.aclose()
                tg.start_soon(serve)
                stream = await client.connect_tcp(SERVER, PORT)
                await stream.send_eof()
                # Do not read until both flows ended: our ACK of the server's FIN went out, so every
                # byte and the FIN arrived, and our connection went to TIME_WAIT (its actor is gone).
                with anyio.fail_after(10):
                    while not (served and served[0]._ch.finished and stream._ch.finished):
                        await anyio.sleep(0.01)
                assert len(stream._ch.rx) == SIZE and stream._ch.rx_eof  # all of it, in the one buffer
                got = bytearray()
                while True:
                    try:
                        got += await stream.receive()
                    except anyio.EndOfStream:
                        break
                await stream.aclose()
            return bytes(got)

        got = anyio.run(main)
    assert len(got) == SIZE and got == blob
