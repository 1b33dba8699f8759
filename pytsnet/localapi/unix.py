"""The LocalAPI on a unix socket (tailscaled's ``/var/run/tailscale/tailscaled.sock``), supervised.

    localapi.sup        Supervisor          one-for-one, 5 restarts / 10 s
    ├── localapi.conns  Supervisor          budget 0: its children are never restarted
    │   └── localapi-cI-N  LocalApiConnection  Restart.NEVER (one request each)
    └── localapi        LocalApiSocketServer   permanent: the accept loop (``ConnectionServer``)

The socket file is created mode 0600 (bound under a 0077 umask, then chmod'ed): only its owner and
root reach the node's LocalAPI. A stale socket file at the path is replaced; anything else there is
a ``LocalApiError``. Requests get Go's checks for the unix socket (``pytsnet.localapi.http``).
"""

from __future__ import annotations

import contextlib
import io
import os
import socket
import stat
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import h11

from pytsnet.actors.connserver import SocketServer, server_tree
from pytsnet.actors.runtime import (
    Actor,
    ActorRef,
    ActorStopped,
    ChildSpec,
    MailboxConfig,
    MailboxFull,
    MailboxPolicy,
    Restart,
    StopReason,
    handles,
)
from pytsnet.actors.runtime.logs import subsystem_logger
from pytsnet.errors import LocalApiError
from pytsnet.localapi.http import BodyStream, check_and_handle, read_body, response_bytes, send_response
from pytsnet.localapi.server import LocalApi, LocalResponse
from pytsnet.messages.localapi import LocalApiAccepted, LocalApiConnDone, LocalApiEvent, LocalApiEventKind
from pytsnet.wire.http1_body import BodyTooLarge, MalformedHttp

if TYPE_CHECKING:
    from pytsnet.actors.runtime import ActorSystem

__all__ = ["LocalApiSocket"]

log = subsystem_logger("localapi")

SERVER = "localapi"
ACCEPT_POLL = 0.25
MAX_CONNECTIONS = 32
MAX_HEAD = 64 * 1024
REQUEST_TIMEOUT = 30.0
"""A client has this long to send its request, and a handler (logout) to answer."""
_CONN_MAILBOX = MailboxConfig(4, MailboxPolicy.BLOCK, block_timeout=5.0)


class LocalApiConnection(Actor):
    """One request on its own thread: read it (bounded head and body, a deadline), answer, close."""

    def __init__(self, sock: socket.socket, api: LocalApi) -> None:
        self.sock = sock
        self.api = api

    def on_start(self) -> None:
        threading.Thread(target=self._run, name=f"{self.name}-run", daemon=True).start()

    @handles(LocalApiConnDone)
    def on_done(self, msg: LocalApiConnDone) -> None:
        self.stop()

    def on_stop(self, reason: StopReason) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()
        self._event("closed")

    def _event(self, kind: LocalApiEventKind) -> None:
        self.tell_named(SERVER, LocalApiEvent(kind=kind, conn=self.name))

    def _run(self) -> None:
        try:
            self._serve()
        except TimeoutError:
            self._event("timeout")
        except OSError as e:
            log.debug("%s: %s", self.name, e)
        except Exception as e:  # a bug: this request fails, the server goes on
            log.warning("%s: %r", self.name, e)
        with contextlib.suppress(ActorStopped, MailboxFull):
            self.ref.tell(LocalApiConnDone())

    def _recv(self, deadline: float) -> bytes:
        """One read, within what is left of the request's time (a trickling client is cut)."""
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("request not complete in time")
        self.sock.settimeout(left)
        return self.sock.recv(65536)

    def _recv_idle(self) -> bytes:
        """One read of a streaming body: ``REQUEST_TIMEOUT`` for this read alone (taildrop, 22c)."""
        self.sock.settimeout(REQUEST_TIMEOUT)
        return self.sock.recv(65536)

    def _serve(self) -> None:
        deadline = time.monotonic() + REQUEST_TIMEOUT
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)
        try:
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    conn.receive_data(self._recv(deadline))
                    continue
                break
            if not isinstance(event, h11.Request):
                return  # the client closed before a request
            resp = self._answer(conn, event, deadline)
        except (h11.RemoteProtocolError, MalformedHttp) as e:
            self._event("bad_http")
            with contextlib.suppress(h11.LocalProtocolError):
                status = e.error_status_hint if isinstance(e, h11.RemoteProtocolError) else 400
                bad = LocalResponse.error(status, "bad request")
                self.sock.sendall(response_bytes(conn, bad))
            return
        self.sock.settimeout(REQUEST_TIMEOUT)  # for the answer: a client that never reads is cut
        send_response(self.sock.sendall, conn, resp)
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_WR)

    def _answer(self, conn: h11.Connection, req: h11.Request, deadline: float) -> LocalResponse:
        """Read the body (``MalformedHttp`` for a cut or broken one) and answer it; too large: 413.
        A streaming route (``file-put/``) gets the body as it arrives instead, each read given
        ``REQUEST_TIMEOUT`` (a file takes as long as it takes; a stalled client is cut)."""
        route = self.api.lookup(urlsplit(req.target.decode("ascii", "replace")).path)
        if route is not None and route.streaming:
            self._event("requests")
            stream = io.BufferedReader(BodyStream(conn, self._recv_idle), 65536)
            try:
                return check_and_handle(self.api, req, b"", password=None, sec_header=False, stream=stream)
            finally:
                stream.close()
        try:
            body = read_body(conn, lambda: self._recv(deadline))
        except BodyTooLarge:
            self._event("too_large")
            return LocalResponse.error(413, "request body too large")
        self._event("requests")
        return check_and_handle(self.api, req, body, password=None, sec_header=False)


