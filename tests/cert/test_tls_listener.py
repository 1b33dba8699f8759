"""``listen_tls``'s listener hands each connection over at once and terminates TLS on first use (Go's
``tls.NewListener``): a client that stalls its handshake holds up only its own connection, never the
next client's ``accept``; when it runs out of time it is closed and counted."""

from __future__ import annotations

import ssl
from pathlib import Path

import anyio
import trustme
from anyio.abc import ByteStream
from anyio.streams.tls import TLSStream

from pytsnet.cert.listener import TlsListener
from pytsnet.testing.polling import wait_until
from pytsnet.testing.tailnet import local_tailnet

DOMAIN = "web.tls-listener.test"
PORT = 8443
TIMEOUT = 8.0  # the stalled client's handshake budget: the good client must be served well within it


def test_a_stalled_handshake_does_not_hold_up_the_next_accept(tmp_path: Path) -> None:
    ca = trustme.CA()
    cert = ca.issue_cert(DOMAIN)
    pair = (b"".join(p.bytes() for p in cert.cert_chain_pems), cert.private_key_pem.bytes())
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)

    async def provide(domain: str) -> tuple[bytes, bytes]:
        assert domain == DOMAIN
        return pair

    with local_tailnet(tmp_path, ["web", "app"]) as tn:
        web, app = tn["web"], tn["app"]

        async def main() -> None:
            lst = TlsListener(await web.listen(PORT), DOMAIN, provide, handshake_timeout=TIMEOUT)
            broken: list[str] = []

            async def serve(s: ByteStream) -> None:
                try:
                    got = await s.receive()
                    await s.send(b"ok:" + got)
                except anyio.BrokenResourceError as e:
                    broken.append(str(e))
                finally:
                    await s.aclose()

            async with lst, anyio.create_task_group() as tg:
                async def server() -> None:
                    while True:
                        tg.start_soon(serve, await lst.accept())

                tg.start_soon(server)
                stalled = await app.tcp_connect(tn.ip(web), PORT, timeout=10)
                await stalled.send(b"\x16\x03\x01\x00\x40\x01")  # a ClientHello record that never completes
                with anyio.fail_after(TIMEOUT - 2):  # well inside the stalled one's budget
                    raw = await app.tcp_connect(tn.ip(web), PORT, timeout=10)
                    good = await TLSStream.wrap(raw, hostname=DOMAIN, ssl_context=client_ctx,
                                                standard_compatible=False)
                    await good.send(b"hello")
                    assert await good.receive() == b"ok:hello"
                assert lst.handshake_failures == 0 and not broken  # the stalled one still waits
                await anyio.to_thread.run_sync(
                    lambda: wait_until(lambda: lst.handshake_failures == 1, 3 * TIMEOUT, "stalled one cut"))
                assert len(broken) == 1 and "TLS handshake" in broken[0]
                await good.aclose()
                await stalled.aclose()
                tg.cancel_scope.cancel()

        anyio.run(main)
