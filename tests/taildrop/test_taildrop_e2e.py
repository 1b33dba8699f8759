"""Taildrop between Python nodes on a local tailnet (WireGuard, each node's own netstack and peerAPI).

alpha sends beta files with ``dev.send_file``: 64 MiB byte-exact with progress; a transfer cut
mid-way (the sending task cancelled) then resumed from the receiver's partial file with the bytes
before the offset not sent again (the receiver's record of each attempt: where it started and the
bytes it wrote); hostile names refused by the sender and, sent raw, by the receiver; a node of another
user is no file target and beta refuses its PUT (Go's 403) until the policy's ``taildrop`` entry
allows it, and even then not when the ACLs keep it from beta's peerAPI.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
import threading
from pathlib import Path

import anyio
import pytest

from pytsnet.config import Config
from pytsnet.device import ActorDevice
from pytsnet.errors import (
    DialTimeout,
    TaildropNameInvalid,
    TaildropRefused,
    TaildropTooLarge,
)
from pytsnet.localnet.server import LocalTailnet
from pytsnet.localnet.store import DEFAULT_USER
from pytsnet.net.http import http_request
from pytsnet.testing.polling import wait_until
from pytsnet.testing.tailnet import local_tailnet, new_device

MiB = 1 << 20


def _data(n: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(n)


def _received(dev: ActorDevice, name: str) -> bytes:
    with dev.open_waiting_file(name) as f:
        return f.read()


def test_64mib_byte_exact_with_progress(tmp_path: Path) -> None:
    data = _data(64 * MiB, 1)
    src = tmp_path / "big.bin"
    src.write_bytes(data)
    with local_tailnet(tmp_path, ["alpha", "beta"]) as tn:
        a, b = tn["alpha"], tn["beta"]
        targets = a.file_targets()
        assert [t.node.hostname for t in targets] == ["beta"]
        seen: list[tuple[int, int | None]] = []

        async def send() -> int:
            return await a.send_file("beta", src, progress=lambda done, total: seen.append((done, total)))

        assert anyio.run(send) == 0  # nothing to resume
        assert [w.name for w in b.waiting_files()] == ["big.bin"]
        assert b.waiting_files()[0].size == len(data)
        got = _received(b, "big.bin")
        assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest()
        dones = [d for d, _ in seen]
        assert dones == sorted(dones) and dones[-1] == len(data) and len(dones) > 10
        assert {t for _, t in seen} == {len(data)}
        assert not any(p.name.endswith(".partial") for p in (tmp_path / "beta" / "files").iterdir())
        b.delete_waiting_file("big.bin")
        assert b.waiting_files() == []
        # the same name again, other bytes: the receiver keeps both, the second as Go's "name (1)"
        anyio.run(lambda: a.send_file("beta", src))
        src.write_bytes(b"other")
        anyio.run(lambda: a.send_file("beta", src))
        assert [(w.name, w.size) for w in b.waiting_files()] == [("big (1).bin", 5), ("big.bin", len(data))]
        assert b.status().counters["peerapi_taildrop_put"] == 3  # the peerAPI's counters see each file


def test_cut_transfer_resumes_from_the_partial_offset(tmp_path: Path) -> None:
    data = _data(24 * MiB, 2)
    src = tmp_path / "cut.bin"
    src.write_bytes(data)
    with local_tailnet(tmp_path, ["alpha", "beta"]) as tn:
        a, b = tn["alpha"], tn["beta"]

        async def cut() -> None:
            with anyio.CancelScope() as scope:
                def progress(done: int, total: int | None) -> None:
                    if done >= 8 * MiB:
                        scope.cancel()  # the sending task is killed mid-file: its flow closes
                await a.send_file("beta", src, progress=progress)
            assert scope.cancel_called

        anyio.run(cut)
        wait_until(lambda: len(b.taildrop_history()) == 1, 20, "beta saw the cut upload end")
        first = b.taildrop_history()[0]
        assert not first.done and first.offset == 0 and 0 < first.received < len(data)
        assert b.waiting_files() == []  # only a partial file
        partials = [p.name for p in (tmp_path / "beta" / "files").iterdir()]
        a_id = b.whois(tn.ip(a)).node.stable_id
        assert partials == [f"cut.bin.{a_id}.partial"]  # Go's <name>.<sender's stable ID>.partial
        assert (tmp_path / "beta" / "files" / partials[0]).read_bytes() == data[:first.received]

        seen: list[int] = []
        offset = anyio.run(lambda: a.send_file("beta", src, progress=lambda d, t: seen.append(d)))
        second = b.taildrop_history()[1]
        assert offset == first.received == second.offset  # resumed where the receiver's bytes end
        assert second.done and second.received == len(data) - offset  # the bytes before it: not re-sent
        assert seen[0] == offset and seen[-1] == len(data)
        assert _received(b, "cut.bin") == data


HOSTILE = ["../x", "CON", "nul.txt", "a\x00b", "n" * 300, "x.partial", "..", "a/b", " x"]


def test_hostile_names_refused_both_sides(tmp_path: Path) -> None:
    src = tmp_path / "h.bin"
    src.write_bytes(b"payload")
    with local_tailnet(tmp_path, ["alpha", "beta"]) as tn:
        a, b = tn["alpha"], tn["beta"]
        for name in HOSTILE:
            with pytest.raises(TaildropNameInvalid):
                anyio.run(lambda n=name: a.send_file("beta", src, name=n))  # type: ignore[misc]
        # sent raw (a hostile sender skips its own checks): beta answers Go's 400, writes nothing
        b_ip, port = tn.ip(b), b.peerapi_port
        sock = a.tcp_connect_blocking(b_ip, port, timeout=20)
        sock.settimeout(20)
        try:
            for target in ["/v0/put/..%2Fx", "/v0/put/CON", "/v0/put/a%00b", "/v0/put/" + "n" * 300,
                           "/v0/put/x.partial", "/v0/put/%2e%2e", "/v0/put/%ff", "/v0/put/a%2Fb"]:
                ans = http_request(sock, "PUT", target, host=f"{b_ip}:{port}", body=b"evil")
                assert ans is not None and ans.status == 400, (target, ans)
                assert ans.body == b"invalid filename\n"
                sock.close()
                sock = a.tcp_connect_blocking(b_ip, port, timeout=20)  # a refused PUT closes
                sock.settimeout(20)
        finally:
            sock.close()
        files = tmp_path / "beta" / "files"
        assert not (tmp_path / "beta" / "x").exists() and not (tmp_path / "x").exists()
        assert not files.exists() or list(files.iterdir()) == []
        with pytest.raises(TaildropNameInvalid):
            b.open_waiting_file("../beta/nodekey")

        # a stream of unknown length (a pipe) goes chunked; the name is required and checked
        data = _data(3 * MiB + 5, 3)
        r, w = os.pipe()
        writer = threading.Thread(target=lambda: (os.write(w, data), os.close(w)), daemon=True)
        writer.start()
        with os.fdopen(r, "rb") as stream:
            seen: list[tuple[int, int | None]] = []
            anyio.run(lambda: a.send_file("beta", stream, name="piped.bin",
                                          progress=lambda d, t: seen.append((d, t))))
        writer.join(5)
        assert _received(b, "piped.bin") == data and seen[-1] == (len(data), None)


def _mallory(net: LocalTailnet, tmp_path: Path) -> ActorDevice:
    return ActorDevice(Config(dir=tmp_path / "mallory", hostname="mallory",
                              auth_key=net.create_authkey(user="mallory@example.com"),
                              control_url=net.control_url, backoff_max=1.0, bind_host="127.0.0.1")).start()


def test_other_users_node_refused_by_capabilities_and_filter(tmp_path: Path) -> None:
    src = tmp_path / "m.bin"
    src.write_bytes(b"from mallory")
    with LocalTailnet(tmp_path / "control", listen="127.0.0.1:0") as net:
        b = new_device(net, tmp_path, "beta").start()
        m = _mallory(net, tmp_path)
        try:
            b.wait_until_running_blocking(20)
            m.wait_until_running_blocking(20)
            wait_until(lambda: len(b.peers()) == 1 and len(m.peers()) == 1, 20, "peers")
            assert m.file_targets() == [] and b.file_targets() == []
            with pytest.raises(TaildropRefused):
                anyio.run(lambda: m.send_file("beta", src))
            # raw, past mallory's own check: beta's peerAPI refuses with Go's 403
            b_ip, port = b.tailscale_ips()[0], b.peerapi_port
            sock = m.tcp_connect_blocking(b_ip, port, timeout=20)
            sock.settimeout(20)
            try:
                ans = http_request(sock, "PUT", "/v0/put/m.bin", host=f"{b_ip}:{port}", body=b"x")
                assert ans is not None and ans.status == 403
                assert ans.body == b"Taildrop disabled; no storage directory\n"
            finally:
                sock.close()
            assert b.waiting_files() == []

            # the policy lets mallory send to admin's nodes: a target now, and beta accepts it
            net.set_policy({"taildrop": [{"src": ["mallory@example.com"], "dst": [DEFAULT_USER]}]})
            wait_until(lambda: [t.node.hostname for t in m.file_targets()] == ["beta"], 20, "target")
            assert b.file_targets() == []  # one way only
            anyio.run(lambda: m.send_file("beta", src))
            assert _received(b, "m.bin") == b"from mallory"

            # ...but not when the ACLs keep mallory from beta's peerAPI (the packet filter first)
            net.set_policy({"taildrop": [{"src": ["mallory@example.com"], "dst": [DEFAULT_USER]}],
                            "acls": [{"action": "accept", "src": [DEFAULT_USER], "dst": ["*:*"]}]})
            def acl_in_force() -> bool:
                nm = b.dataplane_info().netmap
                return nm is not None and nm.packet_filter is not None and \
                    all(r.SrcIPs != ["*"] for r in nm.packet_filter)
            wait_until(acl_in_force, 20, "beta has the ACL that leaves mallory out")
            with pytest.raises(DialTimeout):  # the SYN is dropped by beta's filter
                anyio.run(lambda: m.send_file("beta", src, name="m2.bin", timeout=3))
            assert [w.name for w in b.waiting_files()] == ["m.bin"]
        finally:
            m.close()
            b.close()


def test_receivers_budget_refusal_reaches_the_sender_typed(tmp_path: Path) -> None:
    """A file over beta's size budget: refused at the PUT's head (413), alpha gets ``TaildropTooLarge``
    whether the size was declared (a file) or only found out mid-stream (a pipe, chunked)."""
    big = tmp_path / "big.bin"
    big.write_bytes(_data(3 * MiB, 4))
    with local_tailnet(tmp_path, ["alpha", "beta"], taildrop_max_file_size=1 * MiB) as tn:
        a, b = tn["alpha"], tn["beta"]
        with pytest.raises(TaildropTooLarge):
            anyio.run(lambda: a.send_file("beta", big))
        r, w = os.pipe()
        writer = threading.Thread(target=lambda: (os.write(w, big.read_bytes()), os.close(w)), daemon=True)
        writer.start()
        with os.fdopen(r, "rb") as stream, pytest.raises(TaildropTooLarge):
            anyio.run(lambda: a.send_file("beta", stream, name="piped.bin"))
        writer.join(5)
        assert b.waiting_files() == []
        small = tmp_path / "small.bin"
        small.write_bytes(b"fits")
        anyio.run(lambda: a.send_file("beta", small))  # beta still serves alpha
        assert [w.name for w in b.waiting_files()] == ["small.bin"]


def test_a_refusal_while_the_body_still_comes_is_answered_then_closed_with_a_fin(tmp_path: Path) -> None:
    """Beta refuses a PUT at its head (413) while alpha's body is still arriving: alpha reads the whole
    answer and then an EOF, not a reset. (The order itself, FIN then the close ``LINGER`` later, is
    shown on an in-memory channel: tests/peerapi/test_peerapi_actors.py; a reset at once could
    overtake the answer, and under load a sender lost its 413 so.)"""
    with local_tailnet(tmp_path, ["alpha", "beta"], taildrop_max_file_size=1 * MiB) as tn:
        a, b = tn["alpha"], tn["beta"]
        b_ip, port = b.tailscale_ips()[0], b.peerapi_port
        sock = a.tcp_connect_blocking(b_ip, port, timeout=20)
        sock.settimeout(20)
        try:
            head = (f"PUT /v0/put/big.bin HTTP/1.1\r\nHost: {b_ip}:{port}\r\n"
                    f"Content-Length: {3 * MiB}\r\n\r\n").encode()
            sock.sendall(head)
            sending = threading.Event()

            def body() -> None:  # the body keeps coming, as a file being sent does
                sending.set()
                with contextlib.suppress(OSError):
                    for _ in range(3 * MiB // (64 << 10)):
                        sock.sendall(bytes(64 << 10))

            threading.Thread(target=body, daemon=True).start()
            assert sending.wait(5)
            got = bytearray()
            while chunk := sock.recv(65536):  # a reset here (ConnectionResetError) is the bug
                got += chunk
            assert got.startswith(b"HTTP/1.1 413"), bytes(got[:200])
            assert got.endswith(b"file too large\n"), bytes(got[-200:])
        finally:
            sock.close()


def test_unsigned_peer_api_only_node_cannot_put_files(tmp_path: Path) -> None:
    """Go's ``canPutFile``: an ``UnsignedPeerAPIOnly`` peer is refused Taildrop (403) even as a node of our
    own user, while it still reaches the peerAPI (21h)."""
    src = tmp_path / "u.bin"
    src.write_bytes(b"unsigned")
    with local_tailnet(tmp_path, ["alpha", "beta"]) as tn:
        a, b = tn["alpha"], tn["beta"]
        anyio.run(lambda: a.send_file("beta", src))  # allowed before the mark
        tn.net.set_unsigned_peer_api_only("alpha")
        wait_until(lambda: any(p.unsigned_peer_api_only for p in b.peers()), 20, "beta sees the mark")
        b_ip, port = tn.ip(b), b.peerapi_port
        sock = a.tcp_connect_blocking(b_ip, port, timeout=20)
        sock.settimeout(20)
        try:
            ans = http_request(sock, "PUT", "/v0/put/u2.bin", host=f"{b_ip}:{port}", body=b"x")
            assert ans is not None and ans.status == 403
            assert ans.body == b"Taildrop disabled; no storage directory\n"
        finally:
            sock.close()
        assert [w.name for w in b.waiting_files()] == ["u.bin"]
