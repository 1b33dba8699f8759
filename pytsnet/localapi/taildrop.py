"""The LocalAPI's Taildrop endpoints (Go feature/taildrop/localapi.go at v1.90.9): what ``pytsnet
file cp|get`` and any Go ``local.Client`` (``PushFile``, ``WaitingFiles``, ``AwaitWaitingFiles``,
``GetWaitingFile``, ``DeleteWaitingFile``, ``FileTargets``) call.

* ``file-targets`` (GET; read access, "access denied"): ``[]apitype.FileTarget``, ``[]`` when none.
* ``file-put/<stableID>/<escaped name>`` (PUT; write access, "file access denied"): the request body
  is the file, streamed (never held: the transport hands it as ``LocalRequest.stream``), its
  ``Content-Length`` the declared size (absent: unknown). An unknown target is 404 "node not found";
  no ``/`` after the ID is 400 "bogus URL". Go's multipart ``POST`` (several files with a manifest)
  is not served: 501, never a partial answer.
* ``files/`` (GET, ``?waitsec=N`` waits up to N seconds for a file; write access, as Go): the inbox
  as ``[]apitype.WaitingFile`` (``null`` when empty, as Go's nil slice); ``files/<escaped name>``:
  ``DELETE`` → 204, any other method → the file's bytes (``application/octet-stream``, streamed,
  ``Content-Length`` its size).

The work (the peerAPI PUT with Go's resume, the inbox) is the backend's; this module only
translates. ``DeviceTaildrop`` is the backend over an ``ActorDevice`` (22a's ``send_file``,
``file_targets``, waiting files): the put runs ``send_file`` on the request's thread, the body read
as it arrives; the inbox wait polls (the store has no notification). A backend failure is its
``TaildropBackendError``'s status and text (Go proxies the peer's status for a put and answers 500
with the error's text for the inbox), an ``OSError`` is 500.
"""

from __future__ import annotations

import json
import os
import time
from typing import IO, Any, BinaryIO, Protocol
from urllib.parse import unquote

import anyio

from pytsnet import taildrop as taildrop_facade
from pytsnet.actors.taildrop.store import WaitingFile as StoreWaitingFile
from pytsnet.errors import (
    TaildropError,
    TaildropFileExists,
    TaildropNameInvalid,
    TaildropRefused,
    TaildropTooLarge,
)
from pytsnet.localapi.backend import peer_node
from pytsnet.localapi.server import LocalApi, LocalRequest, LocalResponse
from pytsnet.localapi.types import FileTarget, WaitingFile

__all__ = ["MAX_WAIT", "DeviceTaildrop", "TaildropBackend", "TaildropBackendError", "register"]

MAX_WAIT = 3600
"""``files/?waitsec=`` is capped at this many seconds (Go's CLI asks for an hour at a time)."""


class TaildropBackendError(Exception):
    """What a Taildrop backend raises for a refusal the LocalAPI caller should see: the HTTP status
    (the peer's for a put: 403 not allowed, 409 …; 404 no such file) and the text."""

    def __init__(self, status: int, text: str) -> None:
        super().__init__(text)
        self.status = status


class TaildropBackend(Protocol):
    """The device's Taildrop as the endpoints see it. Blocking: a handler runs on its request's thread."""

    def file_targets(self) -> list[FileTarget]: ...

    def push_file(self, target: FileTarget, name: str, body: BinaryIO, size: int | None) -> None:
        """Send ``body`` (``size`` bytes, None: unknown) as ``name`` to ``target``, resuming as Go."""
        ...

    def waiting_files(self) -> list[WaitingFile]: ...

    def await_waiting_files(self, timeout: float) -> list[WaitingFile]:
        """The inbox once it is not empty, or empty after ``timeout`` seconds."""
        ...

    def open_waiting_file(self, name: str) -> tuple[BinaryIO, int]:
        """The received file ``name`` and its size."""
        ...

    def delete_waiting_file(self, name: str) -> None: ...


def _json(value: object) -> LocalResponse:
    """Go's ``json.NewEncoder(w).Encode``: compact, one trailing newline."""
    return LocalResponse(200, (json.dumps(value, separators=(",", ":")) + "\n").encode(), "application/json")


def _failure(e: TaildropBackendError | OSError) -> LocalResponse:
    if isinstance(e, TaildropBackendError):
        return LocalResponse.error(e.status, str(e))
    return LocalResponse.error(500, e.strerror or str(e))


def _content_length(req: LocalRequest) -> int | None:
    text = req.headers.get("content-length", "")
    return int(text) if text.isdigit() else None


