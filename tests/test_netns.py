import socket

from pytsnet.testing.netns import Netns


def test_namespace_is_isolated_and_entered_sockets_live_there(netns: Netns) -> None:
    netns.assert_no_route_out()
    srv = netns.call(lambda: socket.create_server(("127.0.0.1", 0)))
    port = srv.getsockname()[1]
    # The listener is in the namespace: the host's loopback cannot reach it.
    out = netns.run(["python3", "-c",
                     f"import socket; socket.create_connection(('127.0.0.1', {port}), 2); print('ok')"])
    assert out.stdout.strip() == "ok"
    srv.close()
