#!/usr/bin/env python3
"""The IPVS owner's cost of one health change, natively, part by part.

    python3 bench/owner_health.py [--vips 1000] [--reals 10] [--trials 10] [--src DIR]

The table of bench/ipvs_scale.py (`--vips` TCP services x `--reals` real servers, one
pool behind every VIP, one watch) on the kernel's in-memory twin (MemoryTable), so
what is timed is the owner's Python and nothing of netlink. One real server behind
every VIP goes down and up `--trials` times; each `reconcile("health")` is timed
whole and split into the parts it calls (wrapped by name where they exist in the
tree under test, so an older tree is measured the same way with `--src`). A part's
time includes the parts it calls (plan includes policy.decide). The CPU is this
process's; compare figures only within one run (the machine is shared).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]

PARTS = (  # (module attribute path, label): wrapped when present
    ("owner.LvsOwner._health", "health lookup"),
    ("owner.LvsOwner._select", "select services"),
    ("owner.plan", "plan (all)"),
    ("policy.decide", "  policy.decide"),
    ("owner.apply_overrides", "apply_overrides"),
    ("owner.diff", "diff"),
    ("owner.after", "after"),
    ("owner.LvsOwner._take", "_take"),
    ("owner.LvsOwner._quorum", "_quorum"),
    ("observe", "observe (timeline)"),
    ("apply", "backend apply"),
)


class Log:
    def __init__(self) -> None:
        self.n = 0

    def _add(self, event: str, **kw: Any) -> None:
        self.n += 1

    debug = info = warning = error = _add

    def is_enabled_for(self, level: int) -> bool:  # as the daemon at --log-level info
        return level >= 20


def timed(fn: Callable[..., Any], acc: dict[str, float], label: str) -> Callable[..., Any]:
    if asyncio.iscoroutinefunction(fn):
        async def awrap(*a: Any, **kw: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return await fn(*a, **kw)
            finally:
                acc[label] += time.perf_counter() - t0
        return awrap

    def wrap(*a: Any, **kw: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return fn(*a, **kw)
        finally:
            acc[label] += time.perf_counter() - t0
    return wrap


async def main(a: argparse.Namespace) -> None:
    from pymon.ipvs import owner, policy
    from pymon.ipvs.table import MemoryTable
    from pymon.model.config import IpvsOptions
    from pymon.ops.timeline import Timeline

    sys.path.insert(0, str(ROOT / "bench"))
    from ipvs_scale import build

    vss, _ = build(a.vips, a.reals)
    health = {rs.host: True for rs in vss[0].reals}
    mem = MemoryTable()
    o = owner.LvsOwner(IpvsOptions(), mem, Log(), vss=vss, health=lambda w, h: health[h])
    o.observe = Timeline().record
    await o.reconcile("start")
    acc: dict[str, float] = defaultdict(float)
    mods = {"owner": owner, "policy": policy}
    for path, label in PARTS:
        if path == "observe":
            o.observe = timed(o.observe, acc, label)
        elif path == "apply":
            mem.apply = timed(mem.apply, acc, label)  # type: ignore[method-assign]
        else:
            head, *mid, name = path.split(".")
            obj: Any = mods[head]
            for m in mid:
                obj = getattr(obj, m)
            if hasattr(obj, name):
                setattr(obj, name, timed(getattr(obj, name), acc, label))
    victim = vss[0].reals[2].host
    totals: list[float] = []
    per: dict[str, list[float]] = defaultdict(list)
    for i in range(a.trials):
        health[victim] = i % 2 == 1
        acc.clear()
        t0 = time.perf_counter()
        ops = await o.reconcile("health")
        totals.append(time.perf_counter() - t0)
        assert len(ops) == a.vips, len(ops)
        for k, v in acc.items():
            per[k].append(v)
    med = statistics.median(totals)
    print(f"{a.vips} x {a.reals} = {a.vips * a.reals:,} destinations, {a.trials} health changes "
          f"(one real server behind every VIP, down/up), load {os.getloadavg()[0]:.2f}")
    print(f"reconcile('health'): median {med * 1e3:.1f} ms (min {min(totals) * 1e3:.1f}, max {max(totals) * 1e3:.1f})")
    for _, label in PARTS:
        if label in per:
            m = statistics.median(per[label])
            print(f"  {label:<22} {m * 1e3:7.1f} ms  {100 * m / med:5.1f} %")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--vips", type=int, default=1000)
    ap.add_argument("--reals", type=int, default=10)
    ap.add_argument("--trials", type=int, default=10)
    ap.add_argument("--src", help="the src/ directory of the tree to measure (default: this checkout's)")
    args = ap.parse_args()
    sys.path.insert(0, args.src or str(ROOT / "src"))
    asyncio.run(main(args))
