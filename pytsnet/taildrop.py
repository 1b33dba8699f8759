"""Taildrop for the device (Go ``feature/taildrop``): who we may send files to, and the sender.

``file_targets`` is Go's ``FileTargets``: with the node capability ``file-sharing``, every peer of our
own user, and every peer the packet filter marks with the peer capability
``https://tailscale.com/cap/file-sharing-target``, that has a peerAPI. ``send_file`` is Go's
``serveFilePut`` towards one of them: ``GET /v0/put/<name>`` for the block hashes of what the
receiver already holds from us (its partial file), skip the leading bytes that match (Go's
``resumeReader``), then ``PUT /v0/put/<name>`` with the rest (``Range: bytes=<offset>-`` when
resuming). Sent over the tailnet (``dev.tcp_connect``), never a host socket. The receiving side is
``actors/taildrop`` on our own peerAPI.
"""

from __future__ import annotations

import inspect
import ipaddress
import os
import stat
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import IO, Any

import anyio
import h11

from pytsnet.actors.peerapi.ingress import peer_caps
from pytsnet.actors.taildrop.put import PEER_CAP_FILE_TARGET, has_file_sharing
from pytsnet.actors.taildrop.store import WaitingFile
from pytsnet.errors import (
    TaildropError,
    TaildropFileExists,
    TaildropNameInvalid,
    TaildropRefused,
    TaildropTooLarge,
)
from pytsnet.messages.dataplane import DataplaneNetmap
from pytsnet.messages.peers import PeerInfo
from pytsnet.net.stream import TcpStream
from pytsnet.wire.taildrop import (
    BadBlockChecksum,
    BlockChecksum,
    InvalidFileName,
    ResumeMatcher,
    put_target,
    validate_base_name,
)

__all__ = ["FileTarget", "Progress", "WaitingFile", "checked_name", "file_targets", "send_file", "size_of",
           "target_matches"]

CHUNK = 256 * 1024
MAX_HASHES = 32 << 20
"""The most hash-line bytes read from a receiver (a 16 GiB partial file is ~26 MB of lines)."""
HTTP_TIMEOUT = 30.0

Progress = Callable[[int, int | None], object | Awaitable[object]]
"""``progress(done, total)``: bytes of the file the receiver has (resumed ones included), and the
file's size (None when unknown); may be async."""


@dataclass(frozen=True)
class FileTarget:
    """Go ``apitype.FileTarget``: a peer we may send files to and its peerAPI."""

    node: PeerInfo
    peerapi_url: str

    @property
    def address(self) -> tuple[str, int]:
        rest = self.peerapi_url.removeprefix("http://")
        host, _, port = rest.rpartition(":")
        return host.strip("[]"), int(port)


def file_targets(nm: DataplaneNetmap | None, peers: list[PeerInfo]) -> list[FileTarget]:
    """Go ``FileTargets``, sorted by name; ``TaildropError`` when not connected or not allowed."""
    if nm is None:
        raise TaildropError("not connected to the tailnet")
    if not has_file_sharing(nm.capabilities.get(nm.self_node.node_id, [])):
        raise TaildropError("file sharing not enabled by Tailscale admin")
    ours = [ipaddress.ip_interface(a).ip for a in nm.self_node.addresses]
    out = []
    for p in peers:
        if not p.addresses:
            continue
        if p.user != nm.self_node.user:
            src = ipaddress.ip_interface(p.addresses[0]).ip
            if PEER_CAP_FILE_TARGET not in peer_caps(nm.packet_filter, src, ours):
                continue
        url = _peerapi_url(p, ours)
        if url:
            out.append(FileTarget(node=p, peerapi_url=url))
    return sorted(out, key=lambda t: t.node.name)


def _peerapi_url(p: PeerInfo, ours: list[Any]) -> str:
    """Go ``PeerAPIBase``: the peer's address of our family with its advertised port ("" if none)."""
    for a in p.addresses:
        ip = ipaddress.ip_interface(a).ip
        port = p.peerapi_ports.get(f"peerapi{ip.version}")
        if port and any(o.version == ip.version for o in ours):
            return f"http://{ip}:{port}" if ip.version == 4 else f"http://[{ip}]:{port}"
    return ""


def checked_name(name: str) -> str:
    try:
        validate_base_name(name)
    except InvalidFileName as e:
        raise TaildropNameInvalid(f"{name[:80]!r}: {e}") from None
    return name


def size_of(f: IO[bytes]) -> int | None:
    """Bytes left in ``f`` when it is a regular file (None: a pipe or a stream of unknown length)."""
    try:
        st = os.fstat(f.fileno())
        if stat.S_ISREG(st.st_mode):
            return st.st_size - f.tell()
    except (OSError, AttributeError, ValueError):
        pass
    try:
        if f.seekable():
            here = f.tell()
            end = f.seek(0, os.SEEK_END)
            f.seek(here)
            return end - here
    except (OSError, AttributeError, ValueError):
        pass
    return None


