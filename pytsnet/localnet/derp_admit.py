"""localnet as a DERP admission controller: ``POST /derp/admit`` for a derper's ``--verify-client-url``.

Go's derper POSTs a ``tailcfg.DERPAdmitClientRequest`` per connecting client and admits it only on a
200 ``DERPAdmitClientResponse{Allow: true}``; Go's control plane has no public path for this, so the
path is ours. The answer is the same rule localnet's own relay applies (:func:`node_admitted`): a
registered, authorized, logged-in node whose key has not expired. A malformed request gets 400 (the
derper then refuses the client); anything but POST gets 405. The endpoint tells a caller only whether a
node key (public, sent in the clear to every DERP server) belongs to the tailnet.
"""

from __future__ import annotations

import asyncio
import time

from pytsnet.derper.admit import AdmitFormatError, parse_request, response_body
from pytsnet.localnet import http1
from pytsnet.localnet.store import Store
from pytsnet.wire.keys import NodePublic

ADMIT_PATH = "/derp/admit"


def node_admitted(store: Store, key: NodePublic, now: float | None = None) -> bool:
    """A registered, authorized, logged-in node whose key has not expired."""
    node = store.node_by_key(key.to_text())
    when = time.time() if now is None else now
    return (node is not None and node.authorized and not node.logged_out
            and (node.key_expiry is None or node.key_expiry > when))


class AdmitEndpoint:
    """The ``/derp/admit`` handler (mounted on the control listener) and its counters."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.allowed = 0
        self.denied = 0
        self.bad = 0

    async def handle(self, req: http1.Request, reader: asyncio.StreamReader,
                     writer: asyncio.StreamWriter) -> None:
        if req.method != "POST":
            writer.write(http1.response(405, b"POST a tailcfg.DERPAdmitClientRequest\n"))
            return
        try:
            key, _source = parse_request(req.body)
        except AdmitFormatError as e:
            self.bad += 1
            writer.write(http1.response(400, f"{e}\n".encode()))
            return
        allow = node_admitted(self.store, key)
        if allow:
            self.allowed += 1
        else:
            self.denied += 1
        writer.write(http1.response(200, response_body(allow), content_type="application/json"))
