"""Go's ``tka/chaintest_test.go`` DSL for describing webs of AUMs in a few lines, ported.

    G1 -> A -> B
          | -> C          ('|' under a name on the line above: C is another child of A)
    A.hashSeed = 2        (tweak A's hash: sets KeyID to [2])
    B.template = addKey   (B is a copy of the AUM given by opt_template("addKey", ...))
    C.signedWith = key    (sign C with the key given by opt_key("key", ...))

Keys come from ``chain_key_25519(name, seed)``: deterministic per (test, seed), as Go's
``testingKey25519`` (different bytes: Go seeds math/rand from the test name; hashSeed tweaks
that depend on key bytes were re-checked here, with the same asserts Go makes).
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from pytsnet.wire.tka.aum import AUM, AUMKind, Signature
from pytsnet.wire.tka.chonk import MemChonk
from pytsnet.wire.tka.key import Key

_TOKEN = re.compile(r"->|[A-Za-z_][A-Za-z0-9_]*|\d+|\S")


def chain_key_25519(test_name: str, seed: int) -> tuple[bytes, bytes]:
    """(public key, 32-byte private seed), deterministic for a test name and seed."""
    priv = hashlib.sha256(f"{test_name}/{seed}".encode()).digest()
    pub = Ed25519PrivateKey.from_private_bytes(priv).public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return pub, priv


def sign_25519(aum: AUM, priv: bytes) -> AUM:
    """``aum`` with one more signature by ``priv`` (Go ``AUM.sign25519``)."""
    sk = Ed25519PrivateKey.from_private_bytes(priv)
    pub = sk.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    sig = Signature(key_id=pub, signature=sk.sign(aum.sig_hash()))
    return dataclasses.replace(aum, signatures=(*aum.signatures, sig))


@dataclass
class ChainNode:
    """One named AUM of a test chain, as parsed."""

    name: str
    parent: str = ""
    uses: list[tuple[int, int]] = field(default_factory=list)
    hash_seed: int = 0
    template: str = ""
    signed_with: str = ""
    parent_hash: bytes | None = None


@dataclass
class ChainOpt:
    """An option to ``new_testchain`` (Go ``testchainOpt``)."""

    name: str
    template: AUM | None = None
    key: Key | None = None
    private: bytes | None = None
    sign_all_with: bool = False


def opt_template(name: str, template: AUM) -> ChainOpt:
    return ChainOpt(name=name, template=template)


def opt_key(name: str, key: Key, priv: bytes) -> ChainOpt:
    return ChainOpt(name=name, key=key, private=priv)


def opt_sign_all_using(key_name: str) -> ChainOpt:
    return ChainOpt(name=key_name, sign_all_with=True)


@dataclass
class TestChain:
    """A parsed and built web of AUMs (Go ``testChain``)."""

    __test__ = False  # not a pytest class

    first_ident: str = ""
    nodes: dict[str, ChainNode] = field(default_factory=dict)
    aums: dict[str, AUM] = field(default_factory=dict)
    aum_hashes: dict[str, bytes] = field(default_factory=dict)
    templates: dict[str, AUM] = field(default_factory=dict)
    keys: dict[str, Key] = field(default_factory=dict)
    key_privs: dict[str, bytes] = field(default_factory=dict)
    sign_all_keys: list[str] = field(default_factory=list)

    def _record_pos(self, ident: str, pos: tuple[int, int]) -> None:
        self.nodes.setdefault(ident, ChainNode(name=ident)).uses.append(pos)

    def _record_parent(self, child: str, parent: str) -> None:
        p = self.nodes[child].parent
        if p and p != parent:
            raise ValueError(f"differing parent specified for {child}: {p!r} != {parent!r}")
        self.nodes[child].parent = parent

    def build_chain(self) -> None:
        """Compute every AUM once its parent's hash is known (Go ``buildChain``)."""
        pending = dict(self.nodes)
        self.aums = {}
        self.aum_hashes = {}
        for _ in range(len(self.nodes) + 1):
            if not pending:
                return
            ready = [v for v in pending.values() if v.parent not in pending]
            for v in ready:
                aum = self._make_aum(v)
                self.aum_hashes[v.name] = aum.hash()
                self.aums[v.name] = aum
                del pending[v.name]
        raise AssertionError("unexpected: incomplete despite len(nodes)+1 iterations")

    def _make_aum(self, v: ChainNode) -> AUM:
        aum = AUM(message_kind=AUMKind.NO_OP, prev_aum_hash=None)
        if v.template:
            aum = self.templates[v.template]
        if v.parent:
            aum = dataclasses.replace(aum, prev_aum_hash=self.aum_hashes[v.parent])
        elif v.parent_hash is not None:
            aum = dataclasses.replace(aum, prev_aum_hash=v.parent_hash)
        if v.hash_seed:
            aum = dataclasses.replace(aum, key_id=bytes([v.hash_seed & 0xFF]))
        aum.static_validate()
        for key in self.sign_all_keys:
            aum = sign_25519(aum, self.key_privs[key])
        if v.signed_with:
            aum = sign_25519(aum, self.key_privs[v.signed_with])
        return aum

    def chonk(self) -> MemChonk:
        """A store holding every AUM of the chain."""
        out = MemChonk()
        for a in self.aums.values():
            out.commit_verified_aums([a], 0.0)
        return out

    def chonk_with(self, *names: str) -> MemChonk:
        """A store holding the named AUMs."""
        out = MemChonk()
        for n in names:
            out.commit_verified_aums([self.aums[n]], 0.0)
        return out


def new_testchain(text: str, *options: ChainOpt) -> TestChain:
    """Parse the DSL (Go ``newTestchain``) and build the AUMs."""
    out = TestChain()
    for o in options:
        if o.template is not None:
            out.templates[o.name] = o.template
        if o.key is not None and o.private is not None:
            out.keys[o.name] = o.key
            out.key_privs[o.name] = o.private
        if o.sign_all_with:
            out.sign_all_keys.append(o.name)

    if "\t" in text:
        raise ValueError("tabs disallowed, use spaces")
    last_ident = ""
    for line_no, raw in enumerate(text.split("\n"), start=1):
        line = raw.split("//", 1)[0]
        toks = [(m.group(), m.start()) for m in _TOKEN.finditer(line)]
        k = 0
        last_was_chain = False
        while k < len(toks):
            tok, start = toks[k]
            k += 1
            if tok == "->":
                last_was_chain = True
                continue
            if tok == ".":
                if k + 2 < len(toks) and toks[k + 1][0] == "=":
                    tweak, value = toks[k][0], toks[k + 2][0]
                    node = out.nodes[last_ident]
                    if tweak == "hashSeed":
                        node.hash_seed = int(value)
                    elif tweak == "template":
                        node.template = value
                    elif tweak == "signedWith":
                        node.signed_with = value
                    k += 3
            elif re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", tok):
                pos = (line_no, start + 1 + len(tok))
                out._record_pos(tok, pos)
                if last_was_chain:
                    out._record_parent(tok, last_ident)
                last_ident = tok
                if not out.first_ident:
                    out.first_ident = tok
            elif tok == "|":
                col = start + 2
                for n in list(out.nodes.values()):
                    if any(pl == line_no - 1 and col <= pc and col > pc - len(n.name) for pl, pc in n.uses):
                        last_ident = n.name
                        out._record_pos(n.name, (line_no, col))
                        break
            last_was_chain = False
    out.build_chain()
    return out
