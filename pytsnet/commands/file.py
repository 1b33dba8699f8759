"""``pytsnet file cp FILE… HOST:`` and ``pytsnet file get DIR``: Taildrop, as ``tailscale file``.

Go's cmd/tailscale/cli/file.go at v1.90.9, over the LocalAPI (``file-targets``, ``file-put/``,
``files/``). ``cp``: the last argument is the target with a colon (an IPv6 literal in brackets), a
MagicDNS name, host name or tailnet IP; ``-`` sends stdin (named ``--name``, else ``stdin.txt`` for
UTF-8 text and ``stdin`` otherwise); ``--targets`` lists where files can go. Each file is streamed
to the LocalAPI; on a terminal stderr shows a progress bar (rich: name, bar, bytes, rate,
percentage, ETA), otherwise a plain line a second and one at the end. ``get``: moves every inbox
file into DIR (``--wait`` for one to arrive, ``--loop`` forever; ``--conflict=skip|overwrite|rename``
as Go: skip leaves it in the inbox with an error, overwrite removes the old file first (never
follows a symlink planted there), rename writes ``name (N).ext``); ``/dev/null`` empties the inbox.

Where Go looks at the target's ``TaildropTarget`` in the status, this asks ``file-targets`` (the
nodes the LocalAPI would send to): a peer not in it is refused before any byte is read.
"""

from __future__ import annotations

import argparse
import io
import ipaddress
import os
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO, TextIO

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TaskProgressColumn,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from pytsnet.commands.localapi_socket import add_socket_args, client
from pytsnet.commands.ping import resolve
from pytsnet.errors import LocalApiError, UnknownTailnetHost
from pytsnet.localapi.client import LocalClient
from pytsnet.localapi.types import FileTarget, WaitingFile

__all__ = ["FileCommandError", "register"]

MAX_SNIFF = 4 << 20
"""Go's ``maxSniff``: stdin read ahead to name it."""
CONFLICTS = ("skip", "overwrite", "rename")
LOOP_BACKOFF = 5.0
"""``get --loop``: the pause after a batch with errors (Go's)."""
PLAIN_EVERY = 1.0
"""Not a terminal: one progress line at most this often."""


class FileCommandError(Exception):
    """What the user asked cannot be done (printed as one line, exit 1)."""


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("file", help="send or receive files (Taildrop)")
    fsub = p.add_subparsers(dest="file_command", required=True)
    cp = fsub.add_parser("cp", help="copy file(s) to a host", usage="pytsnet file cp <files...> <target>:")
    cp.add_argument("args", nargs="*", metavar="FILE... TARGET:")
    cp.add_argument("--name", default="",
                    help='alternate filename to use, especially useful when <file> is "-" (stdin)')
    cp.add_argument("--verbose", action="store_true", help="verbose output")
    cp.add_argument("--targets", action="store_true", help="list possible file cp targets")
    add_socket_args(cp)
    cp.set_defaults(func=_guard(run_cp))
    get = fsub.add_parser("get", help="move files out of the Taildrop inbox",
                          usage="pytsnet file get [--wait] [--verbose] [--conflict=(skip|overwrite|rename)] "
                                "<target-directory>")
    get.add_argument("args", nargs="*", metavar="DIR")
    get.add_argument("--wait", action="store_true", help="wait for a file to arrive if inbox is empty")
    get.add_argument("--loop", action="store_true", help="run get in a loop, receiving files as they come in")
    get.add_argument("--verbose", action="store_true", help="verbose output")
    get.add_argument("--conflict", default="skip", type=_conflict,
                     help="behavior when a same-named file exists in the directory: skip, overwrite, rename")
    add_socket_args(get)
    get.set_defaults(func=_guard(run_get))


def _conflict(text: str) -> str:
    value = text.lower() or "skip"
    if value not in CONFLICTS:
        raise argparse.ArgumentTypeError(f"{text!r} is not one of (skip|overwrite|rename)")
    return value


