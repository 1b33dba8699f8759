"""``LocalClient``: Go's ``local.Client`` — the LocalAPI's calls, answers as the Go-mirror models.

In-process (``dev.local_client()``: the route table called directly, no socket, read and write
allowed as Go tsnet's ``LocalClient``) or over a unix socket (``LocalClient.unix(path)``: the CLI).
Every answer is decoded strictly (``pytsnet.localapi.types``), so a shape drift is an error here.
"""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Callable, Iterator
from typing import BinaryIO, TypeVar
from urllib.parse import quote, urlencode

import httpx
from pydantic import TypeAdapter, ValidationError

from pytsnet.errors import LocalApiError
from pytsnet.localapi.http import LOCAL_API_HOST
from pytsnet.localapi.server import PREFIX, LocalApi, LocalRequest, LocalResponse, MaskedPrefs, Prefs
from pytsnet.localapi.types import (
    FileTarget,
    NetworkLockStatus,
    NetworkLockUpdate,
    PingResult,
    Status,
    TkaKeyJSON,
    TokenResponse,
    WaitingFile,
    WhoIsResponse,
)
from pytsnet.wire.keys import NLPrivate
from pytsnet.wire.serve import ServeConfig, ServeConfigError, parse_serve_config, to_go_json

__all__ = ["LocalClient", "Transport"]

Transport = Callable[[LocalRequest], LocalResponse]


