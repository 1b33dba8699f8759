"""One Serve HTTP connection (Go ``serveWebHandler`` behind ``http.Server``), blocking, on a socket.

The connection actor runs this on its own thread over a socket that is either one end of a
socketpair spliced to the tailnet flow (HTTP) or that socket with TLS terminated on it (HTTPS).
h11 parses the requests (keep-alive, one at a time). Each is matched by ``wire.serve.match_web`` and
answered as Go answers it: Text, Redirect (``${HOST}``/``${REQUEST_URI}``), Path (a file or a
directory, ``..`` refused, and a symlink that leads out of the served root refused too, stricter than
Go), Proxy (one backend connection per request, Go's ``X-Forwarded-*`` and ``Tailscale-User-*``
headers, incoming copies of those dropped). Fail closed: no Web server for the Host or no mount → 404;
a backend that cannot be reached or answers garbage → 502 and the connection is closed; a backend
that fails mid-answer → the connection is dropped (the client sees a truncated answer, never a
different one).
"""

from __future__ import annotations

import email.utils
import html
import mimetypes
import os
import socket
import ssl
import stat
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import h11

from pytsnet.wire.http1_body import BodyReader, BodyTooLarge, MalformedHttp
from pytsnet.wire.serve import (
    HTTPHandler,
    ServeConfig,
    expand_proxy_arg,
    expand_redirect,
    match_web,
    parse_redirect,
    path_target,
    strip_mount,
    web_key,
)

__all__ = ["BackendError", "Identity", "WebSession"]

READ_CHUNK = 64 * 1024
MAX_REQUEST_BODY = 32 << 20
"""A request body is read before it is proxied; past this it is refused (413)."""
MAX_HEADER = 64 * 1024
HOP_BY_HOP = frozenset({b"connection", b"keep-alive", b"proxy-connection", b"proxy-authenticate",
                        b"proxy-authorization", b"te", b"trailer", b"transfer-encoding", b"upgrade"})
DROPPED_IN = frozenset({b"forwarded", b"x-forwarded-for", b"x-forwarded-host", b"x-forwarded-proto",
                        b"tailscale-user-login", b"tailscale-user-name", b"tailscale-user-profile-pic",
                        b"tailscale-funnel-request", b"tailscale-headers-info",
                        b"tailscale-app-capabilities"})
"""Go's Rewrite proxy drops incoming ``X-Forwarded-*``/``Forwarded`` and ``addTailscaleIdentityHeaders``
deletes the identity headers: a client cannot claim an identity."""


class BackendError(Exception):
    """The Proxy backend could not be reached or answered with something that is not HTTP."""


@dataclass(frozen=True)
class Identity:
    """Who is calling (Go ``WhoIs`` on the source address): set for an untagged node's user only."""

    src_ip: str
    login_name: str = ""
    display_name: str = ""
    profile_pic: str = ""
    tagged: bool = False
    known: bool = False
    funnel: bool = False
    """20g: a public client brought by Funnel (``src_ip`` is its address): Go sends
    ``Tailscale-Funnel-Request: ?1`` and no identity headers."""


def _enc_header(v: str) -> bytes:
    """Go ``encTailscaleHeaderValue``: ASCII as is, else RFC 2047 Q-encoded UTF-8."""
    if v.isascii():
        return v.encode()
    from email.header import Header
    return Header(v, "utf-8").encode().encode()  # =?utf-8?...?= as mime.QEncoding (b/q both decode)


