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
translates. A backend failure is its ``TaildropBackendError``'s status and text (Go proxies the peer's
status for a put and answers 500 with the error's text for the inbox), an ``OSError`` is 500.
"""

from __future__ import annotations

import json
from typing import BinaryIO, Protocol
from urllib.parse import unquote

from pytsnet.localapi.server import LocalApi, LocalRequest, LocalResponse
from pytsnet.localapi.types import FileTarget, WaitingFile

__all__ = ["MAX_WAIT", "TaildropBackend", "TaildropBackendError", "register"]

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
        except (TaildropBackendError, OSError) as e:
            return _failure(e)
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
