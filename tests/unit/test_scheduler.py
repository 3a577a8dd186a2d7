"""The scheduler's start grid: checks due close together share one wake-up, and a
daemon with many services, whose loop is never idle, starts them on a finer grid."""

from __future__ import annotations

import asyncio
import random
import statistics
import time

import pytest

from pymon.engine import scheduler


class Log:
    def warning(self, *a: object, **kw: object) -> None:
        pass


async def _lags(n: int, seconds: float) -> list[float]:
    """Start lags (s) of n services at a 1 s interval, first runs at random over a second."""
    sched = scheduler.Scheduler(0, Log())
    lags: list[float] = []

    def job(key: object, lag: float, finish: scheduler.Finish) -> None:
        lags.append(lag)
        finish(1.0)

    rng = random.Random(7)
    for i in range(n):
        sched.start(i, rng.random(), job)
    await asyncio.sleep(seconds)
    await sched.close()
    return lags


@pytest.mark.parametrize("n, low, high", [
    (100, 0.02, 4 * scheduler.TICK_S + 0.01),  # few services: the 80 ms grid, median ~40 ms
    (scheduler.SPARSE, 0.005, scheduler.TICK_S + 0.01),  # waits for the 20 ms grid: median ~10 ms
    (scheduler.DENSE, 0.0, 0.005),  # a quarter of it: median ~2.5 ms
])
def test_start_lag_follows_the_grid(n: int, low: float, high: float) -> None:
    lags = asyncio.run(_lags(n, 1.5))
    assert len(lags) >= n  # every service ran
    assert low <= statistics.median(lags) <= high


def test_after_a_stall_checks_slip_in_batches() -> None:
    """A stall of 1.5 intervals with 1,000 services: each service's slots that passed
    are skipped (counted, none starts an interval late or more), and the checks due
    start at most BATCH per loop pass, with the loop's other work between batches."""

    async def run() -> tuple[dict[int, int], list[float], dict[str, int], int]:
        sched = scheduler.Scheduler(0, Log())
        loop = asyncio.get_running_loop()
        passes = [0]
        per_pass: dict[int, int] = {}
        lags: list[float] = []

        def tick() -> None:  # other work: once per loop pass
            passes[0] += 1
            loop.call_soon(tick)

        def job(key: object, lag: float, finish: scheduler.Finish) -> None:
            per_pass[passes[0]] = per_pass.get(passes[0], 0) + 1
            lags.append(lag)
            finish(0.2)

        for i in range(1000):
            sched.start(i, i / 5000, job)  # all within 0.2 s
        await asyncio.sleep(0.5)  # two rounds and more
        ran = len(lags)
        loop.call_soon(tick)
        time.sleep(0.3)  # the stall: 1.5 intervals
        await asyncio.sleep(0.1)
        await sched.close()
        return {p: n for p, n in per_pass.items() if p}, lags[ran:], sched.skipped, ran

    per_pass, after, skipped, ran = asyncio.run(run())
    assert ran >= 2000
    assert skipped["late"] >= 1000  # every service skipped the slot the stall took
    assert after and max(after) < 0.2  # what ran after the stall ran within its interval
    assert max(per_pass.values()) <= scheduler.BATCH < sum(per_pass.values())