class _Http:
    """One keep-alive HTTP/1.1 client connection to the receiver's peerAPI (h11 over a tailnet stream)."""

    def __init__(self, stream: TcpStream, host: str) -> None:
        self.stream, self.host = stream, host
        self.h11 = h11.Connection(h11.CLIENT)

    async def send(self, event: Any) -> None:
        data = self.h11.send(event)
        if data:
            await self.stream.send(data)

    async def response(self, max_body: int) -> tuple[int, bytes]:
        """The status and body of the answer (at most ``max_body`` bytes, else ``TaildropError``)."""
        status, body = 0, bytearray()
        with anyio.fail_after(HTTP_TIMEOUT):
            while True:
                ev = self.h11.next_event()
                if ev is h11.NEED_DATA:
                    try:
                        data = await self.stream.receive(65536)
                    except (anyio.EndOfStream, anyio.ClosedResourceError, anyio.BrokenResourceError,
                            OSError):  # reset: the same end for an answer
                        data = b""
                    self.h11.receive_data(data)
                    continue
                if isinstance(ev, h11.Response):
                    if ev.status_code == 100:
                        continue
                    status = ev.status_code
                elif isinstance(ev, h11.Data):
                    body += ev.data
                    if len(body) > max_body:
                        raise TaildropError("the receiver's answer is too large")
                elif isinstance(ev, h11.EndOfMessage):
                    if self.h11.our_state is h11.DONE and self.h11.their_state is h11.DONE:
                        self.h11.start_next_cycle()
                    return status, bytes(body)
                elif isinstance(ev, h11.ConnectionClosed):
                    raise TaildropError("the receiver closed the connection without an answer")


def _raise_for(status: int, body: bytes) -> None:
    text = body.decode("utf-8", "replace").strip()[:200]
    if status == 400 and text.startswith("invalid filename"):
        raise TaildropNameInvalid(f"the receiver refused the name: {text}")
    if status == 403:
        raise TaildropRefused(f"the receiver refused the file: {text}")
    if status == 409:
        raise TaildropFileExists(text)
    if status in (413, 507):
        raise TaildropTooLarge(f"the receiver refused the file: {text}")
    raise TaildropError(f"the receiver answered {status}: {text}")


async def _read(f: IO[bytes], n: int) -> bytes:
    """Up to ``n`` bytes (fewer only at the end), read off the event loop."""
    out = bytearray()
    while len(out) < n:
        chunk = await anyio.to_thread.run_sync(f.read, n - len(out))
        if not chunk:
            break
        out += chunk
    return bytes(out)


async def _report(progress: Progress | None, done: int, total: int | None) -> None:
    if progress is not None:
        r = progress(done, total)
        if inspect.isawaitable(r):
            await r


async def _resume_offset(http: _Http, name: str, f: IO[bytes]) -> tuple[int, bytes]:
    """Go's hash request and ``resumeReader``: the offset to send from and the bytes already read past it."""
    await http.send(h11.Request(method="GET", target=put_target(name),
                                headers=[("Host", http.host), ("Accept", "application/json")]))
    await http.send(h11.EndOfMessage())
    status, body = await http.response(MAX_HASHES)
    if status != 200:  # 404/405: an older receiver without resume (Go: noop); others: send it all
        if status == 403:
            _raise_for(status, body)
        return 0, b""
    matcher = ResumeMatcher()
    for line in body.splitlines():
        try:
            cs = BlockChecksum.from_json(line)
        except BadBlockChecksum:
            break
        n = matcher.check(cs)
        if n == 0:
            break
        block = await _read(f, n)
        if not matcher.feed(cs, block):
            return matcher.offset, block
    return matcher.offset, b""


async def send_file(stream: TcpStream, host: str, f: IO[bytes], name: str, size: int | None,
                    progress: Progress | None = None) -> int:
    """Send ``f`` (from its current position, ``size`` bytes or to its end) as ``name`` over ``stream``
    (connected to the receiver's peerAPI, ``host`` its ``ip:port``); the offset the upload resumed
    from. Typed ``TaildropError``s for the receiver's refusals."""
    http = _Http(stream, host)
    offset, pending = await _resume_offset(http, name, f)
    await _report(progress, offset, size)
    headers = [("Host", host), ("Content-Type", "application/octet-stream")]
    if size is not None:
        headers.append(("Content-Length", str(size - offset)))
    else:
        headers.append(("Transfer-Encoding", "chunked"))
    if offset:
        headers.append(("Range", f"bytes={offset}-"))
    await http.send(h11.Request(method="PUT", target=put_target(name), headers=headers))
    done = offset
    try:
        while True:
            chunk = pending or await _read(f, CHUNK)
            pending = b""
            if not chunk:
                break
            if size is not None and done + len(chunk) > size:
                raise TaildropError(f"the file grew while it was sent (past {size} bytes)")
            await http.send(h11.Data(data=chunk))
            done += len(chunk)
            await _report(progress, done, size)
        if size is not None and done != size:
            raise TaildropError(f"the file shrank while it was sent ({done} of {size} bytes)")
        await http.send(h11.EndOfMessage())
    except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError) as e:
        if isinstance(e, TaildropError):
            raise
        # the receiver may have refused mid-body and closed: its answer says why
        try:
            status, body = await http.response(64 * 1024)
        except (TaildropError, h11.ProtocolError, TimeoutError):
            raise TaildropError(f"the transfer was cut at {done} bytes: {e}") from None
        _raise_for(status, body)
        raise TaildropError(f"the transfer was cut at {done} bytes") from None
    status, body = await http.response(64 * 1024)
    if status != 200:
        _raise_for(status, body)
    return offset


def target_matches(t: FileTarget, peer: str) -> bool:
    """``peer`` names ``t``: its stable ID, MagicDNS name (with or without the domain), hostname or IP."""
    n = t.node
    want = peer.rstrip(".").lower()
    names = {n.stable_id.lower(), n.name.rstrip(".").lower(), n.name.split(".")[0].lower(),
             n.hostname.lower()}
    return want in names or any(want == ipaddress.ip_interface(a).ip.compressed for a in n.addresses)

