"""What wakes the daemon's loop, and what a second of it costs: N real servers (nginx on
loopback, as bench/throughput.py runs them), the daemon in this process for a window,
each return of the loop's selector put down to its cause (the readers whose events came,
else the timers that fell due), the loop thread's voluntary and involuntary context
switches (sleeps; preemptions), the process's CPU per second, and the gaps between a
service's check starts.

    python3 bench/wakeups.py -n 100 --duration 15
    python3 bench/wakeups.py -n 100 --interval 3600 --randstart 1 --warmup 4   # an idle daemon
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import throughput as T  # bench/throughput.py (scripts run from bench/)


def _name(cb: Any) -> str:
    f = getattr(cb, "__func__", None) or cb
    return getattr(f, "__qualname__", None) or type(cb).__qualname__


async def window(cfg: str, a: argparse.Namespace) -> None:
    sys.path.insert(0, a.src)
    from pymon import logs
    from pymon.app import Daemon
    from pymon.engine.runner import Runner

    log = logs.setup("json", "info", stream=open(os.devnull, "w"))
    loop = asyncio.get_running_loop()
    starts: dict[Any, list[float]] = collections.defaultdict(list)
    job = Runner.job

    def recorded(self: Runner, key: Any, lag: float, finish: Any) -> Any:
        starts[key].append(loop.time())
        return job(self, key, lag, finish)

    Runner.job = recorded  # type: ignore[method-assign]
    d = Daemon(cfg, log)
    task = loop.create_task(d.run())
    while d.runner is None or not d.runner.sched.entries:
        await asyncio.sleep(0.05)
    await asyncio.sleep(a.warmup)
    sel = loop._selector  # type: ignore[attr-defined]  # the watchdog's wrap of it
    inner = sel.select
    causes: collections.Counter[str] = collections.Counter()
    on = [True]

    def select(timeout: float | None = None) -> Any:
        ev = inner(timeout)
        if on[0]:
            if ev:
                causes["events: " + ", ".join(sorted(_name(k.data[0]._callback) for k, _ in ev if k.data[0]))] += 1
            elif loop._ready:  # type: ignore[attr-defined]
                causes["callbacks made ready"] += 1
            else:
                now = loop.time() + loop._clock_resolution  # type: ignore[attr-defined]
                causes["timer: " + ", ".join(sorted({_name(h._callback) for h in loop._scheduled  # type: ignore[attr-defined]
                                                     if h._when <= now and not h._cancelled}))] += 1
        return ev

    sel.select = select
    r0, c0, t0 = resource.getrusage(resource.RUSAGE_THREAD), time.process_time(), loop.time()
    await asyncio.sleep(a.duration)
    on[0] = False
    r1, cpu, el = resource.getrusage(resource.RUSAGE_THREAD), time.process_time() - c0, loop.time() - t0
    sel.select = inner
    gaps = sorted(b - x for ts in starts.values() for x, b in zip(ts, ts[1:]) if x >= t0)
    print(f"CPU {cpu / el * 1000:.1f} ms/s; loop passes {sum(causes.values()) / el:.1f}/s; loop thread: "
          f"sleeps {(r1.ru_nvcsw - r0.ru_nvcsw) / el:.1f}/s, preempted {(r1.ru_nivcsw - r0.ru_nivcsw) / el:.1f}/s")
    if gaps:
        print(f"check starts: {len(gaps)} gaps, p99 {gaps[int(len(gaps) * 0.99)]:.3f} s, max {gaps[-1]:.3f} s")
    for cause, n in causes.most_common():
        print(f"{n / el:8.2f}/s  {cause}")
    d.stopping.set()
    await asyncio.wait_for(task, 30)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-n", type=int, default=100, help="real servers, one per watch (default 100)")
    ap.add_argument("--duration", type=float, default=15.0)
    ap.add_argument("--warmup", type=float, default=3.0)
    ap.add_argument("--interval", type=float, default=1.0)
    ap.add_argument("--randstart", type=float, help="globals.randstart (default: the interval)")
    ap.add_argument("--port", type=int, default=8090)
    ap.add_argument("--src", default=str(T.ROOT / "src"), help="the source tree to run the daemon from")
    a = ap.parse_args()
    T.PORT = a.port
    tmp = Path(tempfile.mkdtemp(prefix="pymon-wakeups-"))
    nginx = T.Nginx(tmp, a.n, 2)
    nginx.start()
    try:
        rs = a.interval if a.randstart is None else a.randstart
        asyncio.run(window(str(T.pymon_config(tmp, a.n, a.interval, 1.0, rs, 1, 0)), a))
    finally:
        nginx.stop()


if __name__ == "__main__":
    main()
