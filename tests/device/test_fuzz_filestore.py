"""Fuzzed state files: a damaged ``tailscaled.state`` is a ``StateStoreError`` naming the file or key.

Whatever bytes sit in the state dir, loading (``FileStore``, then ``check_state``, then the control
runner's own reads of the keys it passed) either works or raises ``StateStoreError`` naming the
file or the key — never another exception — and leaves the file byte-for-byte as it was.
"""

from __future__ import annotations

import base64
import json
import os
import random
import time
import tracemalloc
from collections.abc import Mapping
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pytsnet.wire.control as login
from pytsnet.actors.control.runner import RunnerConfig
from pytsnet.config import Config
from pytsnet.device import ActorDevice
from pytsnet.errors import StateStoreError
from pytsnet.messages.control import DeviceState
from pytsnet.state import (
    MACHINE_KEY,
    MAX_STATE_FILE,
    NETMAP,
    NODE,
    STATE_FILE,
    FileStore,
    MemoryStore,
    check_state,
)
from pytsnet.wire.keys import MachinePrivate, NodePrivate

FUZZ = settings(max_examples=150, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

_MK = MachinePrivate.generate().to_text()
_NK = NodePrivate.generate().to_text()
_OLD = NodePrivate.generate().public().to_text()
_SELF = {"ID": 7, "Name": "me.localnet.", "Addresses": ["100.64.0.7/32"], "MachineAuthorized": True,
         "Key": NodePrivate.generate().public().to_text(), "KeyExpiry": "2099-01-01T00:00:00Z"}
VALID = {MACHINE_KEY: _MK.encode(),
         NODE: json.dumps({"NodePrivate": _NK, "LoggedIn": True, "OldNodeKey": _OLD, "ControlURL": "http://x"}).encode(),
         NETMAP: json.dumps({"Node": _SELF, "Domain": "localnet"}).encode()}


def _file(values: Mapping[str, object]) -> bytes:
    """A state file as FileStore writes it, from key → bytes (or any JSON value, for wrong types)."""
    doc = {k: base64.b64encode(v).decode() if isinstance(v, bytes) else v for k, v in values.items()}
    return json.dumps(doc, indent=1).encode()


VALID_FILE = _file(VALID)

# -- strategies --------------------------------------------------------------------------------
_leaf = st.one_of(st.none(), st.booleans(), st.integers(), st.integers(min_value=10**300, max_value=10**301),
                  st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=30),
                  st.sampled_from([_MK, _NK, _OLD, "privkey:", "nodekey:zz", "100.64.0.1/32", "x" * 5000,
                                   "2099-01-01T00:00:00Z", "0001-01-01T00:00:00Z", "9999-12-31T23:59:59Z"]))
_json = st.recursive(_leaf, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=10), inner, max_size=4)), max_leaves=10)


def _obj(fields: dict[str, object]) -> st.SearchStrategy[dict[str, object]]:
    """Objects shaped like a real value whose fields hold anything (or their real value)."""
    return st.fixed_dictionaries({}, optional={k: st.one_of(st.just(v), _json) for k, v in fields.items()})


_self_node = _obj(_SELF)
_node_doc = _obj({"NodePrivate": _NK, "LoggedIn": True, "OldNodeKey": _OLD, "ControlURL": "http://x"})
_netmap_doc = st.one_of(_obj({"Domain": "localnet"}).flatmap(
    lambda d: st.one_of(_self_node, _json).map(lambda n: {**d, "Node": n})), _json)
_deep = st.integers(min_value=1, max_value=5000).map(lambda n: "[" * n + "]" * n)
_value_bytes = st.one_of(
    st.binary(max_size=64),
    st.builds(json.dumps, st.one_of(_node_doc, _netmap_doc, _json)).map(str.encode),
    _deep.map(str.encode), st.just(b'{"NodePrivate": ' + b"9" * 5000 + b"}"),
    st.just(b'{"Node": {"ID": Infinity, "LoggedIn": true}}'), st.just(b'{"Node": {"ID": NaN}}'),
)
# a key maps to base64 of fuzzed bytes, or to a JSON value that is not base64 text at all
_entry = st.one_of(_value_bytes, _json, st.just("@@not base64@@"), st.just("é"))
_state_values = st.fixed_dictionaries({}, optional={
    MACHINE_KEY: st.one_of(st.just(VALID[MACHINE_KEY]), _entry),
    NODE: st.one_of(st.just(VALID[NODE]), _entry),
    NETMAP: st.one_of(st.just(VALID[NETMAP]), _entry),
    "other": _entry})


@st.composite
def _mutated(draw: st.DrawFn) -> bytes:
    """The valid file truncated, or with bytes flipped, inserted or deleted."""
    b = bytearray(VALID_FILE)
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(0, len(b)))
        op = draw(st.sampled_from(["cut", "flip", "insert", "delete"]))
        if op == "cut":
            del b[i:]
        elif op == "flip" and i < len(b):
            b[i] ^= draw(st.integers(1, 255))
        elif op == "insert":
            b[i:i] = draw(st.binary(min_size=1, max_size=8))
        else:
            del b[i:i + draw(st.integers(1, 16))]
    return bytes(b)


_files = st.one_of(st.binary(max_size=300), _mutated(), _state_values.map(_file),
                   _json.map(lambda v: json.dumps(v).encode()), _deep.map(str.encode))