def register(api: LocalApi, backend: TaildropBackend) -> None:
    """Add ``file-targets``, ``file-put/`` and ``files/`` to ``api`` with Go's permissions."""

    def file_targets(_api: LocalApi, req: LocalRequest) -> LocalResponse:
        if req.method != "GET":
            return LocalResponse.error(400, "want GET to list targets")
        try:
            targets = backend.file_targets()
        except (TaildropBackendError, OSError) as e:  # Go ``WriteErrorJSON``: 500, {"error": …}
            return LocalResponse(500, (json.dumps({"error": str(e)}, indent="\t") + "\n").encode(),
                                 "application/json")
        return _json([t.model_dump(mode="json", exclude_defaults=True) for t in targets])

    def file_put(_api: LocalApi, req: LocalRequest) -> LocalResponse:
        if req.method == "POST":
            return LocalResponse.error(501, "multipart file-put is not supported by pytsnet (use PUT)")
        if req.method != "PUT":
            return LocalResponse.error(400, "want PUT to put file")
        upath = req.path.removeprefix("/localapi/v0/file-put/")
        peer_id, sep, escaped = upath.partition("/")
        if not sep:
            return LocalResponse.error(400, "bogus URL")
        try:
            targets = backend.file_targets()
        except (TaildropBackendError, OSError) as e:
            return _failure(e)
        target = next((t for t in targets if t.Node is not None and t.Node.StableID == peer_id), None)
        if target is None:
            return LocalResponse.error(404, "node not found")
        name = _unescape(escaped)
        if name is None:
            return LocalResponse.error(400, "bad filename")
        assert req.stream is not None  # a streaming route: LocalApi.handle always sets it
        try:
            backend.push_file(target, name, req.stream, _content_length(req))
        except (TaildropBackendError, OSError) as e:
            return _failure(e)
        return LocalResponse(200)

    def files(_api: LocalApi, req: LocalRequest) -> LocalResponse:
        suffix = req.path.removeprefix("/localapi/v0/files/")
        if not suffix:
            return _list(req)
        name = _unescape(suffix)
        if name is None:
            return LocalResponse.error(400, "bad filename")
        try:
            if req.method == "DELETE":
                backend.delete_waiting_file(name)
                return LocalResponse(204)
            stream, size = backend.open_waiting_file(name)
        except (TaildropBackendError, OSError) as e:
            return _failure(e)
        return LocalResponse(200, content_type="application/octet-stream", stream=stream, stream_size=size)

    def _list(req: LocalRequest) -> LocalResponse:
        if req.method != "GET":
            return LocalResponse.error(400, "want GET to list files")
        wait = req.query.get("waitsec", "")
        try:
            if wait and wait != "0":
                try:
                    secs = int(wait)
                except ValueError:
                    return LocalResponse.error(400, "invalid waitsec")
                wfs = backend.await_waiting_files(float(min(max(secs, 0), MAX_WAIT)))
            else:
                wfs = backend.waiting_files()
        except (TaildropBackendError, OSError) as e:
            return _failure(e)
        return _json([w.model_dump(mode="json") for w in wfs] or None)

    api.route("file-targets", file_targets, "read", "")
    api.route("file-put/", file_put, "write", "file", streaming=True)
    api.route("files/", files, "write", "file")


POLL = 0.25
"""How often ``DeviceTaildrop.await_waiting_files`` looks at the inbox."""
_STATUS: list[tuple[type[TaildropError], int]] = [(TaildropNameInvalid, 400), (TaildropRefused, 403),
                                                  (TaildropFileExists, 409), (TaildropTooLarge, 413)]


class TaildropDevice(Protocol):
    """What ``DeviceTaildrop`` uses of ``ActorDevice`` (22a's Taildrop API)."""

    def file_targets(self, timeout: float = ...) -> list[taildrop_facade.FileTarget]: ...
    async def send_file(self, peer: Any, source: str | os.PathLike[str] | IO[bytes], *,
                        name: str | None = ..., progress: taildrop_facade.Progress | None = ...,
                        timeout: float = ...) -> int: ...
    def waiting_files(self) -> list[StoreWaitingFile]: ...
    def open_waiting_file(self, name: str) -> BinaryIO: ...
    def delete_waiting_file(self, name: str) -> None: ...


class DeviceTaildrop:
    """``TaildropBackend`` over the device; its typed errors become Go's statuses (name 400, refused
    403, exists 409, too large 413, else 500) with their text."""

    def __init__(self, dev: TaildropDevice) -> None:
        self.dev = dev

    def file_targets(self) -> list[FileTarget]:
        with _translated():
            return [FileTarget(Node=peer_node(t.node, None), PeerAPIURL=t.peerapi_url)
                    for t in self.dev.file_targets()]

    def push_file(self, target: FileTarget, name: str, body: BinaryIO, size: int | None) -> None:
        assert target.Node is not None
        stable_id = target.Node.StableID
        peer = next((t for t in self.dev.file_targets() if t.node.stable_id == stable_id), None)
        if peer is None:
            raise TaildropBackendError(404, "node not found")
        with _translated():
            anyio.run(_send, self.dev, peer, body, name)

    def waiting_files(self) -> list[WaitingFile]:
        with _translated():
            return [WaitingFile(Name=w.name, Size=w.size) for w in self.dev.waiting_files()]

    def await_waiting_files(self, timeout: float) -> list[WaitingFile]:
        deadline = time.monotonic() + timeout
        while not (files := self.waiting_files()) and time.monotonic() < deadline:
            time.sleep(min(POLL, max(deadline - time.monotonic(), 0)))
        return files

    def open_waiting_file(self, name: str) -> tuple[BinaryIO, int]:
        with _translated():
            f = self.dev.open_waiting_file(name)
            return f, os.fstat(f.fileno()).st_size

    def delete_waiting_file(self, name: str) -> None:
        with _translated():
            self.dev.delete_waiting_file(name)


async def _send(dev: TaildropDevice, peer: taildrop_facade.FileTarget, body: BinaryIO, name: str) -> None:
    await dev.send_file(peer, body, name=name)


class _translated:
    """The device's ``TaildropError`` → ``TaildropBackendError`` with Go's status."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, e: BaseException | None, tb: object) -> None:
        if isinstance(e, TaildropError):
            status = next((code for cls, code in _STATUS if isinstance(e, cls)), 500)
            raise TaildropBackendError(status, str(e)) from None


def _unescape(text: str) -> str | None:
    """Go ``url.PathUnescape``: None for a ``%`` not followed by two hex digits (and, here, for
    escapes that are not UTF-8: no file can have that name)."""
    i = text.find("%")
    while i != -1:
        if len(text) < i + 3 or any(c not in "0123456789abcdefABCDEF" for c in text[i + 1:i + 3]):
            return None
        i = text.find("%", i + 3)
    try:
        return unquote(text, errors="strict")
    except UnicodeDecodeError:
        return None