class LocalClient:
    def __init__(self, transport: Transport) -> None:
        self._send = transport

    @classmethod
    def in_process(cls, api: LocalApi) -> LocalClient:
        return cls(lambda r: api.handle(r, permit_read=True, permit_write=True))

    @classmethod
    def unix(cls, path: str, timeout: float = 30.0) -> LocalClient:
        """Over the unix socket at ``path`` (``Host: local-tailscaled.sock``, as Go's client)."""

        def send(req: LocalRequest) -> LocalResponse:
            url = f"http://{LOCAL_API_HOST}{req.path}" + (f"?{urlencode(req.query)}" if req.query else "")
            # -- taildrop (22c): a streamed body each way, a long poll's wait on top of the timeout --
            wait = req.query.get("waitsec", "0")
            c = httpx.Client(transport=httpx.HTTPTransport(uds=path),
                             timeout=timeout + (int(wait) if wait.isdigit() else 0))
            content = _chunks(req.stream) if req.stream is not None else (req.body or None)
            try:
                r = c.send(c.build_request(req.method, url, content=content, headers=req.headers or None),
                           stream=True)
                if r.status_code == 200 and r.headers.get("content-type") == "application/octet-stream":
                    return LocalResponse(200, b"", "application/octet-stream",
                                         headers=tuple(r.headers.items()),
                                         stream=io.BufferedReader(_ResponseBody(r, c), CHUNK),
                                         stream_size=int(r.headers.get("content-length", "-1")))
                r.read()
            except httpx.HTTPError as e:
                c.close()
                raise LocalApiError(f"LocalAPI at {path}: {e}") from None
            c.close()
            return LocalResponse(r.status_code, r.content, r.headers.get("content-type", ""),
                                 headers=tuple(r.headers.items()))

        return cls(send)

    def request(self, method: str, name: str, query: dict[str, str] | None = None,
                body: bytes = b"") -> bytes:
        """``/localapi/v0/<name>``; its body, or ``LocalApiError`` for a status outside 2xx."""
        resp = self._send(LocalRequest(method, PREFIX + name, query or {}, body))
        if not 200 <= resp.status < 300:
            text = resp.body.decode("utf-8", "replace").strip()
            raise LocalApiError(f"{resp.status}: {text}", resp.status)
        return resp.body

    def status(self, peers: bool = True) -> Status:
        return _decode(Status, self.request("GET", "status", None if peers else {"peers": "false"}))

    def status_without_peers(self) -> Status:
        return self.status(peers=False)

    def whois(self, addr: str, proto: str = "") -> WhoIsResponse:
        """``addr``: an IP, ``IP:port`` or ``nodekey:…`` (Go ``WhoIs`` / ``WhoIsProto``)."""
        q = {"addr": addr} | ({"proto": proto} if proto else {})
        return _decode(WhoIsResponse, self.request("GET", "whois", q))

    def prefs(self) -> Prefs:
        return _decode(Prefs, self.request("GET", "prefs"))

    def edit_prefs(self, mp: MaskedPrefs) -> Prefs:
        body = mp.model_dump_json(exclude_defaults=True).encode()
        return _decode(Prefs, self.request("PATCH", "prefs", body=body))

    def ping(self, ip: str, kind: str = "disco") -> PingResult:
        """Go ``PingWithOpts``: one ping of ``kind`` (this node sends ``disco``)."""
        return _decode(PingResult, self.request("POST", "ping", {"ip": ip, "type": kind}))

    def logout(self) -> None:
        self.request("POST", "logout")

    def id_token(self, aud: str) -> TokenResponse:
        """Go ``IDToken``: an OIDC ID token for ``aud``, signed by control. A malformed answer is
        reported without its content (it may hold a token)."""
        body = self.request("GET", "id-token", {"aud": aud})
        try:
            return TokenResponse.model_validate_json(body)
        except ValidationError as e:
            raise LocalApiError(f"LocalAPI answer is not a TokenResponse ({e.error_count()} error(s))") \
                from None

    def cert_pair(self, domain: str) -> tuple[bytes, bytes]:
        """Go ``CertPair``: ``(cert PEM, key PEM)`` from ``cert/<domain>?type=pair``, which is the key
        block then the cert blocks (split at the first ``--\\n--``, as Go)."""
        body = self.request("GET", f"cert/{domain}", {"type": "pair"})
        i = body.find(b"--\n--")
        if i == -1:
            raise LocalApiError("unexpected output: no delimiter")
        i += len(b"--\n")
        key, cert = body[:i], body[i:]
        if b" PRIVATE KEY-----" in cert:
            raise LocalApiError("unexpected output: key in cert")
        return cert, key


    def get_serve_config(self) -> tuple[ServeConfig | None, str]:
        """Go ``GetServeConfig``: the config in force and its ETag (the ``Etag`` header)."""
        resp = self._send(LocalRequest("GET", PREFIX + "serve-config"))
        if resp.status != 200:
            raise LocalApiError(f"{resp.status}: {resp.body.decode('utf-8', 'replace').strip()}", resp.status)
        try:
            cfg = parse_serve_config(resp.body)
        except ServeConfigError as e:
            raise LocalApiError(f"LocalAPI answer is not a ServeConfig: {e}") from None
        return cfg, next((v for k, v in resp.headers if k.lower() == "etag"), "")

    def set_serve_config(self, cfg: ServeConfig | None, etag: str = "") -> None:
        """Go ``SetServeConfig``: ``etag`` (from ``get_serve_config``) goes as ``If-Match``; a stale one is
        ``LocalApiError`` with status 412."""
        headers = {"if-match": etag} if etag else {}
        req = LocalRequest("POST", PREFIX + "serve-config", body=to_go_json(cfg), headers=headers)
        resp = self._send(req)
        if resp.status != 200:
            raise LocalApiError(f"{resp.status}: {resp.body.decode('utf-8', 'replace').strip()}", resp.status)

    # -- Tailnet Lock (21f): Go client/local/tailnetlock.go --
    def network_lock_status(self) -> NetworkLockStatus:
        return _decode(NetworkLockStatus, self.request("GET", "tka/status"))

    def network_lock_init(self, keys: list[TkaKeyJSON], disablement_values: list[bytes],
                          support_disablement: bytes = b"") -> NetworkLockStatus:
        """Go ``NetworkLockInit``: ``disablement_values`` are KDF outputs (``disablement_kdf``), never
        the secrets."""
        body = {"Keys": [k.model_dump(mode="json") for k in keys],
                "DisablementValues": [_b64(v) for v in disablement_values],
                "SupportDisablement": _b64(support_disablement) if support_disablement else None}
        return _decode(NetworkLockStatus, self.request("POST", "tka/init", body=json.dumps(body).encode()))

    def network_lock_sign(self, node_key: str, rotation_public: bytes | None = None) -> None:
        """Go ``NetworkLockSign``: ``node_key`` is ``nodekey:…``; ``rotation_public`` the 32-byte key that
        may re-sign the node's rotated keys."""
        rotation = None if rotation_public is None else _b64(rotation_public)
        body = {"NodeKey": node_key, "RotationPublic": rotation}
        self.request("POST", "tka/sign", body=json.dumps(body).encode())

    def network_lock_modify(self, add_keys: list[TkaKeyJSON], remove_keys: list[TkaKeyJSON]) -> None:
        body = {"AddKeys": [k.model_dump(mode="json") for k in add_keys] or None,
                "RemoveKeys": [k.model_dump(mode="json") for k in remove_keys] or None}
        self.request("POST", "tka/modify", body=json.dumps(body).encode())

    def network_lock_disable(self, secret: bytes) -> None:
        """Go ``NetworkLockDisable``: the raw secret is the body."""
        self.request("POST", "tka/disable", body=secret)

    def network_lock_log(self, max_entries: int) -> list[NetworkLockUpdate]:
        body = self.request("GET", "tka/log", {"limit": str(max_entries)})
        try:
            return _UPDATES.validate_json(body) or []
        except ValidationError as e:
            raise LocalApiError(f"LocalAPI answer is not a []NetworkLockUpdate: {e}") from None

    def network_lock_wrap_preauth_key(self, preauth_key: str, tka_key: NLPrivate) -> str:
        """Go ``NetworkLockWrapPreauthKey``: the auth key with a credential signature by ``tka_key``."""
        body = {"TSKey": preauth_key, "TKAKey": tka_key.to_text()}
        return self.request("POST", "tka/wrap-preauth-key", body=json.dumps(body).encode()).decode()

    def network_lock_affected_sigs(self, key_id: bytes) -> list[bytes]:
        """Go ``NetworkLockAffectedSigs`` (this node answers 501: ``LocalApiError``)."""
        body = self.request("POST", "tka/affected-sigs", body=key_id)
        try:
            return [base64.b64decode(s, validate=True) for s in json.loads(body) or []]
        except (ValueError, TypeError) as e:
            raise LocalApiError(f"LocalAPI answer is not a []MarshaledSignature: {e}") from None


    # -- taildrop (22c): Go client/local/local.go's file calls --
    def file_targets(self) -> list[FileTarget]:
        """Go ``FileTargets``: the nodes this one may send files to."""
        return _decode_list(_TARGETS, "[]FileTarget", self.request("GET", "file-targets"))

    def waiting_files(self) -> list[WaitingFile]:
        """Go ``WaitingFiles``: the inbox now."""
        return self.await_waiting_files(0)

    def await_waiting_files(self, seconds: int) -> list[WaitingFile]:
        """Go ``AwaitWaitingFiles``: the inbox once not empty, or empty after ``seconds``."""
        body = self.request("GET", "files/", {"waitsec": str(max(int(seconds), 0))})
        return _decode_list(_WAITING, "[]WaitingFile", body)

    def delete_waiting_file(self, name: str) -> None:
        """Go ``DeleteWaitingFile``."""
        self.request("DELETE", "files/" + quote(name, safe=""))

    def get_waiting_file(self, name: str) -> tuple[BinaryIO, int]:
        """Go ``GetWaitingFile``: the file as a stream (close it) and its size."""
        resp = self._send(LocalRequest("GET", PREFIX + "files/" + quote(name, safe="")))
        if resp.status != 200 or resp.stream is None:
            if resp.stream is not None:
                resp.stream.close()
            raise LocalApiError(f"{resp.status}: {resp.body.decode('utf-8', 'replace').strip()}", resp.status)
        if resp.stream_size < 0:
            resp.stream.close()
            raise LocalApiError("unexpected chunking")
        return resp.stream, resp.stream_size

    def push_file(self, target: str, size: int, name: str, body: BinaryIO) -> None:
        """Go ``PushFile``: send ``body`` as ``name`` to the node with StableID ``target`` (``size``
        -1: unknown). The body is read as it goes (wrap it to count progress)."""
        headers = {"content-length": str(size)} if size >= 0 else {}
        req = LocalRequest("PUT", f"{PREFIX}file-put/{target}/{quote(name, safe='')}", headers=headers,
                           stream=body)
        resp = self._send(req)
        if resp.status != 200:
            raise LocalApiError(f"{resp.status}: {resp.body.decode('utf-8', 'replace').strip()}", resp.status)


