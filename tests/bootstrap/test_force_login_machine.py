"""``TSNET_FORCE_LOGIN`` in the sans-IO login machine: Go's ``LoginInteractive`` ⇒ ``regen``: a node
with a stored login registers a new node key (the old one as ``OldNodeKey``) with the auth key, once
per device start; an actor restart of the same device does not log in again."""

from __future__ import annotations

import random

import pytsnet.wire.control as lm
from pytsnet.wire.control.record import NodeRecord
from pytsnet.wire.keys import NodePrivate
from pytsnet.wire.tailcfg import Hostinfo

URL = "http://control.test"
KEY = "tskey-auth-forced"


def _register(force: bool, *, restarted: bool = False) -> tuple[NodePrivate, lm.SendRegister]:
    stored = NodePrivate.generate()
    cfg = lm.LoginConfig(control_url=URL, hostinfo=Hostinfo(Hostname="me"), auth_key=KEY, force_login=force)
    m = lm.LoginMachine(cfg, rng=random.Random(1))
    m.start(
        0.0, stored_node=NodeRecord(stored, None, True).to_blob(URL), stored_netmap=None, restarted=restarted
    )
    out = m.handle(lm.Connected(m.conn), 0.0)
    [send] = [a for a in out if isinstance(a, lm.SendRegister)]
    return stored, send


def test_stored_login_ignores_the_auth_key_without_force() -> None:
    stored, send = _register(False)
    assert send.request.NodeKey == stored.public() and send.request.Auth is None


def test_force_login_registers_a_new_key_with_the_auth_key() -> None:
    stored, send = _register(True)
    req = send.request
    assert req.NodeKey != stored.public() and req.OldNodeKey == stored.public()
    assert req.Auth is not None and req.Auth.AuthKey == KEY


def test_actor_restart_does_not_force_again() -> None:
    stored, send = _register(True, restarted=True)
    assert send.request.NodeKey == stored.public() and send.request.Auth is None