def _guard(fn: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """A ``FileCommandError`` is Go's returned error: one line on stderr, exit 1."""

    def run(args: argparse.Namespace) -> int:
        try:
            return fn(args)
        except FileCommandError as e:
            print(f"pytsnet: {e}", file=sys.stderr)
            return 1

    return run


# -- cp -----------------------------------------------------------------------------------------------
def run_cp(args: argparse.Namespace) -> int:
    lc = client(args)
    if args.targets:
        if args.args:
            raise FileCommandError("invalid arguments with --targets")
        for ft in lc.file_targets():
            print(target_line(ft))
        return 0
    if len(args.args) < 2:
        raise FileCommandError("usage: pytsnet file cp <files...> <target>:")
    files, target_arg = args.args[:-1], args.args[-1]
    target, stable_id, offline = find_target(lc, target_arg)
    if offline:
        print(f"# warning: {target} is offline", file=sys.stderr)
    if len(files) > 1:
        if args.name:
            raise FileCommandError("can't use --name= with multiple files")
        if "-" in files:
            raise FileCommandError("can't use '-' as STDIN file when providing filename arguments")
    for file_arg in files:
        body, size, name = _open_source(file_arg, args.name)
        with body:
            if args.verbose:
                print(f"sending {name!r} to {target}/{stable_id} ...", file=sys.stderr)
            with _progress(name, size, sys.stderr) as count:
                lc.push_file(stable_id, size, name, _Counting(body, count))
        if args.verbose:
            print(f"sent {name!r}", file=sys.stderr)
    return 0


def target_line(ft: FileTarget) -> str:
    """Go ``runCpTargets``' line: first address, computed name, then why it may not answer."""
    n = ft.Node
    if n is None:
        return f"\t\t{ft.PeerAPIURL}"
    detail = "unknown-status" if n.Online is None else ("" if n.Online else "offline")
    addr = (n.Addresses or [""])[0].split("/")[0]
    return f"{addr}\t{n.ComputedName}" + (f"\t{detail}" if detail else "")


def find_target(lc: LocalClient, arg: str) -> tuple[str, str, bool]:
    """Go's target checks (a trailing colon; brackets exactly around an IPv6 literal), then the node
    among the file targets by IP, MagicDNS name or host name: ``(target, stable ID, offline)``. The
    status is asked only to explain a refusal."""
    if not arg.endswith(":"):
        raise FileCommandError("final argument to 'pytsnet file cp' must end in colon")
    target = arg[:-1]
    bracketed = target.startswith("[") and target.endswith("]")
    if bracketed:
        target = target[1:-1]
    try:
        literal: ipaddress.IPv4Address | ipaddress.IPv6Address | None = ipaddress.ip_address(target)
    except ValueError:
        literal = None
    if literal is not None and literal.version == 6 and not bracketed:
        raise FileCommandError(f"an IPv6 literal must be written as [{literal}]")
    if bracketed and (literal is None or literal.version != 6):
        raise FileCommandError("unexpected brackets around target")
    want = target.rstrip(".").lower()
    for ft in lc.file_targets():
        n = ft.Node
        if n is None:
            continue
        names = {n.Name.rstrip(".").lower(), n.Name.split(".")[0].lower(), n.ComputedName.lower(),
                 (n.Hostinfo.Hostname.lower() if n.Hostinfo else "")} - {""}
        ips = [a.split("/")[0] for a in n.Addresses or []]
        if (str(literal) in ips) if literal is not None else (want in names):
            return target, n.StableID, n.Online is False
    st = lc.status()  # not a file target: say why, as Go's TaildropTarget reasons
    try:
        ip, is_self = resolve(st, target)
    except UnknownTailnetHost as e:
        raise FileCommandError(str(e)) from None
    if is_self:
        raise FileCommandError(f"can't send to {target}: cannot send files to this node itself")
    if any(ip in (p.TailscaleIPs or []) for p in (st.Peer or {}).values()):
        raise FileCommandError(f"can't send to {target}: cannot send files: not a file target "
                               "(no file-sharing capability or no peerAPI)")
    raise FileCommandError(f"can't send to {target}: unknown target; not in your Tailnet")


def _open_source(file_arg: str, name: str) -> tuple[BinaryIO, int, str]:
    """The body, its size (-1: unknown) and the name to send it as."""
    if file_arg == "-":
        stdin = sys.stdin.buffer
        if name:
            return stdin, -1, name
        sniff = stdin.read(MAX_SNIFF)
        body = io.BufferedReader(_Chain(sniff, stdin))
        return body, -1, "stdin" + (".txt" if len(sniff) < MAX_SNIFF and _is_utf8(sniff) else "")
    if os.path.isdir(file_arg):
        raise FileCommandError("directories not supported")
    try:
        f = open(file_arg, "rb")  # noqa: SIM115 - closed by the caller's ``with``
    except OSError as e:
        raise FileCommandError(f"{file_arg}: {e.strerror}") from None
    return f, os.fstat(f.fileno()).st_size, name or os.path.basename(file_arg)


def _is_utf8(b: bytes) -> bool:
    try:
        b.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


class _Chain(io.RawIOBase):
    """What was sniffed, then the rest of stdin."""

    def __init__(self, head: bytes, rest: BinaryIO) -> None:
        self._head = head
        self._rest = rest

    def readable(self) -> bool:
        return True

    def readinto(self, buf: memoryview) -> int:  # type: ignore[override]
        if self._head:
            n = min(len(buf), len(self._head))
            buf[:n] = self._head[:n]
            self._head = self._head[n:]
            return n
        data = self._rest.read(len(buf))
        buf[:len(data)] = data
        return len(data)


class _Counting(io.BufferedReader):
    """Go's ``countingReader``: every byte read from the source is reported to ``count``."""

    def __init__(self, source: BinaryIO, count: Callable[[int], None]) -> None:
        super().__init__(_CountingRaw(source, count))


class _CountingRaw(io.RawIOBase):
    def __init__(self, source: BinaryIO, count: Callable[[int], None]) -> None:
        self._source = source
        self._count = count

    def readable(self) -> bool:
        return True

    def readinto(self, buf: memoryview) -> int:  # type: ignore[override]
        data = self._source.read(len(buf))
        buf[:len(data)] = data
        self._count(len(data))
        return len(data)


class _progress:
    """The progress shown while one file goes: a rich bar on a terminal, else plain lines."""

    def __init__(self, name: str, size: int, out: TextIO) -> None:
        self.name = name
        self.size = size
        self.out = out
        self.sent = 0
        self._lock = threading.Lock()
        self._last = 0.0
        self._bar: Progress | None = None
        self._task: TaskID | None = None

    def __enter__(self) -> Callable[[int], None]:
        if self.out.isatty():
            self._bar = Progress(TextColumn("{task.description}"), BarColumn(),
                                 DownloadColumn(binary_units=True), TransferSpeedColumn(),
                                 TaskProgressColumn(), TimeRemainingColumn(),
                                 console=Console(file=self.out), refresh_per_second=4, transient=False)
            self._bar.start()
            self._task = self._bar.add_task(self.name, total=self.size if self.size >= 0 else None)
        return self.count

    def count(self, n: int) -> None:
        with self._lock:
            self.sent += n
        if self._bar is not None and self._task is not None:
            self._bar.update(self._task, completed=self.sent)
            return
        now = time.monotonic()
        if now - self._last >= PLAIN_EVERY:
            self._last = now
            self._line()

    def _line(self) -> None:
        pct = f" ({100.0 * min(self.sent, self.size) / self.size:.2f}%)" if self.size > 0 else ""
        total = f"/{self.size}" if self.size >= 0 else ""
        print(f"{self.name}: {self.sent}{total} bytes{pct}", file=self.out, flush=True)

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            if self._task is not None:
                self._bar.update(self._task, completed=self.sent)
            self._bar.stop()
        elif exc[0] is None:
            self._line()


# -- get ----------------------------------------------------------------------------------------------
def run_get(args: argparse.Namespace) -> int:
    if len(args.args) != 1:
        raise FileCommandError("usage: pytsnet file get <target-directory>")
    lc = client(args)
    directory = args.args[0]
    if directory == "/dev/null":
        return _wipe_inbox(lc, args)
    if not os.path.isdir(directory):
        raise FileCommandError(f"{directory!r} is not a directory")
    if args.loop:
        while True:
            errs = get_one_batch(lc, Path(directory), args)
            for err in errs:
                print(err, file=sys.stderr)
            if errs:  # what failed (a conflicting name, a full disk) would fail again at once
                time.sleep(LOOP_BACKOFF)
    errs = get_one_batch(lc, Path(directory), args)
    for err in errs[:-1]:
        print(err, file=sys.stderr)
    if errs:
        raise FileCommandError(errs[-1])
    return 0


def get_one_batch(lc: LocalClient, directory: Path, args: argparse.Namespace) -> list[str]:
    """Go ``runFileGetOneBatch``: every waiting file moved (received, then deleted from the inbox);
    the errors, which do not stop the others."""
    errs: list[str] = []
    wfs: list[WaitingFile] = []
    while not errs:
        try:
            wfs = lc.waiting_files()
        except LocalApiError as e:
            errs.append(f"getting WaitingFiles: {e}")
            break
        if wfs or not (args.wait or args.loop):
            break
        if args.verbose:
            print("waiting for file...", file=sys.stderr)
        try:
            while not lc.await_waiting_files(3600):
                pass
        except LocalApiError as e:
            errs.append(str(e))
    moved = 0
    for i, wf in enumerate(wfs):
        if len(errs) > 100:
            errs.append(f"too many errors in get_one_batch(). {len(wfs) - i} files unexamined")
            break
        try:
            written, size = receive_file(lc, wf, directory, args.conflict)
        except (FileCommandError, LocalApiError) as e:
            errs.append(str(e))
            continue
        if args.verbose:
            print(f"wrote {wf.Name} as {written} ({size} bytes)")
        try:
            lc.delete_waiting_file(wf.Name)
        except LocalApiError as e:
            errs.append(f"deleting {wf.Name!r} from inbox: {e}")
            continue
        moved += 1
    if moved == 0 and wfs:
        errs.append(f"moved {moved}/{len(wfs)} files")
    elif args.verbose:
        print(f"moved {moved}/{len(wfs)} files")
    return errs


def receive_file(lc: LocalClient, wf: WaitingFile, directory: Path, conflict: str) -> tuple[Path, int]:
    """Go ``receiveFile``: the inbox file copied into a new file in ``directory``."""
    if not wf.Name or wf.Name in (".", "..") or "/" in wf.Name or "\0" in wf.Name:
        raise FileCommandError(f"refusing inbox file name {wf.Name!r}")  # the node sanitises: never here
    try:
        body, size = lc.get_waiting_file(wf.Name)
    except LocalApiError as e:
        raise FileCommandError(f"opening inbox file {wf.Name!r}: {e}") from None
    with body:
        fd, path = open_or_substitute(directory, wf.Name, conflict)
        with os.fdopen(fd, "wb") as out:
            try:
                while chunk := body.read(256 * 1024):
                    out.write(chunk)
            except (OSError, LocalApiError) as e:
                raise FileCommandError(f"failed to write {path}: {e}") from None
    return path, size


def numbered_name(directory: Path, name: str, i: int) -> Path:
    """Go ``numberedFileName``: ``name (i).ext`` (``path.Ext``: from the last dot, so ``.bashrc``
    becomes `` (1).bashrc``, as Go)."""
    dot = name.rfind(".")
    stem, ext = (name[:dot], name[dot:]) if dot != -1 else (name, "")
    return directory / f"{stem} ({i}){ext}"


def _create(path: Path) -> int:
    return os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)


