"""The ControlRunner's hands: performs the login machine's network requests on two I/O threads.

It decides nothing. The request thread takes ``Connect``/``SendRegister``/``OpenMapPoll``/
``SendLiteUpdate`` in order from a queue and tells each outcome to the actor as a message; the
poll thread reads the open map poll (headers, then frames) so a lite update never waits behind the
long poll. ``abort`` (the machine's ``CloseConnection``) is safe from the actor thread: it closes
the connection, which fails whatever a thread is blocked on; results of a connection the machine
gave up carry its old number and are ignored there.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import deque
from dataclasses import dataclass

from pytsnet.actors.control.transport import ControlTransportError, Noise2Client, Response, fetch_server_key
from pytsnet.messages.base import Message
from pytsnet.messages.cert import IoSetDnsAnswer
from pytsnet.messages.control import (
    IoConnected,
    IoIdTokenAnswer,
    IoLiteUpdateAnswer,
    IoMapPollEnded,
    IoMapPollStatus,
    IoRegisterAnswer,
    MapFrame,
)
from pytsnet.messages.ssh import IoSshActionAnswer  # 22d
from pytsnet.messages.tka import IoTkaControlAnswer
from pytsnet.wire.control import Connect, OpenMapPoll, SendLiteUpdate, SendRegister
from pytsnet.wire.errors import WireError
from pytsnet.wire.keys import MachinePrivate
from pytsnet.wire.tailcfg import FrameDecoder

__all__ = ["ControlPerformer", "Request", "SendIdToken", "SendSetDns", "SendSshActionFetch", "SendTkaCall"]


@dataclass(frozen=True)
class SendIdToken:
    """``POST /machine/id-token`` with ``body`` (a ``tailcfg.TokenRequest``) on ``conn``, for ``token``.
    Not a login-machine action: the runner makes it when the machine says the session is up."""

    conn: int
    token: int
    body: bytes
    timeout: float


@dataclass(frozen=True)
class SendSetDns:
    """``POST /machine/set-dns`` with ``body`` (a ``tailcfg.SetDNSRequest``) on ``conn``, for ``token``
    (the cert manager's DNS-01 records, 20a)."""

    conn: int
    token: int
    body: bytes
    timeout: float


@dataclass(frozen=True)
class SendTkaCall:
    """A Tailnet Lock call on ``conn`` for ``token``: Go sends it as ``GET`` with a JSON body to
    ``https://unused<path>`` over Noise (``tkaDoSyncOffer`` and its siblings), and reads at most 10 MiB."""

    conn: int
    token: int
    path: str
    body: bytes
    timeout: float


TKA_AUTHORITY = "unused"
"""The host Go's TKA requests name (``https://unused/machine/tka/...``): the Noise connection decides
where they go."""

TKA_RESPONSE_LIMIT = 10 << 20
"""Go reads TKA answers through ``io.LimitedReader{N: 10 * 1024 * 1024}``."""


@dataclass(frozen=True)
class SendSshActionFetch:
    """Tailscale SSH check mode: ``GET <path>`` (path and query of a ``holdAndDelegate`` URL) on ``conn``
    for ``token`` (Go ``fetchSSHAction`` through ``DoNoiseRequest``). Control may hold it until a check is
    decided, so the request thread only sends it; the SSH-action thread waits, at most ``timeout`` seconds."""

    conn: int
    token: int
    path: str
    timeout: float


_SshItem = tuple[int, "Noise2Client | None", "Response | None", float]

SSH_ACTION_LIMIT = 1 << 20
"""An ``SSHAction`` is a small JSON object; more is refused."""


Request = (Connect | SendRegister | OpenMapPoll | SendLiteUpdate | SendIdToken | SendSetDns | SendTkaCall
           | SendSshActionFetch)


class ControlPerformer:
    """Owns the Noise connection; ``submit``/``abort``/``close`` from the actor, ``step_*`` on I/O threads."""

    def __init__(self, url: str, machine: MachinePrivate, *, request_timeout: float, watchdog: float) -> None:
        self._url = url
        self._machine = machine
        self._timeout = request_timeout
        self._watchdog = watchdog
        self._requests: queue.Queue[Request | None] = queue.Queue()
        self._polls: queue.Queue[tuple[int, Response] | None] = queue.Queue()
        self._lock = threading.Lock()
        self._client: Noise2Client | None = None
        self._conn = 0
        self._aborts = 0
        self._closed = False
        self._poll: tuple[int, Response, FrameDecoder] | None = None
        self._frames: deque[Message] = deque()
        # 22d: (token, client, response, deadline) to wait for; client and response None: a cancel;
        # token -1: a held response's headers came (its ``on_headers`` hook), look again
        self._ssh_new: queue.Queue[_SshItem | None] = queue.Queue()
        self._ssh_waiting: list[tuple[int, Noise2Client, Response, float]] = []

    # -- actor thread ------------------------------------------------------------------------------
    def submit(self, request: Request) -> None:
        self._requests.put(request)

    def abort(self) -> None:
        """Close the current connection now; a ``Connect`` under way when this is called fails too."""
        with self._lock:
            client, self._client = self._client, None
            self._aborts += 1
        if client is not None:
            client.close()

    def close(self) -> None:
        """Stop both threads for good (the incarnation ends)."""
        with self._lock:
            self._closed = True
        self._requests.put(None)
        self._polls.put(None)
        self._ssh_new.put(None)  # 22d
        self.abort()

    # -- the request thread ------------------------------------------------------------------------
    def step_requests(self) -> Message | None:
        req = self._requests.get()
        if req is None:
            return None
        match req:
            case Connect():
                return self._connect(req.conn)
            case SendRegister():
                try:
                    status, body = self._client_for(req.conn).post_json(
                        "/machine/register", req.request.to_json(), req.timeout)
                except ControlTransportError as e:
                    return IoRegisterAnswer(conn=req.conn, error=str(e))
                return IoRegisterAnswer(conn=req.conn, status=status, body=body)
            case OpenMapPoll():
                try:
                    resp = self._client_for(req.conn).request("/machine/map", req.request.to_json())
                except ControlTransportError as e:
                    return IoMapPollEnded(stream=req.stream, error=str(e))
                self._polls.put((req.stream, resp))
                return None
            case SendLiteUpdate():
                try:
                    status, _ = self._client_for(req.conn).post_json("/machine/map", req.request.to_json(),
                                                                     req.timeout)
                except ControlTransportError as e:
                    return IoLiteUpdateAnswer(token=req.token, error=str(e))
                return IoLiteUpdateAnswer(token=req.token, status=status)
            case SendIdToken():
                try:
                    status, body = self._client_for(req.conn).post_json("/machine/id-token", req.body,
                                                                         req.timeout)
                except ControlTransportError as e:
                    return IoIdTokenAnswer(token=req.token, error=str(e))
                return IoIdTokenAnswer(token=req.token, status=status, body=body)
            case SendSetDns():
                try:
                    status, body = self._client_for(req.conn).post_json("/machine/set-dns", req.body,
                                                                         req.timeout)
                except ControlTransportError as e:
                    return IoSetDnsAnswer(token=req.token, error=str(e))
                return IoSetDnsAnswer(token=req.token, status=status,
                                      body=body[:512].decode("utf-8", "replace"))
            case SendTkaCall():
                try:
                    resp = self._client_for(req.conn).request(req.path, req.body, "GET", TKA_AUTHORITY)
                    status = resp.wait_status(req.timeout)
                    body = resp.read_all(req.timeout, TKA_RESPONSE_LIMIT)
                except ControlTransportError as e:
                    return IoTkaControlAnswer(token=req.token, error=str(e))
                return IoTkaControlAnswer(token=req.token, status=status, body=body)
            case SendSshActionFetch():  # 22d: sent here, waited for on the SSH-action thread
                try:
                    client = self._client_for(req.conn)
                    resp = client.request(req.path, b"", "GET", TKA_AUTHORITY)
                except ControlTransportError as e:
                    return IoSshActionAnswer(token=req.token, error=str(e))
                resp.on_headers = self._ssh_wake
                self._ssh_new.put((req.token, client, resp, time.monotonic() + req.timeout))
                return None

    def _connect(self, conn: int) -> Message:
        with self._lock:
            old, self._client = self._client, None
            aborts = self._aborts
        if old is not None:
            old.close()
        try:
            key = fetch_server_key(self._url, self._timeout)
            client = Noise2Client(self._url, self._machine, key, timeout=self._timeout)
        except (ControlTransportError, WireError) as e:
            return IoConnected(conn=conn, error=str(e))
        with self._lock:
            if self._aborts == aborts and not self._closed:
                self._client, self._conn = client, conn
                return IoConnected(conn=conn)
        client.close()
        return IoConnected(conn=conn, error="connection closed by the node")

    def _client_for(self, conn: int) -> Noise2Client:
        with self._lock:
            client = self._client if self._conn == conn else None
        if client is None or client.closed:
            raise ControlTransportError("connection closed")
        return client

    # -- ssh action (22d): the SSH-action thread --------------------------------------------------
    def cancel_ssh_action(self, token: int) -> None:
        """The SSH client gave up: reset fetch ``token``'s stream (control drops its pending check)."""
        self._ssh_new.put((token, None, None, 0.0))

    def _ssh_wake(self) -> None:
        self._ssh_new.put((-1, None, None, 0.0))

    def step_ssh_actions(self) -> Message | None:
        """One answered (or timed out) SSH action fetch; waits while none is. The thread sleeps until
        a held response's headers come (its hook queues a wake), a new fetch or cancel, or the nearest
        deadline — so one pending check never delays another's answer, and nothing is polled."""
        nearest = min((d for _, _, _, d in self._ssh_waiting), default=None)
        wait = None if nearest is None else max(0.0, nearest - time.monotonic())
        try:
            item = self._ssh_new.get(timeout=wait)
        except queue.Empty:
            item = None
        else:
            if item is None:  # close(): nothing more will be answered
                self._ssh_waiting.clear()
                return None
            tok, new_client, new_resp, new_deadline = item
            if new_client is not None and new_resp is not None:
                self._ssh_waiting.append((tok, new_client, new_resp, new_deadline))
            elif tok >= 0:  # a cancel (token -1 is a wake: the scan below finds what came)
                for i, (token, client, resp, _) in enumerate(self._ssh_waiting):
                    if token == tok:
                        del self._ssh_waiting[i]
                        client.cancel(resp)
                        break
        now = time.monotonic()
        for i, (token, client, resp, deadline) in enumerate(self._ssh_waiting):
            if resp.headers.is_set():
                del self._ssh_waiting[i]
                try:
                    status = resp.wait_status(0)
                    body = resp.read_all(self._timeout, SSH_ACTION_LIMIT)
                except ControlTransportError as e:
                    return IoSshActionAnswer(token=token, error=str(e))
                return IoSshActionAnswer(token=token, status=status, body=body)
            if now >= deadline:
                del self._ssh_waiting[i]
                client.cancel(resp)
                return IoSshActionAnswer(token=token, error="no SSH action from control in time")
        return None

    # -- the poll thread ---------------------------------------------------------------------------
    def step_poll(self) -> Message | None:
        if self._frames:
            return self._frames.popleft()
        if self._poll is None:
            item = self._polls.get()
            if item is None:
                return None
            stream, resp = item
            try:
                status = resp.wait_status(self._timeout)
            except ControlTransportError as e:
                return IoMapPollEnded(stream=stream, error=str(e))
            if status == 200:
                self._poll = (stream, resp, FrameDecoder())
            return IoMapPollStatus(stream=stream, status=status)
        stream, resp, decoder = self._poll
        try:
            chunk = resp.read_chunk(self._watchdog)
            if chunk is None:
                raise ControlTransportError("map poll ended")
            self._frames.extend(MapFrame(stream=stream, payload=p) for p in decoder.feed(chunk))
        except (ControlTransportError, WireError) as e:
            self._poll = None
            return IoMapPollEnded(stream=stream, error=str(e))
        return self._frames.popleft() if self._frames else None
