#!/usr/bin/env python3
"""The IPVS owner's cost of one health change, natively, part by part.

    python3 bench/owner_health.py [--vips 1000] [--reals 10] [--trials 10] [--src DIR]

Two tables of `--vips` TCP services x `--reals` real servers (DR, wrr, one watch) on
the kernel's in-memory twin (MemoryTable), so what is timed is the owner's Python and
nothing of netlink: "shared", bench/ipvs_scale.py's (one pool of `--reals` servers
behind every VIP), and "spread" (`--vips` servers, each behind `--reals` VIPs). One
real server goes down and up `--trials` times; each `reconcile("health")` is timed
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
    ("owner.plan", "plan"),
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


def spread(vips: int, reals: int) -> list[Any]:
    """`vips` services over `vips` real servers, each server behind `reals` of them."""
    from pymon.ipvs.table import Dest, Service, ServiceKey
    from pymon.model.config import RealServerSpec, VirtualServiceSpec

    addrs = [f"10.60.{i // 250}.{i % 250 + 1}" for i in range(vips)]
    step = max(1, vips // reals)
    return [VirtualServiceSpec(
        f"vip{i}", Service(ServiceKey("tcp", f"10.50.{i // 250}.{i % 250 + 1}", 80), "wrr"), ("pool", "tcp"),
        [RealServerSpec(addrs[(i + k * step) % vips], Dest(addrs[(i + k * step) % vips], 80, "dr", 1 + k % 3))
         for k in range(reals)]) for i in range(vips)]


async def main(a: argparse.Namespace) -> None:
    sys.path.insert(0, str(ROOT / "bench"))
    from ipvs_scale import build

    print(f"{a.vips} x {a.reals} = {a.vips * a.reals:,} destinations, {a.trials} health changes "
          f"(one real server down/up), load {os.getloadavg()[0]:.2f}")
    await scenario("shared", build(a.vips, a.reals)[0], a)
    await scenario("spread", spread(a.vips, a.reals), a)


async def scenario(table: str, vss: list[Any], a: argparse.Namespace) -> None:
    from pymon.ipvs import owner, policy
    from pymon.ipvs.table import MemoryTable
    from pymon.model.config import IpvsOptions
    from pymon.ops.timeline import Timeline

    health = {rs.host: True for vs in vss for rs in vs.reals}
    mem = MemoryTable()
    o = owner.LvsOwner(IpvsOptions(), mem, Log(), vss=vss, health=lambda w, h: health[h])
    o.observe = Timeline().record
    await o.reconcile("start")
    acc: dict[str, float] = defaultdict(float)
    mods = {"owner": owner, "policy": policy}
    saved = []
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
                saved.append((obj, name, getattr(obj, name)))
                setattr(obj, name, timed(getattr(obj, name), acc, label))
    victim = vss[0].reals[2].host
    behind = sum(1 for vs in vss if any(rs.host == victim for rs in vs.reals))
    totals: list[float] = []
    per: dict[str, list[float]] = defaultdict(list)
    for i in range(a.trials):
        health[victim] = i % 2 == 1
        acc.clear()
        t0 = time.perf_counter()
        ops = await o.reconcile("health")
        totals.append(time.perf_counter() - t0)
        assert len(ops) == behind, len(ops)
        for k, v in acc.items():
            per[k].append(v)
    for obj, attr, fn in saved:
        setattr(obj, attr, fn)
    med = statistics.median(totals)
    print(f"{table}: the server is behind {behind} VIPs; reconcile('health') median {med * 1e3:.1f} ms "
          f"(min {min(totals) * 1e3:.1f}, max {max(totals) * 1e3:.1f})")
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
