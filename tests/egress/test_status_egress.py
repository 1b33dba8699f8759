"""The status endpoint: ``EgressStatus`` JSON at ``/`` and Prometheus text at ``/metrics`` (checked
with a small parser of the exposition format: HELP and TYPE before each family's samples, valid names,
labels and values), from a running egress with fake workers."""

from __future__ import annotations

import contextlib
import re
import socket
import time

import httpx
import pytest
from fake_worker import socks_flow, worker_command

from pytsnet.egress import Egress, EgressConfig, EgressStatus
from pytsnet.egress import status as status_mod
from pytsnet.egress.status import StatusServer, render_metrics
from pytsnet.messages.egress import FrontCounters, WorkerStatus
from pytsnet.testing.polling import wait_until

_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)'
                     r'(?:\{((?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\]|\\.)*",?)*)\})? (\S+)$')


def parse_exposition(text: str) -> dict[str, dict[str, object]]:
    """family → {"type", "help", "samples": [(labels, value)]}; AssertionError for invalid text."""
    assert text.endswith("\n")
    families: dict[str, dict[str, object]] = {}
    for line in text.splitlines():
        if line.startswith("# HELP ") or line.startswith("# TYPE "):
            _, kind, name, rest = line.split(" ", 3)
            assert _NAME.match(name), line
            fam = families.setdefault(name, {"samples": []})
            if kind == "TYPE":
                assert rest in ("counter", "gauge", "histogram", "summary", "untyped"), line
                assert not fam["samples"], f"TYPE after samples: {line}"
                fam["type"] = rest
            else:
                fam["help"] = rest
            continue
        m = _SAMPLE.match(line)
        assert m, f"not a sample line: {line!r}"
        name, labels, value = m.groups()
        assert name in families and "type" in families[name] and "help" in families[name], line
        float(value)
        got = dict(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"', labels or ""))
        families[name]["samples"].append((got, float(value)))  # type: ignore[attr-defined]
    return families


def test_json_and_metrics_from_a_running_egress() -> None:
    cfg = EgressConfig(socks="127.0.0.1:0", status="127.0.0.1:0", workers=2, drain_timeout=2.0,
                       worker_command=worker_command())
    with Egress(cfg) as eg:
        wait_until(lambda: eg.status().state == "running", 10, "running")
        # "running" comes with the first ready worker; the second may still be starting (no beat yet)
        wait_until(lambda: all(w.state == "ready" for w in eg.status().workers), 10, "both workers ready")
        s, _ = socks_flow(eg.socks_address or "", "a.example.com", 80, early=b"xyz")
        base = f"http://{eg.status_address}"
        def flows() -> int:
            st = EgressStatus.model_validate_json(httpx.get(base + "/").text)
            return sum(w.flows_total for w in st.workers)

        wait_until(lambda: flows() >= 1, 5, "the flow in the status")
        r = httpx.get(base + "/")
        assert r.status_code == 200 and r.headers["content-type"] == "application/json"
        st = EgressStatus.model_validate_json(r.text)
        assert st.state == "running" and len(st.workers) == 2 and st.front.assigned == 1
        assert all(w.pid and w.heartbeat_age is not None for w in st.workers)
        m = httpx.get(base + "/metrics")
        assert m.status_code == 200 and m.headers["content-type"].startswith("text/plain; version=0.0.4")
        fams = parse_exposition(m.text)
        up = fams["pytsnet_egress_worker_up"]
        assert up["type"] == "gauge" and up["samples"] == [({"worker": "0"}, 1.0), ({"worker": "1"}, 1.0)]
        assert fams["pytsnet_egress_front_assigned_total"]["samples"] == [({}, 1.0)]
        assert fams["pytsnet_egress_front_assigned_total"]["type"] == "counter"
        states = dict((lab["state"], v) for lab, v in fams["pytsnet_egress_state"]["samples"])  # type: ignore[attr-defined]
        assert states["running"] == 1.0 and sum(states.values()) == 1.0
        opened = dict((lab["worker"], v) for lab, v in fams["pytsnet_egress_worker_flows_open"]["samples"])  # type: ignore[attr-defined]
        assert sum(opened.values()) == 1.0
        for name in ("flows_total", "bytes_up_total", "bytes_down_total", "restarts_total", "exit_ok", "rss"):
            assert f"pytsnet_egress_worker_{name}" in fams, name
        assert httpx.get(base + "/nope").status_code == 404
        s.close()


def test_the_parser_rejects_what_is_not_the_format() -> None:
    text = render_metrics(EgressStatus(state="escalated", reason='a "quoted"\nreason',
                                       workers=[WorkerStatus(worker=0, state="backoff", restarts=3)],
                                       front=FrontCounters(refused=5)))
    fams = parse_exposition(text)
    assert fams["pytsnet_egress_worker_restarts_total"]["samples"] == [({"worker": "0"}, 3.0)]
    bads = ("pytsnet_x 1\n", "# TYPE a counter\n# HELP a h\na{b=c} 1\n", text.replace(" 3\n", " three\n"))
    for bad in bads:
        try:
            parse_exposition(bad)
        except (AssertionError, ValueError):
            continue
        raise AssertionError(f"accepted: {bad!r}")


def test_a_client_that_sends_nothing_is_cut_after_the_request_timeout(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A connection that never sends its request must not hold a server thread forever (each idle
    connection was a thread until the client went away: a slowloris grew them without bound)."""
    monkeypatch.setattr(status_mod, "REQUEST_TIMEOUT", 1.0)
    srv = StatusServer("127.0.0.1", 0, lambda: EgressStatus(state="running"))
    try:
        host, _, port = srv.address.rpartition(":")
        idle = socket.create_connection((host, int(port)), timeout=10)
        t0 = time.monotonic()
        with contextlib.suppress(ConnectionResetError):
            assert idle.recv(1) == b""  # the server closed it
        assert time.monotonic() - t0 < 8
        idle.close()
        assert httpx.get(f"http://{srv.address}/", timeout=5).json()["state"] == "running"
    finally:
        srv.close()