# -- the property ------------------------------------------------------------------------------
def load_like_a_device(path: Path) -> None:
    """What ``ActorDevice`` does with a state dir before and as its control runner starts."""
    store = FileStore(path)
    check_state(store)
    mem = MemoryStore()  # the runner writes fresh keys when some are missing: keep the file as it is
    for k in (MACHINE_KEY, NODE, NETMAP):
        if (v := store.read_state(k)) is not None:
            mem.write_state(k, v)
    if raw := mem.read_state(MACHINE_KEY):  # what the runner's on_start parses before the machine
        MachinePrivate.from_text(raw.decode())
    config = RunnerConfig(control_url="http://127.0.0.1:9", hostname="fuzz").login_config()
    machine = login.LoginMachine(config, rng=random.Random(0))
    actions = machine.start(time.time(), stored_node=mem.read_state(NODE),
                            stored_netmap=mem.read_state(NETMAP), restarted=True)  # reads the self node too
    for a in actions:
        if isinstance(a, login.PublishStatus):
            DeviceState(state=a.status.state, addresses=list(a.status.addresses), name=a.status.name,
                        node_id=a.status.node_id)


def assert_loads_or_refuses(path: Path, content: bytes) -> None:
    path.write_bytes(content)
    try:
        load_like_a_device(path)
    except StateStoreError as e:
        text = str(e)
        assert str(path) in text or any(repr(k) in text for k in (MACHINE_KEY, NODE, NETMAP)), text
        assert "\n" not in text
    assert path.read_bytes() == content  # never rewritten, repaired or truncated by a load


def test_the_valid_file_loads(tmp_path: Path) -> None:
    """The oracle's baseline: the file the mutations start from is accepted."""
    path = tmp_path / STATE_FILE
    path.write_bytes(VALID_FILE)
    load_like_a_device(path)


@FUZZ
@given(content=_files)
def test_fuzz_state_file_loads_or_is_a_state_store_error(tmp_path: Path, content: bytes) -> None:
    assert_loads_or_refuses(tmp_path / STATE_FILE, content)


@pytest.mark.parametrize("content", [
    b"[" * 100_000 + b"]" * 100_000,  # nesting deeper than the JSON decoder's recursion limit
    _file({NODE: b"[" * 100_000 + b"]" * 100_000}),
    _file({NETMAP: b'{"Node": {"ID": Infinity}}'}),
    _file({NODE: VALID[NODE], NETMAP: b'{"Node": {"ID": Infinity}}'}),  # the runner reads it: int(inf)
    _file({NODE: VALID[NODE], NETMAP: b'{"Node": {"ID": "seven"}}'}),
    _file({NODE: VALID[NODE], NETMAP: b'{"Node": {"Addresses": 5}}'}),
    _file({NODE: VALID[NODE], NETMAP: b'{"Node": {"Name": ["a"], "Addresses": [{"x": 1}]}}'}),
    _file({NODE: VALID[NODE],
           NETMAP: json.dumps({"Node": {**_SELF, "KeyExpiry": "0002-01-01T00:00:00"}}).encode()}),
    _file({"x": 5}), _file({"x": "é"}), _file({"x": None}),
])
def test_known_crashers_are_state_store_errors_or_load(tmp_path: Path, content: bytes) -> None:
    assert_loads_or_refuses(tmp_path / STATE_FILE, content)


def test_a_state_file_over_the_cap_is_refused_without_reading_it(tmp_path: Path) -> None:
    path = tmp_path / STATE_FILE
    with path.open("wb") as f:
        f.truncate(MAX_STATE_FILE + 1)  # sparse: costs no disk, but a whole read would cost its size in RAM
    tracemalloc.start()
    try:
        with pytest.raises(StateStoreError) as e:
            FileStore(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert str(path) in str(e.value) and peak < 1 << 20
    assert path.stat().st_size == MAX_STATE_FILE + 1


def test_a_state_path_that_is_a_directory_is_a_state_store_error(tmp_path: Path) -> None:
    (tmp_path / STATE_FILE).mkdir()
    with pytest.raises(StateStoreError, match=STATE_FILE):
        FileStore(tmp_path / STATE_FILE)


def test_a_state_dir_that_is_a_file_is_a_state_store_error(tmp_path: Path) -> None:
    (tmp_path / "d").write_bytes(b"not a dir")
    with pytest.raises(StateStoreError, match="unusable state dir"):
        ActorDevice(Config(dir=tmp_path / "d", hostname="fuzz", control_url="http://127.0.0.1:9"))
    assert (tmp_path / "d").read_bytes() == b"not a dir"


@settings(max_examples=12, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(content=st.one_of(_mutated(), _state_values.map(_file)).filter(lambda b: b != VALID_FILE))
def test_fuzz_device_on_a_damaged_dir_refuses_with_the_file_untouched(tmp_path: Path, content: bytes) -> None:
    """End to end: ``ActorDevice`` on a fuzzed dir either is refused (``StateStoreError`` from the
    constructor or ``start``, no actor running) or would start; the file is never rewritten by a refusal."""
    d = tmp_path / f"d{os.urandom(4).hex()}"
    d.mkdir()
    path = d / STATE_FILE
    path.write_bytes(content)
    try:
        load_like_a_device(path)
    except StateStoreError:
        pass
    else:
        return  # a loadable file: starting a whole device for it proves nothing more here
    dev: ActorDevice | None = None
    with pytest.raises(StateStoreError):
        dev = ActorDevice(Config(dir=d, hostname="fuzz", control_url="http://127.0.0.1:9"))
        dev.start()
    if dev is not None:
        assert dev.system is None
        dev.close()
    assert path.read_bytes() == content
