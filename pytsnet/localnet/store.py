"""The local tailnet's persistent state: users, pre-auth keys, nodes and their addresses (SQLite).

Everything the coordination server knows lives in one ``localnet.db`` in the state directory, so a
restart (or a second process running the admin CLI) sees the same nodes, keys and IPs. Public keys
are stored in their Tailscale text form (``nodekey:…``); IPs are allocated once per node, when it is
first authorized (a node still waiting for approval has none), and never reused while the node
exists. The connection is shared between threads behind one lock.

Pending nodes (never authorized, so without IPs) are a stranger's to create: ``add_pending_node``
keeps one per machine key and at most ``max_pending`` of machines control has never authorized,
evicting the oldest; ``expire_pending`` removes those older than a deadline.

At rest (see ``atrest``): the dir is 0700 and the database 0600 from creation (SQLite gives its WAL
and shm files the database's mode). Pre-auth keys are stored only as ``sha256:<hex>`` plus a short
display prefix: the clear key exists once, in the record ``create_authkey`` returns. The control
server's Noise private keys live in their own 0600 files (``private_key``), not in the database;
an older database's clear keys are moved out on open, with ``secure_delete`` so no copy lingers in
freed pages.
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import json
import os
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from pytsnet.localnet.atrest import FILE_MODE, create_private_file, private_dir

DB_NAME = "localnet.db"
CGNAT_V4 = ipaddress.IPv4Network("100.64.0.0/10")
#: Tailscale's 4-to-6 range: the node's IPv4 address goes in the last 32 bits (``tsaddr.Tailscale4To6``).
TS_4TO6 = ipaddress.IPv6Network("fd7a:115c:a1e0:ab12:4843:cd96::/96")
#: Never handed out: 100.100.100.0/24 holds the MagicDNS/quad-100 service address.
RESERVED_V4 = (ipaddress.IPv4Network("100.100.100.0/24"),
               ipaddress.IPv4Network("100.100.0.0/24"))  # services (20d): VIPs, services.SERVICE_V4
DEFAULT_USER = "admin@localnet"
AUTHKEY_PREFIX = "tskey-auth-"
AUTHKEY_SHOWN_HEX = 8
"""Hex digits of a key's secret kept in clear for ``authkey list``: enough to tell keys apart."""
_HASHED = "sha256:"
#: Private keys once kept in ``meta`` (older versions) → the 0600 file each lives in now.
KEY_FILES = {"control_private": "noise.key", "legacy_private": "noise-legacy.key",
             "id_token_private": "id-token.key"}

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS users (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    login_name TEXT NOT NULL UNIQUE,
    display_name TEXT NOT NULL,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS authkeys (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    key TEXT NOT NULL UNIQUE,
    prefix TEXT NOT NULL DEFAULT '',
    user_id INTEGER NOT NULL,
    reusable INTEGER NOT NULL,
    ephemeral INTEGER NOT NULL,
    tags TEXT NOT NULL,
    expires REAL,
    used INTEGER NOT NULL DEFAULT 0,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS nodes (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    stable_id TEXT NOT NULL UNIQUE,
    machine_key TEXT NOT NULL,
    node_key TEXT NOT NULL UNIQUE,
    disco_key TEXT NOT NULL DEFAULT '',
    user_id INTEGER NOT NULL,
    hostname TEXT NOT NULL,
    ipv4 TEXT UNIQUE,
    ipv6 TEXT NOT NULL DEFAULT '',
    authorized INTEGER NOT NULL,
    ephemeral INTEGER NOT NULL,
    tags TEXT NOT NULL DEFAULT '[]',
    endpoints TEXT NOT NULL DEFAULT '[]',
    hostinfo TEXT NOT NULL DEFAULT '{}',
    home_derp INTEGER NOT NULL DEFAULT 0,
    key_expiry REAL,
    logged_out INTEGER NOT NULL DEFAULT 0,
    auth_path TEXT NOT NULL DEFAULT '',
    created REAL NOT NULL,
    last_seen REAL,
    advertised_routes TEXT NOT NULL DEFAULT '[]',
    approved_routes TEXT NOT NULL DEFAULT '[]'
);
CREATE INDEX IF NOT EXISTS nodes_machine ON nodes (machine_key);
"""


@dataclass
class User:
    id: int
    login_name: str
    display_name: str
    created: float


@dataclass
class AuthKey:
    """A pre-auth key's record. ``key`` (the clear key) is set only on the record ``create_authkey``
    returns; the database holds ``key_hash`` and the display ``prefix``."""

    id: int
    key_hash: str
    prefix: str
    user_id: int
    reusable: bool
    ephemeral: bool
    tags: list[str]
    expires: float | None
    used: bool
    created: float
    key: str = field(default="", repr=False)


def hash_authkey(key: str) -> str:
    """What the database stores for ``key`` (a 192-bit random secret: a plain SHA-256 suffices)."""
    return _HASHED + hashlib.sha256(key.encode()).hexdigest()


def authkey_prefix(key: str) -> str:
    head, _, secret = key.rpartition("-")
    return f"{head}-{secret[:AUTHKEY_SHOWN_HEX]}"


@dataclass
class Node:
    """One row of ``nodes``; JSON columns are decoded."""

    id: int
    stable_id: str
    machine_key: str
    node_key: str
    disco_key: str
    user_id: int
    hostname: str
    ipv4: str
    ipv6: str
    authorized: bool
    ephemeral: bool
    tags: list[str] = field(default_factory=list)
    endpoints: list[str] = field(default_factory=list)
    hostinfo: dict[str, object] = field(default_factory=dict)
    home_derp: int = 0
    key_expiry: float | None = None
    logged_out: bool = False
    auth_path: str = ""
    created: float = 0.0
    last_seen: float | None = None
    advertised_routes: list[str] = field(default_factory=list)
    """Canonical prefixes from the node's ``Hostinfo.RoutableIPs`` (``routes.parse_advertised``)."""
    approved_routes: list[str] = field(default_factory=list)
    """Prefixes an admin or ``autoApprovers`` approved; effective only while also advertised."""


_JSON_NODE_COLS = ("tags", "endpoints", "hostinfo", "advertised_routes", "approved_routes")
#: Columns added after the first release: ``_migrate_added_columns`` adds them to older databases.
_ADDED_NODE_COLS = {"advertised_routes": "TEXT NOT NULL DEFAULT '[]'",
                    "approved_routes": "TEXT NOT NULL DEFAULT '[]'"}
_NODE_COLUMNS = ("id, stable_id, machine_key, node_key, disco_key, user_id, hostname, ipv4, ipv6, authorized,"
                 " ephemeral, tags, endpoints, hostinfo, home_derp, key_expiry, logged_out, auth_path,"
                 " created, last_seen")
#: A node never authorized: no addresses yet (IPs are allocated when it is first authorized).
_NEVER_AUTHORIZED = "authorized=0 AND ipv4 IS NULL"
#: ...of a machine that has no node with addresses: a stranger's, evictable from the pending pool.
_STRANGER_PENDING = (f"{_NEVER_AUTHORIZED} AND NOT EXISTS (SELECT 1 FROM nodes k"
                     " WHERE k.machine_key=nodes.machine_key AND k.ipv4 IS NOT NULL)")
_BOOL_NODE_COLS = ("authorized", "ephemeral", "logged_out")


def _node(row: sqlite3.Row) -> Node:
    d = dict(row)
    d["ipv4"] = d["ipv4"] or ""  # NULL while pending
    for c in _JSON_NODE_COLS:
        d[c] = json.loads(d[c])
    for c in _BOOL_NODE_COLS:
        d[c] = bool(d[c])
    return Node(**d)


def _authkey(row: sqlite3.Row) -> AuthKey:
    d = dict(row)
    d["key_hash"] = d.pop("key")
    d["tags"] = json.loads(d["tags"])
    d["reusable"], d["ephemeral"], d["used"] = bool(d["reusable"]), bool(d["ephemeral"]), bool(d["used"])
    return AuthKey(**d)


class NoLocalnetDatabase(FileNotFoundError):
    """The directory holds no ``localnet.db``: a typo'd path, which admin commands must not turn
    into a fresh, empty tailnet."""


class Store:
    """SQLite-backed state; every method is one transaction and safe to call from any thread."""

    @classmethod
    def open_existing(cls, state_dir: str | Path, *, ipv6: bool = False) -> Store:
        """Open the database a server made; ``NoLocalnetDatabase`` if there is none (never creates)."""
        if not (Path(state_dir) / DB_NAME).is_file():
            raise NoLocalnetDatabase(f"no local tailnet in {state_dir} (no {DB_NAME}): check --state, "
                                     f"or create one with `pytsnet localnet --state {state_dir}`")
        return cls(state_dir, ipv6=ipv6)

    def __init__(self, state_dir: str | Path, *, ipv6: bool = False) -> None:
        self.dir = private_dir(Path(state_dir))
        db_path = self.dir / DB_NAME
        create_private_file(db_path)
        for p in (db_path, db_path.with_name(DB_NAME + "-wal"), db_path.with_name(DB_NAME + "-shm")):
            with contextlib.suppress(FileNotFoundError):  # files of an older version: tighten once
                if p.stat().st_mode & 0o777 != FILE_MODE:
                    p.chmod(FILE_MODE)
        self.ipv6 = ipv6
        self._lock = threading.RLock()
        self._depth = 0
        """Open ``_tx`` levels on the owning thread: inner ones join the outer transaction."""
        self._db = sqlite3.connect(self.dir / DB_NAME, check_same_thread=False, timeout=10,
                                   isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self.writes = 0
        """Bumped by every commit through this Store (with ``data_version`` for other connections):
        a cache of what the database says is current while both are unchanged."""
        self._db.execute("PRAGMA secure_delete=ON")  # freed pages are zeroed: no stale secrets
        self._db.execute("PRAGMA journal_mode=WAL")
        self._migrate_nullable_ipv4()
        self._db.executescript(_SCHEMA)
        self._migrate_added_columns()
        self._migrate_secrets()

    def _migrate_nullable_ipv4(self) -> None:
        """Older databases have ``ipv4 NOT NULL`` (every pending node took an address): rebuild
        ``nodes`` with a nullable column, rows and IDs unchanged (SQLite cannot alter a constraint)."""
        cols = {r["name"]: r["notnull"] for r in self._db.execute("PRAGMA table_info(nodes)")}
        if not cols.get("ipv4"):
            return
        with self._tx() as db:
            db.execute("ALTER TABLE nodes RENAME TO nodes_old")
            create = _SCHEMA[_SCHEMA.index("CREATE TABLE IF NOT EXISTS nodes"):_SCHEMA.index("CREATE INDEX")]
            db.execute(create)
            db.execute(f"INSERT INTO nodes ({_NODE_COLUMNS}) SELECT {_NODE_COLUMNS} FROM nodes_old")
            db.execute("DROP TABLE nodes_old")

    def _migrate_added_columns(self) -> None:
        """Older databases lack the route columns: add them (empty lists), rows unchanged."""
        cols = {r["name"] for r in self._db.execute("PRAGMA table_info(nodes)")}
        missing = [c for c in _ADDED_NODE_COLS if c not in cols]
        if missing:
            with self._tx() as db:
                for c in missing:
                    db.execute(f"ALTER TABLE nodes ADD COLUMN {c} {_ADDED_NODE_COLS[c]}")

    def _migrate_secrets(self) -> None:
        """Move what older versions kept in clear out of the database (idempotent)."""
        cols = {r["name"] for r in self._db.execute("PRAGMA table_info(authkeys)")}
        moved = False
        with self._tx() as db:
            if "prefix" not in cols:
                db.execute("ALTER TABLE authkeys ADD COLUMN prefix TEXT NOT NULL DEFAULT ''")
            for r in db.execute("SELECT id, key FROM authkeys WHERE key NOT LIKE 'sha256:%'").fetchall():
                db.execute("UPDATE authkeys SET key=?, prefix=? WHERE id=?",
                           (hash_authkey(r["key"]), authkey_prefix(r["key"]), r["id"]))
                moved = True
            for name, filename in KEY_FILES.items():
                row = db.execute("SELECT v FROM meta WHERE k=?", (name,)).fetchone()
                if row is not None:
                    self._write_key_file(self.dir / filename, str(row[0]))
                    db.execute("DELETE FROM meta WHERE k=?", (name,))
                    moved = True
        if moved:  # the WAL still holds the old pages until a checkpoint copies the zeroed ones back
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    @staticmethod
    def _write_key_file(path: Path, text: str) -> str:
        """Create ``path`` (0600) holding ``text`` unless it exists; return what it holds (first
        writer wins, atomically: a temporary file is hard-linked into place)."""
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, FILE_MODE)
        try:
            with os.fdopen(fd, "w") as f:
                f.write(text + "\n")
                f.flush()
                os.fsync(f.fileno())
            with contextlib.suppress(FileExistsError):
                os.link(tmp, path)
        finally:
            tmp.unlink()
        return path.read_text().strip()

    def private_key(self, name: str, generate: Callable[[], str]) -> str:
        """The private key ``name`` (a ``KEY_FILES`` entry) from its 0600 file, made by ``generate``
        on first use."""
        path = self.dir / KEY_FILES[name]
        try:
            text = path.read_text().strip()
        except FileNotFoundError:
            text = ""
        return text or self._write_key_file(path, generate())

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            if self._depth:  # nested: part of the caller's transaction, which commits or rolls back
                self._depth += 1
                try:
                    yield self._db
                finally:
                    self._depth -= 1
                return
            self._db.execute("BEGIN IMMEDIATE")
            self._depth = 1
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            finally:
                self._depth = 0
            self._db.execute("COMMIT")
            self.writes += 1

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Group several store calls into one SQLite transaction: all of them commit, or (on any
        exception, a crash included) none does. Used so that using a single-use auth key and
        inserting the node it registers cannot be separated."""
        with self._tx():
            yield

    def data_version(self) -> int:
        """Changes whenever *another* connection (e.g. the admin CLI) commits to the database."""
        with self._lock:
            return int(self._db.execute("PRAGMA data_version").fetchone()[0])

    # -- meta --------------------------------------------------------------------------------
    def get_meta(self, k: str) -> str | None:
        with self._lock:
            row = self._db.execute("SELECT v FROM meta WHERE k=?", (k,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, k: str, v: str) -> None:
        with self._tx() as db:
            db.execute("INSERT OR REPLACE INTO meta (k, v) VALUES (?, ?)", (k, v))

    def set_meta_default(self, k: str, v: str) -> str:
        """Store ``v`` under ``k`` unless a value exists; return the stored value (first writer wins)."""
        with self._tx() as db:
            db.execute("INSERT OR IGNORE INTO meta (k, v) VALUES (?, ?)", (k, v))
            return str(db.execute("SELECT v FROM meta WHERE k=?", (k,)).fetchone()[0])

    # -- users -------------------------------------------------------------------------------
    def ensure_user(self, login_name: str = DEFAULT_USER, display_name: str | None = None) -> User:
        with self._tx() as db:
            db.execute("INSERT OR IGNORE INTO users (login_name, display_name, created) VALUES (?, ?, ?)",
                       (login_name, display_name or login_name.split("@")[0], time.time()))
            row = db.execute("SELECT * FROM users WHERE login_name=?", (login_name,)).fetchone()
        return User(**dict(row))

    def users(self) -> list[User]:
        with self._lock:
            return [User(**dict(r)) for r in self._db.execute("SELECT * FROM users ORDER BY id")]

    # -- auth keys ---------------------------------------------------------------------------
    def create_authkey(self, *, user_id: int, reusable: bool = False, ephemeral: bool = False,
                       tags: list[str] | None = None, expires: float | None = None) -> AuthKey:
        """A new key; the returned record's ``key`` is the only copy of it in clear."""
        key = AUTHKEY_PREFIX + secrets.token_hex(24)
        with self._tx() as db:
            cur = db.execute(
                "INSERT INTO authkeys (key, prefix, user_id, reusable, ephemeral, tags, expires, created)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (hash_authkey(key), authkey_prefix(key), user_id, int(reusable), int(ephemeral),
                 json.dumps(sorted(tags or [])), expires, time.time()))
            row = db.execute("SELECT * FROM authkeys WHERE id=?", (cur.lastrowid,)).fetchone()
        rec = _authkey(row)
        rec.key = key
        return rec

    def get_authkey(self, key: str) -> AuthKey | None:
        """The record of the clear ``key`` (looked up by its hash)."""
        with self._lock:
            row = self._db.execute("SELECT * FROM authkeys WHERE key=?", (hash_authkey(key),)).fetchone()
        return None if row is None else _authkey(row)

    def authkeys(self) -> list[AuthKey]:
        with self._lock:
            return [_authkey(r) for r in self._db.execute("SELECT * FROM authkeys ORDER BY id")]

    def mark_authkey_used(self, key_id: int) -> bool:
        """Mark a key used; False if a single-use key was already used (a race lost)."""
        with self._tx() as db:
            row = db.execute("SELECT reusable, used FROM authkeys WHERE id=?", (key_id,)).fetchone()
            if row is None or (not row["reusable"] and row["used"]):
                return False
            db.execute("UPDATE authkeys SET used=1 WHERE id=?", (key_id,))
            return True

    # -- nodes -------------------------------------------------------------------------------
    def _allocate_v4(self, db: sqlite3.Connection) -> str:
        taken = {r[0] for r in db.execute("SELECT ipv4 FROM nodes WHERE ipv4 IS NOT NULL")}
        nxt = int(db.execute("SELECT COALESCE((SELECT v FROM meta WHERE k='next_v4'), '1')").fetchone()[0])
        size = CGNAT_V4.num_addresses
        for i in range(size):
            off = (nxt + i) % size
            if off == 0 or off == size - 1:
                continue
            ip = CGNAT_V4.network_address + off
            if str(ip) in taken or any(ip in r for r in RESERVED_V4):
                continue
            db.execute("INSERT OR REPLACE INTO meta (k, v) VALUES ('next_v4', ?)", (str(off + 1),))
            return str(ip)
        raise RuntimeError("100.64.0.0/10 is exhausted")

    def _addresses(self, db: sqlite3.Connection) -> tuple[str, str]:
        """A fresh IPv4 from 100.64.0.0/10 and, if enabled, its 4-to-6 IPv6 (else "")."""
        v4 = self._allocate_v4(db)
        row = db.execute("SELECT v FROM meta WHERE k='ipv6'").fetchone()
        ipv6 = self.ipv6 or (row is not None and row[0] == "1")
        v6 = str(TS_4TO6.network_address + int(ipaddress.IPv4Address(v4))) if ipv6 else ""
        return v4, v6

    def serve_ipv6(self, on: bool) -> None:
        """Record whether the serving tailnet gives IPv6 addresses, so that an approval by the admin
        CLI (another process, which allocates the addresses) gives the same."""
        self.set_meta("ipv6", "1" if on else "0")

    def add_node(self, *, machine_key: str, node_key: str, user_id: int, hostname: str,
                 authorized: bool, ephemeral: bool, tags: list[str] | None = None,
                 hostinfo: dict[str, object] | None = None, key_expiry: float | None = None,
                 auth_path: str = "") -> Node:
        """Create a node; an authorized one gets fresh addresses (IPv4 from 100.64.0.0/10, IPv6
        4-to-6 if enabled), a pending one none until it is authorized (``update_node``)."""
        with self._tx() as db:
            v4: str | None = None
            v6 = ""
            if authorized:
                v4, v6 = self._addresses(db)
            cur = db.execute(
                "INSERT INTO nodes (stable_id, machine_key, node_key, user_id, hostname, ipv4, ipv6,"
                " authorized, ephemeral, tags, hostinfo, key_expiry, auth_path, created)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                ("n" + secrets.token_hex(8), machine_key, node_key, user_id, hostname, v4, v6,
                 int(authorized), int(ephemeral), json.dumps(sorted(tags or [])),
                 json.dumps(hostinfo or {}), key_expiry, auth_path, time.time()))
            row = db.execute("SELECT * FROM nodes WHERE id=?", (cur.lastrowid,)).fetchone()
        return _node(row)

    def add_pending_node(self, *, max_pending: int, **fields: object) -> Node:
        """A node waiting for approval (no addresses). It replaces any other never-authorized node of
        its machine (one pending login per machine key: the newest is the one its user is looking
        at); then, while machines control never authorized hold more than ``max_pending`` pending
        nodes, the oldest of theirs go. A machine with an authorized node (a known one) is never
        evicted, so strangers filling the pool cannot push out its login."""
        with self._tx() as db:
            db.execute(f"DELETE FROM nodes WHERE machine_key=? AND {_NEVER_AUTHORIZED}",
                       (fields["machine_key"],))
            node = self.add_node(authorized=False, **fields)  # type: ignore[arg-type]
            over = int(db.execute(f"SELECT COUNT(*) FROM nodes WHERE {_STRANGER_PENDING}").fetchone()[0]) \
                - max(1, max_pending)
            if over > 0:
                db.execute(f"DELETE FROM nodes WHERE id IN (SELECT id FROM nodes WHERE {_STRANGER_PENDING}"
                           " ORDER BY created, id LIMIT ?)", (over,))
        return node

    def expire_pending(self, created_before: float) -> int:
        """Remove never-authorized nodes created before ``created_before``; how many went."""
        with self._tx() as db:
            return db.execute(f"DELETE FROM nodes WHERE {_NEVER_AUTHORIZED} AND created < ?",
                              (created_before,)).rowcount

    def pending_count(self) -> int:
        """Never-authorized nodes (what the pending pool holds, strangers' and known machines')."""
        with self._lock:
            row = self._db.execute(f"SELECT COUNT(*) FROM nodes WHERE {_NEVER_AUTHORIZED}").fetchone()
        return int(row[0])

    def node(self, node_id: int) -> Node | None:
        with self._lock:
            row = self._db.execute("SELECT * FROM nodes WHERE id=?", (node_id,)).fetchone()
        return None if row is None else _node(row)

    def node_by_key(self, node_key: str) -> Node | None:
        with self._lock:
            row = self._db.execute("SELECT * FROM nodes WHERE node_key=?", (node_key,)).fetchone()
        return None if row is None else _node(row)

    def node_by_auth_path(self, auth_path: str) -> Node | None:
        if not auth_path:
            return None
        with self._lock:
            row = self._db.execute("SELECT * FROM nodes WHERE auth_path=?", (auth_path,)).fetchone()
        return None if row is None else _node(row)

    def logged_out_node_for_machine(self, machine_key: str) -> Node | None:
        """A logged-out, non-ephemeral node of this machine: re-login reuses it (and its IPs)."""
        with self._lock:
            row = self._db.execute(
                "SELECT * FROM nodes WHERE machine_key=? AND logged_out=1 AND ephemeral=0 ORDER BY id",
                (machine_key,)).fetchone()
        return None if row is None else _node(row)

    def nodes(self) -> list[Node]:
        with self._lock:
            return [_node(r) for r in self._db.execute("SELECT * FROM nodes ORDER BY id")]

    _UPDATABLE = frozenset({
        "node_key", "disco_key", "hostname", "authorized", "ephemeral", "tags", "endpoints", "hostinfo",
        "home_derp", "key_expiry", "logged_out", "auth_path", "last_seen", "user_id",
        "advertised_routes", "approved_routes",
    })

    def update_node(self, node_id: int, **changes: object) -> Node | None:
        """Update the named columns; returns the new row, or None if the node is gone. A node
        authorized for the first time gets its addresses here (in the same transaction)."""
        bad = set(changes) - self._UPDATABLE
        if bad:
            raise ValueError(f"not updatable: {sorted(bad)}")
        cols, vals = [], []
        for k, v in changes.items():
            if k in _JSON_NODE_COLS:
                v = json.dumps(v)
            elif k in _BOOL_NODE_COLS:
                v = int(bool(v))
            cols.append(f"{k}=?")
            vals.append(v)
        with self._tx() as db:
            if changes.get("authorized") and db.execute(
                    "SELECT 1 FROM nodes WHERE id=? AND ipv4 IS NULL", (node_id,)).fetchone() is not None:
                cols += ["ipv4=?", "ipv6=?"]
                vals += list(self._addresses(db))
            if cols:
                db.execute(f"UPDATE nodes SET {', '.join(cols)} WHERE id=?", (*vals, node_id))
            row = db.execute("SELECT * FROM nodes WHERE id=?", (node_id,)).fetchone()
        return None if row is None else _node(row)

    def delete_node(self, node_id: int) -> bool:
        with self._tx() as db:
            return db.execute("DELETE FROM nodes WHERE id=?", (node_id,)).rowcount > 0