def open_or_substitute(directory: Path, name: str, conflict: str) -> tuple[int, Path]:
    """Go ``openFileOrSubstitute``: a new file for ``name`` in ``directory`` by the conflict rule."""
    target = directory / name
    try:
        return _create(target), target
    except OSError as e:
        first = e
    if conflict == "skip":
        if os.path.lexists(target):
            raise FileCommandError(f"refusing to overwrite file: {target}: {first.strerror}")
        raise FileCommandError(f"failed to write; {target}: {first.strerror}")
    if conflict == "overwrite":
        try:  # removed and created anew: a symlink planted at the name is replaced, never followed
            os.remove(target)
        except OSError as e:
            raise FileCommandError(f"unable to remove target file: {e.strerror}") from None
        try:
            return _create(target), target
        except OSError as e:
            raise FileCommandError(f"unable to overwrite: {e.strerror}") from None
    last = first
    for i in range(1, 100):
        candidate = numbered_name(directory, name, i)
        try:
            return _create(candidate), candidate
        except OSError as e:
            last = e
    raise FileCommandError(f"unable to find a name for writing {target}, final attempt: {last.strerror}")


def _wipe_inbox(lc: LocalClient, args: argparse.Namespace) -> int:
    """Go ``wipeInbox``: ``get /dev/null`` deletes every waiting file."""
    if args.wait:
        raise FileCommandError("can't use --wait with /dev/null target")
    try:
        wfs = lc.waiting_files()
    except LocalApiError as e:
        raise FileCommandError(f"getting WaitingFiles: {e}") from None
    for wf in wfs:
        if args.verbose:
            print(f"deleting {wf.Name} ...", file=sys.stderr)
        try:
            lc.delete_waiting_file(wf.Name)
        except LocalApiError as e:
            raise FileCommandError(f"deleting {wf.Name!r}: {e}") from None
    if args.verbose:
        print(f"deleted {len(wfs)} files", file=sys.stderr)
    return 0
