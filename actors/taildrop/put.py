"""The peerAPI's ``/v0/put/`` (Go ``handlePeerPutWithBackend``): who may send us files, and the answers.

Go's rules, in its order: the node must have a Taildrop directory (else 403 ``Taildrop disabled; no
storage directory``); the caller must be allowed (``canPutFile``: never an ``UnsignedPeerAPIOnly``
peer; a node of our own user when neither is tagged, or one the packet filter grants the peer
capability ``https://tailscale.com/cap/file-send`` towards us) and we must have the node capability
``https://tailscale.com/cap/file-sharing`` (localnet's short ``file-sharing`` too), else 403 with the
same text; the name is path-unescaped and checked (400 ``invalid filename``); ``GET`` streams the
resume hashes of the caller's partial file, ``PUT`` writes the body (``Range: bytes=N-`` resumes at
N; anything else 400 ``invalid Range header``), other methods 405.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from pytsnet.actors.taildrop.store import PutRefused, TaildropStore, Upload
from pytsnet.messages.peers import PeerInfo
from pytsnet.wire.peerapi import PeerApiRequest, PeerApiResponse
from pytsnet.wire.taildrop import PUT_PATH, InvalidFileName, name_of_target, parse_range

__all__ = ["CAP_FILE_SHARING", "NO_PUT", "NO_TAILDROP", "PEER_CAP_FILE_SEND", "PEER_CAP_FILE_TARGET",
           "PutAccess", "can_put_file", "is_put", "put_answer", "put_begin"]

CAP_FILE_SHARING = "https://tailscale.com/cap/file-sharing"
"""``tailcfg.CapabilityFileSharing``: this node may use Taildrop (a node capability)."""
CAP_FILE_SHARING_SHORT = "file-sharing"
PEER_CAP_FILE_SEND = "https://tailscale.com/cap/file-send"
"""``tailcfg.PeerCapabilityFileSharingSend``: the peer (of another user) may send us files."""
PEER_CAP_FILE_TARGET = "https://tailscale.com/cap/file-sharing-target"
"""``tailcfg.PeerCapabilityFileSharingTarget``: we may send files to the peer holding it."""
NO_TAILDROP = "Taildrop disabled; no storage directory"


@dataclass(frozen=True)
class PutAccess:
    """What ``/v0/put/`` needs to know about the caller (decided once per connection)."""

    allowed: bool
    sender: str
    """The caller's stable node ID (its partial files are its own: Go's ``clientID``)."""


NO_PUT = PutAccess(allowed=False, sender="")


def has_file_sharing(caps: list[str]) -> bool:
    return CAP_FILE_SHARING in caps or CAP_FILE_SHARING_SHORT in caps


def can_put_file(peer: PeerInfo, self_node: PeerInfo, peer_caps: set[str], self_caps: list[str]) -> bool:
    """Go ``canPutFile`` and ``hasCapFileSharing`` together."""
    if peer.unsigned_peer_api_only or not has_file_sharing(self_caps):
        return False
    self_untagged = not peer.tags and not self_node.tags and peer.user == self_node.user
    return self_untagged or PEER_CAP_FILE_SEND in peer_caps


def is_put(req: PeerApiRequest) -> bool:
    """The requests whose body is streamed to disk, not buffered."""
    return req.method == "PUT" and req.path.startswith(PUT_PATH)


def _text(status: int, text: str) -> PeerApiResponse:
    return PeerApiResponse(status, text.encode() + b"\n")


def _name(req: PeerApiRequest) -> str | PeerApiResponse:
    raw = req.target.split("?", 1)[0]
    try:
        return name_of_target(raw)
    except InvalidFileName:
        return _text(400, "invalid filename")


def put_answer(req: PeerApiRequest, store: TaildropStore | None, access: PutAccess) -> PeerApiResponse:
    """A non-streamed ``/v0/put/`` request (GET hashes or list, other methods)."""
    if store is None or not access.allowed:
        return _text(403, NO_TAILDROP)
    if req.method != "GET":
        return _text(405, "expected method GET or PUT")
    name = _name(req)
    if isinstance(name, PeerApiResponse):
        return name
    if name == "":
        return PeerApiResponse(200, json.dumps(store.partial_files(access.sender) or None).encode() + b"\n",
                               "application/json")
    try:
        return PeerApiResponse(200, store.hashes(access.sender, name), "application/json")
    except InvalidFileName:
        return _text(400, "invalid filename")
    except PutRefused as e:
        return _text(e.status, e.public)


def put_begin(req: PeerApiRequest, store: TaildropStore | None,
              access: PutAccess) -> Upload | PeerApiResponse:
    """A ``PUT``'s head: the upload to stream the body into, or the refusal."""
    if store is None or not access.allowed:
        return _text(403, NO_TAILDROP)
    name = _name(req)
    if isinstance(name, PeerApiResponse):
        return name
    offset = 0
    if "range" in req.headers:
        parsed = parse_range(req.headers["range"])
        if parsed is None:
            return _text(400, "invalid Range header")
        offset = parsed
    length_text = req.headers.get("content-length")
    length = int(length_text) if length_text is not None and length_text.isdigit() else -1
    try:
        return store.begin(access.sender, name, offset, length)
    except InvalidFileName:
        return _text(400, "invalid filename")
    except PutRefused as e:
        return _text(e.status, e.public)