class WebSession:
    """Serves the HTTP requests of one connection; ``count(kind)`` hears what each request did."""

    def __init__(self, sock: socket.socket | ssl.SSLSocket, *, port: int,
                 config: Callable[[], ServeConfig | None],
                 tailnet_domain: str, identity: Identity, sni: str | None, idle_timeout: float,
                 backend_timeout: float,
                 count: Callable[[str], None], service_host: str | None = None) -> None:
        self.sock = sock
        self.port = port
        self.config = config
        self.tailnet_domain = tailnet_domain
        self.identity = identity
        self.sni = sni
        self.tls = isinstance(sock, ssl.SSLSocket)
        self.idle_timeout = idle_timeout
        self.backend_timeout = backend_timeout
        self.count = count
        self.service_host = service_host
        """A service port's FQDN: its Web server is looked up under it, whatever the Host header."""
        self.h = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEADER)

    # -- the connection loop ----------------------------------------------------------------------------
    def run(self) -> None:
        """Serve requests until the client closes, a request asks to, or one cannot be answered."""
        self.sock.settimeout(self.idle_timeout)
        while True:
            try:
                ev = self._next()
            except h11.RemoteProtocolError:
                self.count("bad_request")
                self._send_simple(400, b"400 Bad Request\n")
                return
            if not isinstance(ev, h11.Request):
                return  # ConnectionClosed (or a stray event): done
            try:
                body = self._read_body()
            except BodyTooLarge:
                self.count("bad_request")
                self._send_simple(413, b"request body too large\n")
                return
            except MalformedHttp:
                self.count("bad_request")
                return
            self.count("request")
            if not self._answer(ev, body):
                return
            if self.h.our_state is h11.MUST_CLOSE or self.h.their_state is h11.MUST_CLOSE:
                return
            try:
                self.h.start_next_cycle()
            except h11.LocalProtocolError:
                return

    def _next(self) -> h11.Event | type[h11.NEED_DATA] | type[h11.PAUSED]:
        while True:
            ev = self.h.next_event()
            if ev is not h11.NEED_DATA:
                return ev
            self.h.receive_data(self._recv())

    def _recv(self) -> bytes:
        """One read; a client gone quiet past the idle timeout, or away, reads as its close."""
        try:
            return self.sock.recv(READ_CHUNK)
        except (TimeoutError, OSError):
            return b""

    def _read_body(self) -> bytes:
        """The request's body, bounded (``wire.http1_body``): ``BodyTooLarge`` or ``MalformedHttp``."""
        reader = BodyReader(self.h, MAX_REQUEST_BODY)
        body = reader.poll()
        while body is None:
            body = reader.receive_data(self._recv())
        return body

    def _send(self, *events: h11.Event) -> None:
        for ev in events:
            data = self.h.send(ev)
            if data:
                self.sock.sendall(data)

    def _send_simple(self, status: int, body: bytes, headers: list[tuple[bytes, bytes]] | None = None,
                     *, head: bool = False, content_type: bytes = b"text/plain; charset=utf-8") -> None:
        hs = [(b"content-type", content_type), (b"content-length", str(len(body)).encode()),
              (b"x-content-type-options", b"nosniff"), *(headers or [])]
        try:
            self._send(h11.Response(status_code=status, headers=hs))
            if body and not head:
                self._send(h11.Data(data=body))
            self._send(h11.EndOfMessage())
        except h11.LocalProtocolError:
            pass  # the client's side already made this answer impossible (e.g. it went away)

    # -- one request -----------------------------------------------------------------------------------------
    def _answer(self, req: h11.Request, body: bytes) -> bool:
        """Answer ``req``; False when the connection must end now (a backend failure)."""
        target = req.target.decode("latin-1")
        host = next((v.decode("latin-1") for k, v in req.headers if k == b"host"), "")
        head = req.method == b"HEAD"
        raw_path = target.split("?", 1)[0]
        url_path = urllib.parse.unquote(raw_path) if raw_path.startswith("/") else raw_path
        key = (f"{self.service_host}:{self.port}" if self.service_host is not None
               else web_key(host, self.sni, self.tailnet_domain, self.port))
        cfg = self.config()  # the config in force now, as Go looks it up per request
        web = cfg.Web.get(key) if cfg is not None else None
        found = match_web(web.Handlers, url_path) if web is not None else None
        if found is None:
            self.count("not_found")
            self._send_simple(404, b"404 page not found\n", head=head)
            return True
        handler, mount = found
        if handler.Text:
            self.count("text")
            self._send_simple(200, handler.Text.encode(), head=head)
            return True
        if handler.Redirect:
            return self._redirect(handler, host, target, head)
        if handler.Path:
            return self._path(handler.Path, mount, url_path, head)
        if handler.Proxy:
            return self._proxy(handler, mount, req, target, host, body)
        self._send_simple(500, b"empty handler\n", head=head)
        return True

    def _redirect(self, handler: HTTPHandler, host: str, target: str, head: bool) -> bool:
        self.count("redirect")
        code, url = parse_redirect(handler.Redirect)
        url = expand_redirect(url, host, target)
        body = f'<a href="{html.escape(url)}">{_REASONS.get(code, "Redirect")}</a>.\n\n'.encode()
        self._send_simple(code, body, [(b"location", url.encode("utf-8", "replace"))], head=head,
                          content_type=b"text/html; charset=utf-8")
        return True

    # -- Path ------------------------------------------------------------------------------------------------
    def _path(self, root: str, mount: str, url_path: str, head: bool) -> bool:
        try:
            st_root = os.stat(root)
        except FileNotFoundError:
            self.count("not_found")
            self._send_simple(404, b"404 page not found\n", head=head)
            return True
        except OSError:
            self._send_simple(500, b"an error occurred reading the file or directory\n", head=head)
            return True
        if stat.S_ISREG(st_root.st_mode):
            if mount != url_path:
                self.count("not_found")
                self._send_simple(404, b"404 page not found\n", head=head)
                return True
            self._file(root, head)
            return True
        if not stat.S_ISDIR(st_root.st_mode):
            self._send_simple(500, b"not a file or directory\n", head=head)
            return True
        if len(url_path) < len(mount) and url_path + "/" == mount:
            self._send_simple(302, b"", [(b"location", mount.encode())], head=head)
            return True
        path = path_target(root, mount, url_path)
        if path is None:
            self.count("bad_request")
            self._send_simple(400, b"invalid URL path\n", head=head)
            return True
        real_root = os.path.realpath(root)
        real = os.path.realpath(path)
        if real != real_root and not real.startswith(real_root.rstrip("/") + "/"):
            self.count("not_found")  # a symlink out of the served tree: as if absent
            self._send_simple(404, b"404 page not found\n", head=head)
            return True
        if os.path.isdir(real):
            if not url_path.endswith("/"):
                self._send_simple(301, b"", [(b"location", (url_path.rsplit("/", 1)[-1] + "/").encode())],
                                  head=head)
                return True
            index = os.path.join(real, "index.html")
            if os.path.isfile(index):
                self._file(index, head)
                return True
            self._listing(real, head)
            return True
        if not os.path.isfile(real):
            self.count("not_found")
            self._send_simple(404, b"404 page not found\n", head=head)
            return True
        self._file(real, head)
        return True

    def _file(self, path: str, head: bool) -> None:
        self.count("file")
        try:
            f = open(path, "rb")  # noqa: SIM115 (closed below, after streaming)
        except OSError:
            self._send_simple(500, b"an error occurred reading the file or directory\n", head=head)
            return
        with f:
            st = os.fstat(f.fileno())
            ctype = mimetypes.guess_type(path)[0] or "application/octet-stream"
            if ctype.startswith("text/"):
                ctype += "; charset=utf-8"
            hs = [(b"content-type", ctype.encode()), (b"content-length", str(st.st_size).encode()),
                  (b"last-modified", email.utils.formatdate(st.st_mtime, usegmt=True).encode()),
                  (b"accept-ranges", b"none")]
            self._send(h11.Response(status_code=200, headers=hs))
            if not head:
                while chunk := f.read(READ_CHUNK):
                    self._send(h11.Data(data=chunk))
            self._send(h11.EndOfMessage())

    def _listing(self, path: str, head: bool) -> None:
        """Go ``dirList``: the names, sorted, directories with a trailing slash."""
        self.count("file")
        names = []
        for entry in sorted(os.scandir(path), key=lambda e: e.name):
            name = entry.name + ("/" if entry.is_dir() else "")
            names.append(f'<a href="{html.escape(urllib.parse.quote(name))}">{html.escape(name)}</a>\n')
        body = ('<!doctype html>\n<meta name="viewport" content="width=device-width">\n<pre>\n'
                + "".join(names) + "</pre>\n").encode()
        self._send_simple(200, body, head=head, content_type=b"text/html; charset=utf-8")

    # -- Proxy -----------------------------------------------------------------------------------------------
    def _proxy(self, handler: HTTPHandler, mount: str, req: h11.Request, target: str, host: str,
               body: bytes) -> bool:
        url, insecure = expand_proxy_arg(handler.Proxy)
        parts = urllib.parse.urlsplit(url)
        raw_path, _, query = target.partition("?")
        out_path = _join_target(parts.path, strip_mount(raw_path, mount))
        out_target = out_path + ("?" + query if query else "")
        headers = [(k, v) for k, v in req.headers
                   if k not in HOP_BY_HOP and k not in DROPPED_IN and k != b"host"]
        headers += [(b"host", host.encode("latin-1")), (b"x-forwarded-host", host.encode("latin-1"))]
        if self.tls:
            headers.append((b"x-forwarded-proto", b"https"))
        headers.append((b"x-forwarded-for", self.identity.src_ip.encode()))
        ident = self.identity
        if ident.funnel:  # 20g: Go addTailscaleIdentityHeaders for a funnelFlow
            headers.append((b"tailscale-funnel-request", b"?1"))
        elif ident.known and not ident.tagged:
            headers += [(b"tailscale-user-login", _enc_header(ident.login_name)),
                        (b"tailscale-user-name", _enc_header(ident.display_name)),
                        (b"tailscale-user-profile-pic", ident.profile_pic.encode("latin-1", "replace")),
                        (b"tailscale-headers-info", b"https://tailscale.com/s/serve-headers")]
        headers += [(b"content-length", str(len(body)).encode()), (b"connection", b"close")]
        try:
            back = self._backend_connect(parts, insecure)
        except BackendError as e:
            self.count("backend_error")
            self._send_simple(502, f"bad gateway: {e}\n".encode())
            return False
        with back:
            try:
                cli = h11.Connection(h11.CLIENT)
                back.sendall(cli.send(h11.Request(method=req.method, target=out_target.encode("latin-1"),
                                                  headers=headers)) or b"")
                if body:
                    back.sendall(cli.send(h11.Data(data=body)) or b"")
                back.sendall(cli.send(h11.EndOfMessage()) or b"")
                events = _backend_events(cli, back)
                resp = next(events)
            except (OSError, h11.ProtocolError, StopIteration, BackendError) as e:
                self.count("backend_error")
                self._send_simple(502, f"bad gateway: {e or 'no answer'}\n".encode())
                return False
            assert isinstance(resp, h11.Response)
            self.count("proxied")
            out_headers = [(k, v) for k, v in resp.headers if k not in HOP_BY_HOP]
            self._send(h11.Response(status_code=resp.status_code, headers=out_headers, reason=resp.reason))
            try:
                for ev in events:
                    if isinstance(ev, h11.Data):
                        self._send(h11.Data(data=bytes(ev.data)))
            except (OSError, h11.ProtocolError, BackendError):
                self.count("backend_error")
                return False  # mid-answer: the connection ends, the client sees it truncated
            self._send(h11.EndOfMessage())
        return True

    def _backend_connect(self, parts: urllib.parse.SplitResult, insecure: bool) -> socket.socket:
        port = parts.port or (443 if parts.scheme == "https" else 80)
        try:
            sock = socket.create_connection((parts.hostname or "127.0.0.1", port),
                                            timeout=self.backend_timeout)
        except OSError as e:
            raise BackendError(f"dial {parts.netloc}: {e.strerror or e}") from None
        if parts.scheme != "https":
            return sock
        ctx = ssl.create_default_context()
        if insecure:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        try:
            return ctx.wrap_socket(sock, server_hostname=parts.hostname)
        except (OSError, ssl.SSLError) as e:
            sock.close()
            raise BackendError(f"TLS to {parts.netloc}: {e}") from None


