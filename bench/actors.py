"""Actor runtime benchmark: tell throughput, ask round trip, spawn+stop rate, RSS per idle actor.

Run: ``python bench/actors.py [--actors 10000]``. Each dispatcher mode (thread, pool) runs in its own
subprocess so RSS numbers do not mix. Finishes well under two minutes on a 2-core machine.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

from pytsnet.actors.runtime import Actor, ActorSystem, MailboxConfig, handles
from pytsnet.messages.runtime import Count, Ping, Pong, Total, Work


class Sink(Actor):
    def __init__(self) -> None:
        self.n = 0

    @handles(Work)
    def work(self, msg: Work) -> None:
        self.n += 1

    @handles(Ping)
    def ping(self, msg: Ping) -> Pong:
        return Pong(seq=msg.seq)

    @handles(Count)
    def count(self, msg: Count) -> Total:
        return Total(value=self.n)


def rss_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def run_mode(mode: str, actors: int, tells: int, asks: int) -> dict[str, float]:
    system = ActorSystem(f"bench-{mode}", dispatcher=mode)
    out: dict[str, float] = {}
    ref = system.spawn(Sink, name="sink", mailbox=MailboxConfig(tells + 10))
    msg = Work(seq=1)
    t = time.perf_counter()
    for _ in range(tells):
        ref.tell(msg)
    assert ref.ask(Count(), timeout=60).value == tells
    out["tell_msgs_per_s"] = tells / (time.perf_counter() - t)
    rtts = []
    ping = Ping(seq=1)
    for _ in range(asks):
        t = time.perf_counter()
        ref.ask(ping)
        rtts.append((time.perf_counter() - t) * 1e6)
    rtts.sort()
    out["ask_p50_us"] = statistics.median(rtts)
    out["ask_p99_us"] = rtts[int(len(rtts) * 0.99) - 1]
    base = rss_kib()
    t = time.perf_counter()
    refs = [system.spawn(Sink, name=f"idle-{i}", mailbox=MailboxConfig(16)) for i in range(actors)]
    spawn_s = time.perf_counter() - t
    time.sleep(0.5)  # let threads settle before reading RSS
    out["rss_total_mib"] = rss_kib() / 1024
    out["rss_per_idle_actor_kib"] = (rss_kib() - base) / actors
    assert refs[-1].ask(Ping(seq=2)).seq == 2
    t = time.perf_counter()
    for r in refs:
        r.stop()
    stop_s = time.perf_counter() - t
    out["spawn_per_s"] = actors / spawn_s
    out["stop_per_s"] = actors / stop_s
    out["spawn_plus_stop_per_s"] = actors / (spawn_s + stop_s)
    system.shutdown()
    return out


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--mode", choices=["thread", "pool"])
    p.add_argument("--actors", type=int, default=10_000)
    p.add_argument("--tells", type=int, default=50_000)
    p.add_argument("--asks", type=int, default=2_000)
    a = p.parse_args()
    if a.mode:
        print(json.dumps(run_mode(a.mode, a.actors, a.tells, a.asks)))
        return 0
    print("command:", " ".join([sys.executable, *sys.argv]))
    for mode in ("thread", "pool"):
        cmd = [sys.executable, __file__, "--mode", mode, "--actors", str(a.actors),
               "--tells", str(a.tells), "--asks", str(a.asks)]
        res = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
        print(f"[{mode}] tell {res['tell_msgs_per_s']:,.0f} msg/s | ask p50 {res['ask_p50_us']:.0f} us "
              f"p99 {res['ask_p99_us']:.0f} us | {a.actors} actors: spawn {res['spawn_per_s']:,.0f}/s, "
              f"stop {res['stop_per_s']:,.0f}/s, spawn+stop {res['spawn_plus_stop_per_s']:,.0f}/s | "
              f"RSS {res['rss_per_idle_actor_kib']:.1f} KiB/idle actor "
              f"({res['rss_total_mib']:.0f} MiB total)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
