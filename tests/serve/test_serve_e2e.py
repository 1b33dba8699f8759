"""Serve end to end on a local tailnet: ``srv`` serves, ``cli`` (another Python node) is the client.

Every handler type (TCP forward, TLS-terminated TCP forward, and the web handlers Proxy, Text, Path,
Redirect over HTTP and HTTPS) is reached through the tailnet; the fail-closed answers (404, 502 and
the connection dropped), Go's identity headers, a runtime change that leaves an open connection
alone, the ETag rules (facade and LocalAPI) and the typed errors for configs that cannot be served.
"""

from __future__ import annotations

import json
import socket
import ssl
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from pytsnet import ActorDevice
from pytsnet.errors import LocalApiError, ServeConfigInvalid, ServeETagMismatch
from pytsnet.localapi.server import LocalRequest
from pytsnet.serve import (
    HTTPHandler,
    ServeConfig,
    TCPPortHandler,
    WebServerConfig,
    etag,
    parse_serve_config,
    to_go_json,
)
from pytsnet.testing.polling import wait_until
from pytsnet.testing.serve import TestCA, dead_port, echo_server, mirror_backend
from pytsnet.testing.streams import recv_exact
from pytsnet.testing.tailnet import Tailnet


def fqdn(dev: ActorDevice) -> str:
    return dev.state.name.rstrip(".")


def test_tcp_forward(tn: Tailnet, srv: ActorDevice) -> None:
    with echo_server() as port:
        srv.set_serve_config_blocking(ServeConfig(TCP={7001: TCPPortHandler(TCPForward=f"127.0.0.1:{port}")}))
        with tn["cli"].tcp_connect_blocking("srv", 7001, timeout=20) as sock:
            sock.settimeout(20)
            payload = bytes(range(256)) * 512  # 128 KiB: more than one window
            sock.sendall(payload)
            assert recv_exact(sock, len(payload)) == payload


def test_tls_terminated_tcp_forward(tn: Tailnet, srv: ActorDevice, ca: TestCA) -> None:
    name = fqdn(srv)
    with echo_server() as port:
        srv.set_serve_config_blocking(ServeConfig(TCP={7002: TCPPortHandler(TCPForward=f"127.0.0.1:{port}",
                                                                            TerminateTLS=name)}))
        raw = tn["cli"].connect_socket("srv", 7002, timeout=20)
        raw.settimeout(20)
        with ca.client_context().wrap_socket(raw, server_hostname=name) as tls:
            assert tls.getpeercert() is not None  # verified against the CA: a real certificate chain
            tls.sendall(b"hello through TLS")
            assert recv_exact(tls, 17) == b"hello through TLS"
    assert name in ca.issued


def test_tls_terminated_forward_delivers_a_closing_backends_whole_answer(tn: Tailnet, srv: ActorDevice,
                                                                         ca: TestCA) -> None:
    """A backend that answers and closes (an HTTP/1.0 server): the answer's tail, still in flight when
    the backend's end ends the session, reaches the client, then a clean end (no reset). Regression:
    the session shut the socket ``wrap_socket`` had detached, ended as an error and reset the flow."""
    answer = bytes(range(256)) * 1024  # 256 KiB: its tail is still queued when the backend closes
    with socket.create_server(("127.0.0.1", 0)) as backend:
        name = fqdn(srv)
        srv.set_serve_config_blocking(ServeConfig(TCP={7003: TCPPortHandler(
            TCPForward=f"127.0.0.1:{backend.getsockname()[1]}", TerminateTLS=name)}))
        raw = tn["cli"].connect_socket("srv", 7003, timeout=20)
        raw.settimeout(20)
        with ca.client_context().wrap_socket(raw, server_hostname=name) as tls:
            tls.sendall(b"GET / HTTP/1.0\r\n\r\n")
            backend.settimeout(20)
            conn, _ = backend.accept()
            with conn:
                assert conn.recv(100).startswith(b"GET / ")
                conn.sendall(answer)
            got = recv_exact(tls, len(answer) + 1)  # + 1: then the end, which must not be a reset
            assert len(got) == len(answer) and got == answer


