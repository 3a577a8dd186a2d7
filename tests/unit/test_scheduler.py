"""The scheduler's start grid: checks due close together share one wake-up, and a
daemon with many services, whose loop is never idle, starts them on a finer grid."""

from __future__ import annotations

import asyncio
import random
import statistics

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
    (100, 0.005, scheduler.TICK_S + 0.01),  # waits for the 20 ms grid: median ~10 ms
    (scheduler.DENSE, 0.0, 0.005),  # a quarter of it: median ~2.5 ms
])
def test_start_lag_follows_the_grid(n: int, low: float, high: float) -> None:
    lags = asyncio.run(_lags(n, 1.5))
    assert len(lags) >= n  # every service ran
    assert low <= statistics.median(lags) <= high