def _join_target(target_path: str, out_path: str) -> str:
    """Go ``ProxyRequest.SetURL``'s path join (``singleJoiningSlash``), with ``reverseProxy``'s rule
    that a request for the mount itself (stripped to "") goes to the target's path as is."""
    if not out_path:
        return target_path or "/"
    if not target_path:
        return out_path
    if target_path.endswith("/") and out_path.startswith("/"):
        return target_path + out_path[1:]
    if not target_path.endswith("/") and not out_path.startswith("/"):
        return target_path + "/" + out_path
    return target_path + out_path


def _backend_events(cli: h11.Connection, back: socket.socket) -> Iterator[h11.Event]:
    """The backend's answer: its Response (1xx skipped) and then its Data until EndOfMessage."""
    got_response = False
    while True:
        ev = cli.next_event()
        if ev is h11.NEED_DATA:
            data = back.recv(READ_CHUNK)
            if not data and not got_response:
                raise BackendError("backend closed the connection without an answer")
            cli.receive_data(data)
            continue
        if isinstance(ev, h11.InformationalResponse):
            continue
        if isinstance(ev, h11.Response):
            got_response = True
            yield ev
            continue
        if isinstance(ev, h11.Data):
            yield ev
            continue
        if isinstance(ev, h11.EndOfMessage):
            return
        if isinstance(ev, h11.ConnectionClosed):
            raise BackendError("backend closed the connection mid-answer")
        raise BackendError(f"unexpected {type(ev).__name__} from the backend")


_REASONS = {301: "Moved Permanently", 302: "Found", 303: "See Other", 307: "Temporary Redirect",
            308: "Permanent Redirect"}