def test_tls_contexts_shared_per_pair_and_renewed(tn: Tailnet, srv: ActorDevice, ca: TestCA,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Two connections while the pair is the same share one context (the pair is loaded once); a
    renewed pair is loaded once and served from the next connection on (``actors/serve/certs``)."""
    from cryptography import x509

    from pytsnet.actors.cert import tls as cert_tls
    loads: list[bytes] = []
    real = cert_tls.server_ssl_context

    def counting(cert_pem: bytes, key_pem: bytes, **kw: Any) -> ssl.SSLContext:
        loads.append(cert_pem)
        return real(cert_pem, key_pem, **kw)
    monkeypatch.setattr(cert_tls, "server_ssl_context", counting)
    name = fqdn(srv)
    pairs = [ca.provider(name), ca.provider(name)]
    current = [pairs[0]]
    monkeypatch.setattr(srv, "serve_cert_provider", lambda domain: current[0])

    def served_serial() -> int:
        raw = tn["cli"].connect_socket("srv", 7004, timeout=20)
        raw.settimeout(20)
        with ca.client_context().wrap_socket(raw, server_hostname=name) as tls:
            der = tls.getpeercert(binary_form=True)
            tls.sendall(b"ping")
            assert recv_exact(tls, 4) == b"ping"
        assert der is not None
        return x509.load_der_x509_certificate(der).serial_number

    def serial(pair: tuple[bytes, bytes]) -> int:
        return x509.load_pem_x509_certificates(pair[0])[0].serial_number

    with echo_server() as port:
        srv.set_serve_config_blocking(ServeConfig(TCP={7004: TCPPortHandler(TCPForward=f"127.0.0.1:{port}",
                                                                            TerminateTLS=name)}))
        assert [served_serial(), served_serial()] == [serial(pairs[0])] * 2
        assert loads == [pairs[0][0]]  # the second connection reused the first one's context
        current[0] = pairs[1]  # renewed
        assert served_serial() == serial(pairs[1])
        assert loads == [pairs[0][0], pairs[1][0]]


def _web(srv: ActorDevice, port: int, handlers: dict[str, HTTPHandler], *, https: bool = False) -> None:
    mode = TCPPortHandler(HTTPS=True) if https else TCPPortHandler(HTTP=True)
    web = {f"{fqdn(srv)}:{port}": WebServerConfig(Handlers=handlers)}
    srv.set_serve_config_blocking(ServeConfig(TCP={port: mode}, Web=web))


def test_web_text_redirect_and_404(tn: Tailnet, srv: ActorDevice) -> None:
    _web(srv, 80, {"/t": HTTPHandler(Text="hello, tailnet"),
                   "/r/": HTTPHandler(Redirect="301:https://${HOST}${REQUEST_URI}")})
    with tn["cli"].sync_http_client(timeout=20, follow_redirects=False) as c:
        r = c.get("http://srv/t")
        assert (r.status_code, r.text, r.headers["content-type"]) == (200, "hello, tailnet",
                                                                       "text/plain; charset=utf-8")
        r = c.get("http://srv/r/x?y=1")
        assert r.status_code == 301 and r.headers["location"] == "https://srv/r/x?y=1"
        r = c.get("http://srv/elsewhere")  # no mount at "/": 404, never a fall-through
        assert r.status_code == 404
        # a Host that is not this Web server's name: no Web config for it
        r = c.get("http://srv/t", headers={"host": "other"})
        assert r.status_code == 404


def test_web_proxy_with_go_headers(tn: Tailnet, srv: ActorDevice) -> None:
    cli = tn["cli"]
    with mirror_backend() as port:
        _web(srv, 8080, {"/api/": HTTPHandler(Proxy=str(port)),
                         "/whole": HTTPHandler(Proxy=f"127.0.0.1:{port}/base")})
        with cli.sync_http_client(timeout=20) as c:
            r = c.post("http://srv:8080/api/items?q=1", content=b"payload",
                       headers={"Tailscale-User-Login": "spoofed@evil", "X-Forwarded-For": "203.0.113.66"})
            assert r.status_code == 200
            got = r.json()
            r2 = c.get("http://srv:8080/whole")
    assert got["method"] == "POST" and got["path"] == "/items?q=1" and got["body"] == "payload"
    h = got["headers"]
    assert h["x-forwarded-for"] == cli.tailscale_ips()[0]
    assert h["x-forwarded-host"] == "srv:8080" and h["host"] == "srv:8080"
    assert "x-forwarded-proto" not in h  # plain HTTP
    login = cli.whois(cli.tailscale_ips()[0]).user.login_name
    assert login and h["tailscale-user-login"] == login  # the caller's own identity, not the spoofed one
    names = [k for k, _ in got["header_list"]]
    assert names.count("tailscale-user-login") == 1 and names.count("x-forwarded-for") == 1  # copies dropped
    assert h["tailscale-headers-info"] == "https://tailscale.com/s/serve-headers"
    assert r2.status_code == 200 and r2.json()["path"] == "/base"


def test_web_proxy_backend_down_is_502_and_the_connection_is_dropped(tn: Tailnet, srv: ActorDevice) -> None:
    _web(srv, 8081, {"/": HTTPHandler(Proxy=str(dead_port()))})
    with tn["cli"].tcp_connect_blocking("srv", 8081, timeout=20) as sock:
        sock.settimeout(20)
        sock.sendall(b"GET / HTTP/1.1\r\nHost: srv\r\n\r\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    assert data.startswith(b"HTTP/1.1 502 "), data[:100]  # then the connection ended (recv gave b"")


def test_web_path_files_dirs_and_traversal(tn: Tailnet, srv: ActorDevice, tmp_path: Path) -> None:
    root = tmp_path / "www"
    (root / "sub").mkdir(parents=True)
    (root / "a.txt").write_text("file a")
    (root / "sub" / "index.html").write_text("<p>index</p>")
    (tmp_path / "secret.txt").write_text("not served")
    (root / "escape").symlink_to(tmp_path / "secret.txt")
    single = tmp_path / "one.txt"
    single.write_text("single file")
    _web(srv, 8082, {"/files/": HTTPHandler(Path=str(root)), "/one": HTTPHandler(Path=str(single))})
    with tn["cli"].sync_http_client(timeout=20, follow_redirects=False) as c:
        assert c.get("http://srv:8082/files/a.txt").text == "file a"
        assert c.get("http://srv:8082/files/sub/").text == "<p>index</p>"
        assert c.get("http://srv:8082/files/sub").status_code == 301
        listing = c.get("http://srv:8082/files/")
        assert listing.status_code == 200 and 'href="a.txt"' in listing.text and 'href="sub/"' in listing.text
        assert c.get("http://srv:8082/files").headers["location"] == "/files/"
        assert c.get("http://srv:8082/one").text == "single file"
        assert c.get("http://srv:8082/one/x").status_code == 404
        assert c.get("http://srv:8082/files/escape").status_code == 404  # a symlink out of the root
        assert c.get("http://srv:8082/files/nope").status_code == 404
    # raw requests: httpx would fold the ".." before sending
    out_of_mount = _raw(tn["cli"], 8082, b"/files/..%2f..%2fsecret.txt")  # cleans to /secret.txt: no mount
    assert out_of_mount.startswith(b"HTTP/1.1 404 ") and b"not served" not in out_of_mount
    dotdot = _raw(tn["cli"], 8082, b"/files/sub/..%2f..%2ffiles/a.txt")  # in the mount, with "..": Go's 400
    assert dotdot.startswith(b"HTTP/1.1 400 ") and b"file a" not in dotdot


def _raw(cli: ActorDevice, port: int, target: bytes) -> bytes:
    with cli.tcp_connect_blocking("srv", port, timeout=20) as sock:
        sock.settimeout(20)
        sock.sendall(b"GET " + target + b" HTTP/1.1\r\nHost: srv\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    return data


def test_https_web_with_a_verified_certificate(tn: Tailnet, srv: ActorDevice, ca: TestCA) -> None:
    _web(srv, 443, {"/": HTTPHandler(Text="over TLS")}, https=True)
    name = fqdn(srv)
    with mirror_backend():
        with tn["cli"].sync_http_client(timeout=20, verify=ca.client_context()) as c:
            r = c.get(f"https://{name}/")
        assert (r.status_code, r.text) == (200, "over TLS")
        with tn["cli"].sync_http_client(timeout=20) as c, pytest.raises(httpx.ConnectError):
            c.get(f"https://{name}/")  # the system trust store lacks the test CA: verification is real


def test_runtime_change_keeps_an_unrelated_connection(tn: Tailnet, srv: ActorDevice) -> None:
    with echo_server() as port:
        tcp = {7003: TCPPortHandler(TCPForward=f"127.0.0.1:{port}"), 80: TCPPortHandler(HTTP=True)}
        web = {f"{fqdn(srv)}:80": WebServerConfig(Handlers={"/": HTTPHandler(Text="v1")})}
        srv.set_serve_config_blocking(ServeConfig(TCP=tcp, Web=web))
        with tn["cli"].tcp_connect_blocking("srv", 7003, timeout=20) as sock, \
                tn["cli"].sync_http_client(timeout=20) as c:
            sock.settimeout(20)
            sock.sendall(b"before")
            assert recv_exact(sock, 6) == b"before"
            assert c.get("http://srv/").text == "v1"
            web2 = {f"{fqdn(srv)}:80": WebServerConfig(Handlers={"/": HTTPHandler(Text="v2")})}
            srv.set_serve_config_blocking(ServeConfig(TCP=tcp | {7004: TCPPortHandler(HTTP=True)}, Web=web2))
            assert c.get("http://srv/", headers={"connection": "close"}).text == "v2"
            sock.sendall(b"after")  # the forward accepted under the old config is untouched
            assert recv_exact(sock, 5) == b"after"
            # removing the port stops new connections to it; the open one still works
            srv.set_serve_config_blocking(ServeConfig(TCP={80: TCPPortHandler(HTTP=True)}, Web=web2))
            sock.sendall(b"still")
            assert recv_exact(sock, 5) == b"still"
        assert 7003 not in srv.serve_status().ports
        with pytest.raises(OSError):
            tn["cli"].tcp_connect_blocking("srv", 7003, timeout=10)


def test_etag_and_bad_configs_are_typed_errors(tn: Tailnet, srv: ActorDevice) -> None:
    cfg = ServeConfig(TCP={80: TCPPortHandler(HTTP=True)},
                      Web={f"{fqdn(srv)}:80": WebServerConfig(Handlers={"/": HTTPHandler(Text="a")})})
    tag = srv.set_serve_config_blocking(cfg)
    assert srv.get_serve_config_blocking() == (cfg, tag) and tag == etag(cfg)
    with pytest.raises(ServeETagMismatch):
        srv.set_serve_config_blocking(None, etag="0" * 64)
    with pytest.raises(ServeConfigInvalid, match="already serving 'http'"):
        srv.set_serve_config_blocking(ServeConfig(TCP={80: TCPPortHandler(TCPForward="127.0.0.1:1")}),
                                      etag=tag)
    with pytest.raises(ServeConfigInvalid):
        srv.set_serve_config_blocking('{"TCP": {"80": {"HTTP": "yes"}}}')
    lst = srv.listen_blocking(7005)  # an app's listener owns the port: the whole config is refused
    try:
        with pytest.raises(ServeConfigInvalid, match="cannot listen"):
            srv.set_serve_config_blocking(ServeConfig(TCP={7005: TCPPortHandler(HTTP=True),
                                                           7006: TCPPortHandler(HTTP=True)}))
    finally:
        lst.close()
    assert srv.get_serve_config_blocking() == (cfg, tag)  # nothing of the refused ones was applied
    assert srv.serve_status().ports == [80]
    assert srv.set_serve_config_blocking(None, etag=tag) == etag(None)


def test_localapi_serve_config_etag_as_go(tn: Tailnet, srv: ActorDevice) -> None:
    api = srv.local_api()
    body = json.dumps({"TCP": {"80": {"HTTP": True}},
                       "Web": {f"{fqdn(srv)}:80": {"Handlers": {"/": {"Text": "via localapi"}}}}}).encode()
    r = api.handle(LocalRequest("POST", "/localapi/v0/serve-config", body=body), permit_read=True,
                   permit_write=True)
    assert r.status == 200
    got = api.handle(LocalRequest("GET", "/localapi/v0/serve-config"), permit_read=True, permit_write=False)
    cfg = parse_serve_config(got.body)
    assert got.status == 200 and cfg is not None and dict(got.headers)["Etag"] == etag(cfg)
    stale = api.handle(LocalRequest("POST", "/localapi/v0/serve-config", body=b"null",
                                    headers={"if-match": "stale"}), permit_read=True, permit_write=True)
    assert stale.status == 412
    denied = api.handle(LocalRequest("POST", "/localapi/v0/serve-config", body=b"null"), permit_read=True,
                        permit_write=False)
    assert denied.status == 403
    bad = api.handle(LocalRequest("POST", "/localapi/v0/serve-config", body=b'{"TCP": {"0": {}}}'),
                     permit_read=True, permit_write=True)
    assert bad.status == 500 and "error" in json.loads(bad.body)
    ok = api.handle(LocalRequest("POST", "/localapi/v0/serve-config", body=b"null",
                                 headers={"if-match": dict(got.headers)["Etag"]}), permit_read=True,
                    permit_write=True)
    assert ok.status == 200 and srv.get_serve_config_blocking()[0] is None
    with tn["cli"].sync_http_client(timeout=20) as c:
        wait_until(lambda: _refused(c), 10, "port 80 no longer served")


def _refused(c: httpx.Client) -> bool:
    try:
        c.get("http://srv/")
    except httpx.HTTPError:
        return True
    return False


def test_local_client_serve_config_over_the_loopback_listener(tn: Tailnet, srv: ActorDevice) -> None:
    """Through the real HTTP transport: the Etag header out, If-Match in, 412 for a stale one."""
    addr, _, cred = srv.loopback()
    web = {f"{fqdn(srv)}:80": WebServerConfig(Handlers={"/": HTTPHandler(Text="from the local client")})}
    cfg = ServeConfig(TCP={80: TCPPortHandler(HTTP=True)}, Web=web)
    headers = {"Sec-Tailscale": "localapi"}
    with httpx.Client(base_url=f"http://{addr}", auth=("", cred), headers=headers, timeout=20) as h:
        r = h.post("/localapi/v0/serve-config", content=to_go_json(cfg))
        assert r.status_code == 200
        r = h.get("/localapi/v0/serve-config")
        assert r.status_code == 200 and r.headers["etag"] == etag(cfg)
        assert parse_serve_config(r.content) == cfg
        stale = h.post("/localapi/v0/serve-config", content=b"null", headers={"If-Match": "stale"})
        assert stale.status_code == 412
        assert srv.get_serve_config_blocking()[0] == cfg
    client = srv.local_client()
    got, tag = client.get_serve_config()
    assert got == cfg and tag == etag(cfg)
    with pytest.raises(LocalApiError) as e:
        client.set_serve_config(None, etag="stale")
    assert e.value.status == 412
    client.set_serve_config(None, etag=tag)
    assert srv.get_serve_config_blocking() == (None, etag(None))


def test_async_twins(tn: Tailnet, srv: ActorDevice) -> None:
    cfg = ServeConfig(TCP={80: TCPPortHandler(HTTP=True)},
                      Web={f"{fqdn(srv)}:80": WebServerConfig(Handlers={"/": HTTPHandler(Text="async")})})

    async def run() -> None:
        tag = await srv.set_serve_config(cfg)
        assert await srv.get_serve_config() == (cfg, tag)
        async with tn["cli"].http_client(timeout=20) as c:
            assert (await c.get("http://srv/")).text == "async"
        with pytest.raises(ServeETagMismatch):
            await srv.set_serve_config(None, etag="stale")

    anyio.run(run)


def test_https_without_certificates_fails_closed(tn: Tailnet, srv: ActorDevice) -> None:
    """``cli`` has no ``serve_cert_provider``: its certs come from ``cert_pair_blocking`` (20a), and this
    tailnet has HTTPS off, so the handshake is refused and the connection dropped; nothing else is served."""
    cli = tn["cli"]
    name = cli.state.name.rstrip(".")
    web = {f"{name}:8443": WebServerConfig(Handlers={"/": HTTPHandler(Text="never")})}
    cli.set_serve_config_blocking(ServeConfig(TCP={8443: TCPPortHandler(HTTPS=True)}, Web=web))
    try:
        raw = srv.connect_socket("cli", 8443, timeout=20)
        raw.settimeout(20)
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE  # even a client that trusts anything gets no answer
        with pytest.raises((ssl.SSLError, OSError)):
            ctx.wrap_socket(raw, server_hostname=name).recv(1)
        raw.close()
        wait_until(lambda: cli.serve_status().counters.get("tls_error", 0) >= 1, 10, "the refusal counted")
    finally:
        cli.set_serve_config_blocking(None)
