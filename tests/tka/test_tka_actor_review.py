"""Review of issue 21 (r1): a control answer to a ``/machine/tka/*`` call that ``json.loads`` cannot take
(deeply nested JSON raises ``RecursionError``, not ``ValueError``) must be a typed control failure, not a
crash of the TKA actor. A crash restarts it; without a state directory (in-memory chain, as Go) the new
incarnation has forgotten the verified chain and bootstraps again from whatever genesis control hands out.

Fixed by 21i: ``_doc`` (the answer parser of every call) catches ``RecursionError`` with
``ValueError``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from test_tka_actor import Rig, wait

from pytsnet.actors.runtime import handles
from pytsnet.messages.tka import TkaControlAnswer, TkaControlCall, TkaStatusAsk
from pytsnet.testing.tka_control import FakeTkaControl
from pytsnet.wire.keys import NLPrivate
from pytsnet.wire.tka import aum_hash_text

pytestmark = pytest.mark.timeout(60)
NESTED = b"[" * 200_000


class NestedJsonControl(FakeTkaControl):
    """Answers sync/offer with deeply nested JSON once ``side.status`` names it with status 299."""

    @handles(TkaControlCall)
    def on_call(self, msg: TkaControlCall) -> TkaControlAnswer:
        if self.side.status.get(msg.path) == 299:
            return TkaControlAnswer(status=200, body=NESTED)
        return super().on_call(msg)


@pytest.fixture
def rig(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Rig]:
    monkeypatch.setattr("test_tka_actor.FakeTkaControl", NestedJsonControl)
    r = Rig(tmp_path, chonk_dir=False)
    yield r
    r.close()


def test_nested_json_answer_is_a_control_failure_not_a_restart(rig: Rig) -> None:
    admin = NLPrivate.generate()
    genesis = rig.control_genesis(admin, rig.nl)
    rig.ref.tell(rig.info())
    wait(lambda: rig.last() is not None and rig.last().enabled, what="enabled")  # type: ignore[union-attr]
    head = aum_hash_text(genesis.hash())
    rig.side.status["/machine/tka/sync/offer"] = 299
    rig.ref.tell(rig.info().model_copy(update={"head": "B" * 52}))  # a head we lack: sync
    wait(lambda: (st := rig.ref.ask(TkaStatusAsk())).last_error != "" or not st.enabled,
         what="the failure recorded, or the chain lost")
    st = rig.ref.ask(TkaStatusAsk())
    assert st.enabled and st.head == head  # the verified chain is still held (no restart)
    assert "sync/offer" in st.last_error
    # Control now hands out a genesis of its own: a node that kept its chain never bootstraps it.
    rig.side.status.clear()
    rig.control_genesis(NLPrivate.generate(), rig.nl)
    rig.ref.tell(rig.info())
    wait(lambda: "/machine/tka/sync/offer" in rig.side.paths()[-1:], what="a sync against the new chain")
    assert rig.ref.ask(TkaStatusAsk()).head == head