class LocalApiSocketServer(SocketServer):
    def __init__(self, listener: socket.socket, api: LocalApi, system: ActorSystem) -> None:
        super().__init__(listener, conns=f"{SERVER}.conns", server=SERVER, max_connections=MAX_CONNECTIONS,
                         log=log, poll=ACCEPT_POLL)
        self.api = api
        self.system = system

    def accepted_message(self) -> LocalApiAccepted:
        return LocalApiAccepted()

    def spawn_conn(self, conn: socket.socket, name: str, parent: ActorRef) -> None:
        self.system.spawn(LocalApiConnection, conn, self.api, name=name, parent=parent,
                          restart=Restart.NEVER, dispatcher="pool", mailbox=_CONN_MAILBOX)

    @handles(LocalApiAccepted)
    def on_accepted(self, msg: LocalApiAccepted) -> None:
        self.serve_queued()

    @handles(LocalApiEvent)
    def on_event(self, msg: LocalApiEvent) -> None:
        self.connection_event(msg.kind, msg.conn, msg.n)


class LocalApiSocket:
    """The socket file and its server tree; ``close`` removes the file (the tree stops with the system)."""

    def __init__(self, system: ActorSystem, api: LocalApi, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        _clear_stale(self.path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o077)
        try:
            sock.bind(str(self.path))
            os.chmod(self.path, 0o600)
            sock.listen(64)
        except OSError as e:
            sock.close()
            raise LocalApiError(f"LocalAPI socket {self.path}: {e}") from None
        finally:
            os.umask(old)
        self._system = system
        try:
            system.spawn_spec(server_tree(ChildSpec(LocalApiSocketServer, SERVER, args=(sock, api, system),
                                                    dispatcher="thread"), f"{SERVER}.conns"))
        except BaseException:
            sock.close()
            raise

    def close(self) -> None:
        ref = self._system.lookup(f"{SERVER}.sup")
        if ref is not None:
            with contextlib.suppress(Exception):
                ref.stop()
        with contextlib.suppress(OSError):
            self.path.unlink()


def _clear_stale(path: Path) -> None:
    """A socket file nobody listens on is removed; a live one or a non-socket is an error."""
    try:
        st = path.lstat()
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise LocalApiError(f"LocalAPI socket {path}: exists and is not a socket")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(str(path))
    except OSError:
        path.unlink()
        return
    finally:
        probe.close()
    raise LocalApiError(f"LocalAPI socket {path}: another process is serving it")