_UPDATES = TypeAdapter(list[NetworkLockUpdate] | None)
_TARGETS = TypeAdapter(list[FileTarget] | None)
_WAITING = TypeAdapter(list[WaitingFile] | None)
_T = TypeVar("_T")


def _decode_list(adapter: TypeAdapter[list[_T] | None], what: str, body: bytes) -> list[_T]:
    try:
        return adapter.validate_json(body) or []
    except ValidationError as e:
        raise LocalApiError(f"LocalAPI answer is not a {what}: {e}") from None


CHUNK = 256 * 1024


def _chunks(stream: BinaryIO) -> Iterator[bytes]:
    """A request body read as httpx sends it."""
    while chunk := stream.read(CHUNK):
        yield chunk


class _ResponseBody(io.RawIOBase):
    """An answer's body over the socket, read as the caller goes; closing it closes the connection."""

    def __init__(self, resp: httpx.Response, client: httpx.Client) -> None:
        self._it = resp.iter_raw(CHUNK)
        self._resp = resp
        self._client = client
        self._pending = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buf: memoryview) -> int:  # type: ignore[override]
        while not self._pending:
            try:
                self._pending = next(self._it)
            except StopIteration:
                return 0
            except httpx.HTTPError as e:
                raise LocalApiError(f"LocalAPI file body: {e}") from None
        n = min(len(buf), len(self._pending))
        buf[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        return n

    def close(self) -> None:
        if not self.closed:
            self._resp.close()
            self._client.close()
        super().close()


def _b64(b: bytes) -> str:
    return base64.b64encode(b).decode()


_M = TypeVar("_M", Status, WhoIsResponse, Prefs, PingResult, NetworkLockStatus)


def _decode(model: type[_M], body: bytes) -> _M:
    try:
        return model.model_validate_json(body)
    except ValidationError as e:
        raise LocalApiError(f"LocalAPI answer is not a {model.__name__}: {e}") from None
