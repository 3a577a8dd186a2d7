"""Timing of checks on asyncio: no drift, no overlap, bounded concurrency.

Each service's next start is its previous *scheduled* start + interval, so lag never
accumulates. Starts are rounded up to a TICK_S grid: on a virtual machine every wake-up
from an idle wait costs tens of microseconds of cold CPU, and at 1,000 checks a second
one wake-up per 20 ms instead of one per check took a third off the CPU per check
(bench/throughput.py: 0.33 -> 0.22 ms) for at most 20 ms of start lag. A run that
overran its interval starts the next one at once instead of bursting to catch up.
`maxprocs` queues checks (never drops them) and says so, once
per THROTTLE_LOG_S with the count: an overloaded daemon must not also write a line per
check.
"""

from __future__ import annotations

import asyncio
import random
from typing import Any, Awaitable, Callable, Hashable

THROTTLE_LOG_S = 10.0
TICK_S = 0.02  # starts are rounded up to this grid: checks due close together share one wake-up

Job = Callable[[float], Awaitable[float]]  # (start lag in s) -> seconds until the next run


class Scheduler:
    def __init__(self, maxprocs: int, log: Any, rng: random.Random | None = None):
        self.sem = asyncio.Semaphore(maxprocs) if maxprocs > 0 else None
        self.log = log
        self.rng = rng or random.Random()
        self.tasks: dict[Hashable, asyncio.Task[None]] = {}
        self.waiting = 0
        self.throttled = 0  # checks that waited since the last `scheduler.throttled` line
        self.logged_at = -THROTTLE_LOG_S

    def start(self, key: Hashable, delay: float, job: Job, skew: float = 0.0) -> None:
        self.stop(key)
        self.tasks[key] = asyncio.get_running_loop().create_task(self._loop(key, delay, job, skew))

    def stop(self, key: Hashable) -> None:
        task = self.tasks.pop(key, None)
        if task is not None:
            task.cancel()

    async def close(self) -> None:
        tasks = list(self.tasks.values())
        self.tasks.clear()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _loop(self, key: Hashable, delay: float, job: Job, skew: float) -> None:
        loop = asyncio.get_running_loop()
        due = loop.time() + delay
        me = asyncio.current_task()
        while True:
            await asyncio.sleep(max(0.0, -(-due // TICK_S) * TICK_S - loop.time()))
            interval = await self._run(key, job, due)
            if self.tasks.get(key) is not me:
                # replaced or stopped while its check ran, and the cancel was lost on the
                # way (3.11's wait_for can swallow one): never run beside the new timer
                return
            due += max(interval + (self.rng.uniform(-skew, skew) if skew else 0.0), 0.001)
            due = max(due, loop.time())

    async def _run(self, key: Hashable, job: Job, due: float) -> float:
        loop = asyncio.get_running_loop()
        sem = self.sem  # a reload may swap in a new one; release the one we took
        if sem is None:
            return await job(loop.time() - due)
        if sem.locked():
            self.waiting += 1
            self.throttled += 1
            if loop.time() - self.logged_at >= THROTTLE_LOG_S:
                self.logged_at = loop.time()
                self.log.warning("scheduler.throttled", service=":".join(map(str, key)) if isinstance(key, tuple)
                                 else str(key), queued=self.waiting, waited=self.throttled)
                self.throttled = 0
            try:
                await sem.acquire()
            finally:
                self.waiting -= 1
        else:
            await sem.acquire()
        try:
            return await job(loop.time() - due)
        finally:
            sem.release()
