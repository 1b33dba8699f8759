"""A fake egress worker: speaks the channel protocol without a tailnet, for the front's and the
supervisor's tests.

``python tests/egress/fake_worker.py --fd N [flags]``: reads ``WorkerSetup``, beats every
``heartbeat_interval``, says ``WorkerReady``; for each ``FlowAssign`` (+ the client's fd) it answers as
a worker whose dial worked (SOCKS5 REP 00 / HTTP 200), writes one JSON line naming what it got
(``worker``, ``pid``, ``proto``, ``host``, ``port``, ``early`` in hex — for HTTP the head is parsed off
and the bytes after it are the tunnel's), echoes those early tunnel bytes, then echoes whatever the
client sends until its EOF, and reports ``FlowDone``. ``WorkerDrain``: finish flows within the
deadline, cut the rest, ``WorkerDrained``, exit 0. Channel EOF: cut every flow, exit 1.

Misbehaviour flags: ``--exit-at-start CODE`` (exit before reading anything), ``--crash-after K`` (exit 3
once K flows were assigned), ``--no-heartbeat`` (never beat: looks hung), ``--never-ready``,
``--stop-reading`` (ready and beating, but reads no frame: its channel fills).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from pytsnet.egress.channel import ChannelClosed, WorkerChannel
from pytsnet.messages.egress import (
    FlowAssign,
    FlowDone,
    WorkerDrain,
    WorkerDrained,
    WorkerHeartbeat,
    WorkerReady,
    WorkerSetup,
)
from pytsnet.wire.socks5 import Rep, encode_reply


class Fake:
    def __init__(self, ch: WorkerChannel, setup: WorkerSetup, args: argparse.Namespace) -> None:
        self.ch, self.setup, self.args = ch, setup, args
        self.lock = threading.Lock()
        self.open: dict[int, socket.socket] = {}
        self.total = 0
        self.up = self.down = 0
        self.assigned = 0
        self.draining = False
        self.finished = 0

    def beat(self) -> None:
        seq = 0
        while True:
            time.sleep(self.setup.heartbeat_interval)
            if self.args.no_heartbeat:
                continue
            seq += 1
            with self.lock:
                hb = WorkerHeartbeat(worker=self.setup.worker, seq=seq, flows_open=len(self.open),
                                     flows_total=self.total, bytes_up=self.up, bytes_down=self.down,
                                     rss=12345)
            try:
                self.ch.send(hb)
            except ChannelClosed:
                os._exit(1)

    def flow(self, msg: FlowAssign, sock: socket.socket) -> None:
        outcome = "ok"
        try:
            early = msg.early
            host, port = msg.host, msg.port
            if msg.proto == "socks5":
                sock.sendall(encode_reply(Rep.SUCCEEDED, "127.0.0.1", 9))
            else:
                head, _, early = early.partition(b"\r\n\r\n")
                target = head.split(b"\r\n", 1)[0].split(b" ")[1].decode()
                host, _, p = target.rpartition(":")
                port = int(p)
                sock.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
            line = json.dumps({"worker": self.setup.worker, "pid": os.getpid(), "proto": msg.proto,
                               "host": host,
                               "port": port, "early": early.hex(), "flow": msg.flow})
            sock.sendall(line.encode() + b"\n" + early)
            with self.lock:
                self.down += len(early)
            while True:
                data = sock.recv(65536)
                if not data:
                    break
                sock.sendall(data)
                with self.lock:
                    self.up += len(data)
                    self.down += len(data)
        except OSError:
            outcome = "reset"
        finally:
            with self.lock:
                self.open.pop(msg.flow, None)
                self.finished += 1
            with contextlib.suppress(OSError):
                sock.close()
            with contextlib.suppress(ChannelClosed):
                self.ch.send(FlowDone(flow=msg.flow, outcome=outcome))  # type: ignore[arg-type]

    def drain(self, msg: WorkerDrain) -> None:
        self.draining = True
        end = time.monotonic() + msg.deadline
        while time.monotonic() < end:
            with self.lock:
                if not self.open:
                    break
            time.sleep(0.02)
        with self.lock:
            cut = len(self.open)
            for s in self.open.values():
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(ChannelClosed):
            self.ch.send(WorkerDrained(worker=self.setup.worker, finished=self.finished, cut=cut,
                                       logged_out=True))
        os._exit(0)

    def run(self) -> None:
        threading.Thread(target=self.beat, daemon=True).start()
        if not self.args.never_ready:
            self.ch.send(WorkerReady(worker=self.setup.worker, pid=os.getpid(), node_id=f"fake{os.getpid()}",
                                     ip=f"100.64.0.{self.setup.worker + 1}"))
        while not self.args.stop_reading:
            try:
                got = self.ch.recv()
            except ChannelClosed:
                os._exit(1)
            if got is None:
                continue
            msg, fds = got
            if isinstance(msg, FlowAssign) and len(fds) == 1:
                sock = socket.socket(fileno=fds[0])
                if self.draining:
                    sock.close()
                    continue
                with self.lock:
                    self.open[msg.flow] = sock
                    self.total += 1
                self.assigned += 1
                threading.Thread(target=self.flow, args=(msg, sock), daemon=True).start()
                if self.args.crash_after and self.assigned >= self.args.crash_after:
                    time.sleep(0.2)
                    os._exit(3)
            elif isinstance(msg, WorkerDrain):
                threading.Thread(target=self.drain, args=(msg,), daemon=True).start()
            else:
                for fd in fds:
                    os.close(fd)
        threading.Event().wait()  # --stop-reading: beats on, reads nothing (a wedged main thread)


def worker_command(*flags: str) -> Callable[[int], list[str]]:
    """A ``worker_command`` for ``EgressConfig``: this script with ``flags``."""

    def cmd(fd: int) -> list[str]:
        return [sys.executable, str(Path(__file__).resolve()), "--fd", str(fd), *flags]

    return cmd


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--fd", type=int, required=True)
    p.add_argument("--exit-at-start", type=int, default=None)
    p.add_argument("--crash-after", type=int, default=0)
    p.add_argument("--no-heartbeat", action="store_true")
    p.add_argument("--never-ready", action="store_true")
    p.add_argument("--stop-reading", action="store_true")
    args = p.parse_args()
    if args.exit_at_start is not None:
        os._exit(args.exit_at_start)
    ch = WorkerChannel.from_fd(args.fd)
    got = ch.recv()
    if got is None or not isinstance(got[0], WorkerSetup):
        sys.exit(2)
    Fake(ch, got[0], args).run()


if __name__ == "__main__":
    main()


# -- helpers for the tests (a client of the front) ------------------------------------------------------
def split(addr: str) -> tuple[str, int]:
    host, _, port = addr.rpartition(":")
    return host, int(port)


def read_line(sock: socket.socket, limit: int = 4096) -> bytes:
    buf = b""
    while not buf.endswith(b"\n") and len(buf) < limit:
        b = sock.recv(1)
        if not b:
            break
        buf += b
    return buf


def socks_flow(addr: str, host: str, port: int, early: bytes = b"", password: str | None = None,
               timeout: float = 10.0) -> tuple[socket.socket, dict[str, object]]:
    """A SOCKS5 CONNECT through the front; the socket (past the reply) and the fake worker's line."""
    s = socket.create_connection(split(addr), timeout=timeout)
    if password is None:
        s.sendall(b"\x05\x01\x00")
        assert s.recv(2) == b"\x05\x00"
    else:
        s.sendall(b"\x05\x01\x02")
        assert s.recv(2) == b"\x05\x02"
        s.sendall(b"\x01\x05tsnet" + bytes([len(password)]) + password.encode())
        assert s.recv(2) == b"\x01\x00"
    name = host.encode()
    s.sendall(b"\x05\x01\x00\x03" + bytes([len(name)]) + name + port.to_bytes(2, "big") + early)
    reply = s.recv(10)
    assert reply[:2] == b"\x05\x00", reply
    return s, json.loads(read_line(s))
