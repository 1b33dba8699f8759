"""A stand-in ControlRunner for TKA actor tests: answers ``TkaControlCall`` as control's
``/machine/tka/*`` would, from a chain it keeps with the same ``wire.tka`` Authority (in memory).

It lets a test drive the TKA actor without Noise or localnet: tell it what control's chain is, hand out
a forged AUM or a wrong disablement secret, hold a call at a gate (a kill lands mid-sync), and read
every call it got. Answers are Go's ``tailcfg.TKA*Response`` JSON.
"""

from __future__ import annotations

import base64
import json
import threading
from dataclasses import dataclass, field
from typing import Any

from pytsnet.actors.runtime import Actor, handles
from pytsnet.messages.peers import ResendNetmap
from pytsnet.messages.tka import TkaAuthorityUpdate, TkaControlAnswer, TkaControlCall, TkaNetmapInfoWanted
from pytsnet.wire.tka import AUM, aum_hash_text
from pytsnet.wire.tka.authority import Authority
from pytsnet.wire.tka.chonk import MemChonk
from pytsnet.wire.tka.sync import sync_offer_from_text, sync_offer_to_text

__all__ = ["FakeTkaControl", "TkaControlSide"]


def _b64(b: bytes) -> str:
    return base64.b64encode(b).decode()


@dataclass
class TkaControlSide:
    """Control's TKA state, shared by the test and the fake actor (guarded by ``lock``)."""

    authority: Authority | None = None
    chonk: MemChonk = field(default_factory=MemChonk)
    genesis: AUM | None = None
    disabled: bool = False
    disablement_secret: bytes = b""
    """What bootstrap hands out once disabled (a test may set a wrong one)."""
    need_signatures: list[dict[str, Any]] = field(default_factory=list)
    signatures: dict[str, bytes] = field(default_factory=dict)
    """Node ID (init/finish) or submitting node key (sign) → NodeKeySignature bytes."""
    forged: list[bytes] = field(default_factory=list)
    """Serialized AUMs sync/offer adds to MissingAUMs (to prove they are verified, not trusted)."""
    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    gates: dict[str, threading.Event] = field(default_factory=dict)
    """path → an event the call waits for (set by the test)."""
    held: dict[str, threading.Event] = field(default_factory=dict)
    """path → set when a call reached its gate."""
    status: dict[str, int] = field(default_factory=dict)
    """path → an HTTP status to answer instead (e.g. 500)."""
    updates: list[TkaAuthorityUpdate] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    now: float = 1_700_000_000.0

    def head(self) -> str:
        return aum_hash_text(self.authority.head()) if self.authority is not None else ""

    def paths(self) -> list[str]:
        with self.lock:
            return [p for p, _ in self.calls]

    def answer(self, path: str, req: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        with self.lock:
            self.calls.append((path, req))
            if path in self.status:
                return self.status[path], {}
            a = self.authority
            if path == "/machine/tka/bootstrap":
                if self.disabled:
                    return 200, {"DisablementSecret": _b64(self.disablement_secret)}
                if self.genesis is None:
                    return 400, {}
                return 200, {"GenesisAUM": _b64(self.genesis.serialize())}
            if path == "/machine/tka/sync/offer":
                if a is None:
                    return 400, {}
                remote = sync_offer_from_text(req["Head"], req.get("Ancestors") or [])
                missing = [x.serialize() for x in a.missing_aums(self.chonk, remote)] + list(self.forged)
                head, anc = sync_offer_to_text(a.sync_offer(self.chonk))
                return 200, {"Head": head, "Ancestors": list(anc), "MissingAUMs": [_b64(m) for m in missing]}
            if path == "/machine/tka/sync/send":
                if a is None:
                    return 400, {}
                aums = [AUM.unserialize(base64.b64decode(x)) for x in req.get("MissingAUMs") or []]
                if aums:
                    self.authority = a.inform_idempotent(self.chonk, aums, self.now)
                return 200, {"Head": self.head()}
            if path == "/machine/tka/init/begin":
                genesis = AUM.unserialize(base64.b64decode(req["GenesisAUM"]))
                self.chonk = MemChonk()
                self.authority = Authority.bootstrap(self.chonk, genesis, self.now)
                self.genesis = genesis
                return 200, {"NeedSignatures": self.need_signatures}
            if path == "/machine/tka/init/finish":
                for node_id, sig in (req.get("Signatures") or {}).items():
                    self.signatures[str(node_id)] = base64.b64decode(sig)
                return 200, {}
            if path == "/machine/tka/sign":
                self.signatures[req["NodeKey"]] = base64.b64decode(req["Signature"])
                return 200, {}
            if path == "/machine/tka/disable":
                secret = base64.b64decode(req.get("DisablementSecret") or "")
                if a is None or not a.valid_disablement(secret):
                    return 400, {}
                self.disabled, self.disablement_secret = True, secret
                return 200, {}
            return 404, {}


class FakeTkaControl(Actor):
    """Answers the TKA actor's calls from a ``TkaControlSide``; records the updates it is told."""

    def __init__(self, side: TkaControlSide) -> None:
        self.side = side

    @handles(TkaControlCall)
    def on_call(self, msg: TkaControlCall) -> TkaControlAnswer:
        gate = self.side.gates.get(msg.path)
        if gate is not None:
            self.side.held.setdefault(msg.path, threading.Event()).set()
            gate.wait(30)
        status, doc = self.side.answer(msg.path, json.loads(msg.body or b"{}"))
        return TkaControlAnswer(status=status, body=json.dumps(doc).encode())

    @handles(TkaAuthorityUpdate)
    def on_update(self, msg: TkaAuthorityUpdate) -> None:
        with self.side.lock:
            self.side.updates.append(msg)

    @handles(TkaNetmapInfoWanted, ResendNetmap)
    def on_wanted(self, msg: TkaNetmapInfoWanted | ResendNetmap) -> None:
        """The test tells netmaps itself: nothing to re-send."""
