"""Timing of checks on asyncio: no drift, no overlap, bounded concurrency.

Each service's next start is its previous *scheduled* start + interval, so lag never
accumulates. A run that started late or overran its interval skips the slots that
passed and keeps its phase: restarting late services "now" bunched them, and after one
stall (a start with 10,000 services) thousands stayed due in the same tick for good.

All services share one heap and one loop timer: a task per service, asleep between
runs, costs a wake-up, a sleep future and a timer handle per check and frames per
service (docs/performance.md). A run is a callback pair, not a coroutine: the job gets the service's key, the start lag and a
`finish(interval)` to call when the check is over, and returns how to cancel it (a
service stopped or restarted while its check runs). Jobs that await things run in a
task (`in_task`).

Starts are rounded up to a TICK_S grid: every wake-up from an idle wait costs cold CPU,
so checks due close together share one, for at most TICK_S of start lag. Below SPARSE
services the wake-ups, not the checks, are most of the daemon's CPU: the grid is four
times coarser (80 ms of start lag at most, against intervals of a second and more). From
DENSE services on, the loop is never idle and a wake-up is no dearer than a pass: the
grid is a quarter as fine, and the checks start in smaller bursts, which lowers both the
start lag and the CPU per check (docs/performance.md).

`maxprocs` queues checks (never drops them) and says so, once per THROTTLE_LOG_S with
the count: an overloaded daemon must not also write a line per check.

When the daemon cannot keep up (the CPU is taken by other work, a plugin blocks the
loop), checks slip, they do not pile up. A pass starts at most BATCH checks and leaves
the rest due for the next pass, after the loop has handled the answers that came in
meanwhile: after a stall, thousands of due checks started in one pass held the loop for
hundreds of ms and made the stall longer. A check whose whole interval passed before it
could start is not run late: it is skipped to its next slot (phase kept), so the backlog
is never more than one interval of checks, and a service is never checked twice in one
interval to catch up. Its skipped slots are counted (`skipped["late"]`) and said in one
`scheduler.behind` line per THROTTLE_LOG_S at most. Slots that pass while the service's
previous check is still running are skipped too and counted (`skipped["running"]`), not
logged: most often that is a server slower than the service's interval (timeout >
interval), which the daemon could not help.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import random
from collections import deque
from typing import Any, Callable, Coroutine, Hashable, TypeVar

from pymon.plugin import Cancel

T = TypeVar("T")
THROTTLE_LOG_S = 10.0
SWEEP_S = 1.0  # how often runs past their limit are looked for
CLOSE_WAIT_S = 5.0  # at close, runs that ignore their cancellation are waited for this long, then left
TICK_S = 0.02  # starts are rounded up to this grid: checks due close together share one wake-up
SPARSE = 1000  # services below which the grid is four times coarser
DENSE = 4000  # services from which the grid is a quarter as coarse
BATCH = 100  # checks started per loop pass at most (10,000 services at 1 s on the 5 ms grid: 50 a pass)
SKIPPED = ("late", "running")  # why slots were skipped: not started within the interval; the last check still running

Finish = Callable[[float], None]  # the run is over: seconds until the next one
Job = Callable[[Any, float, Finish], "Cancel | None"]  # (key, start lag s, finish) -> how to cancel the run


class _Entry:
    """One service's timer; calling it is the run's `finish` (no bound method or
    partial per service: each is an object per service for the garbage collector,
docs/performance.md)."""

    __slots__ = ("sched", "key", "job", "skew", "due", "step", "live", "running", "cancel")

    def __init__(self, sched: "Scheduler", key: Hashable, job: Job, skew: float, due: float):
        self.sched, self.key, self.job, self.skew, self.due = sched, key, job, skew, due
        self.step = 0.0  # the interval to this slot from the last; 0 before the first run (never skipped)
        self.live = True  # False once stopped or replaced
        self.running = False
        self.cancel: Cancel | None = None

    def __call__(self, interval: float) -> None:
        self.sched._finished(self, interval)


class Scheduler:
    def __init__(self, maxprocs: int, log: Any, rng: random.Random | None = None):
        self.maxprocs = maxprocs
        self.log = log
        self.rng = rng or random.Random()
        self.entries: dict[Hashable, _Entry] = {}
        self.heap: list[tuple[float, int, _Entry]] = []
        self.seq = itertools.count()
        self.queue: deque[_Entry] = deque()  # due, waiting for a maxprocs slot
        self.running = 0
        self.tasks: set[asyncio.Task[Any]] = set()
        # runs with a time limit: task -> (deadline, what `done` gets instead when it passes)
        self.limits: dict[asyncio.Task[Any], tuple[float, Callable[[], Any], Callable[[Any], None]]] = {}
        self.abandoned: set[asyncio.Task[Any]] = set()
        self.sweeper: asyncio.TimerHandle | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.timer_at = float("inf")
        # made in the daemon's loop, which it keeps: asyncio.get_running_loop() makes a
        # getpid() syscall each time, and every check asked twice
        self.loop = asyncio.get_running_loop()
        self.throttled = 0  # checks that waited since the last `scheduler.throttled` line
        self.logged_at = -THROTTLE_LOG_S
        self.skipped = dict.fromkeys(SKIPPED, 0)  # slots skipped since start, by reason (metrics)
        self.behind_logged_at = -THROTTLE_LOG_S
        self.behind_since_log = [0, 0.0]  # slots skipped since the last `scheduler.behind` line; the most late, s
        self._draining = False

    def start(self, key: Hashable, delay: float, job: Job, skew: float = 0.0) -> None:
        """(Re)start a service's timer; a run of it in flight is cancelled."""
        self.stop(key)
        e = self.entries[key] = _Entry(self, key, job, skew, self.loop.time() + delay)
        self._push(e)

    def stop(self, key: Hashable) -> None:
        e = self.entries.pop(key, None)
        if e is None:
            return
        e.live = False
        if e.running:
            e.running = False
            self.running -= 1
            cancel, e.cancel = e.cancel, None
            if cancel is not None:
                cancel()
            self._drain()

    async def close(self) -> None:
        for key in list(self.entries):
            self.stop(key)
        self.queue.clear()
        if self.timer is not None:
            self.timer.cancel()
            self.timer, self.timer_at = None, float("inf")
        if self.sweeper is not None:
            self.sweeper.cancel()
            self.sweeper = None
        if self.tasks:
            _, pending = await asyncio.wait(self.tasks, timeout=CLOSE_WAIT_S)
            if pending:  # a probe that swallows its cancellation must not hold the shutdown
                self.log.warning("scheduler.runs_abandoned", count=len(pending),
                                 action="left running: they ignored their cancellation")

    def set_maxprocs(self, maxprocs: int) -> None:
        self.maxprocs = maxprocs
        self._drain()

    def in_task(self, coro: Coroutine[Any, Any, T], done: Callable[[T | BaseException], None],
                limit: float | None = None, abandon: Callable[[], T] | None = None) -> Cancel:
        """Run the part of a job that awaits: `done` gets the coroutine's result or the
        exception it raised (not a cancellation: a cancelled run is over). Past `limit`
        seconds a run still going (it swallowed the cancellation its own timeout sent) is
        abandoned: cancelled once more and left to itself, and `done` gets `abandon()`, so
        the service's schedule goes on."""
        task = self.loop.create_task(coro)
        self.tasks.add(task)

        def ended(t: asyncio.Task[T]) -> None:
            self.tasks.discard(t)
            self.limits.pop(t, None)
            if t in self.abandoned:
                self.abandoned.discard(t)
                return
            if not t.cancelled():
                done(t.exception() or t.result())

        task.add_done_callback(ended)
        if limit is not None and abandon is not None:
            self.limits[task] = (self.loop.time() + limit, abandon, done)  # type: ignore[assignment]
            if self.sweeper is None:
                self.sweeper = self.loop.call_later(SWEEP_S, self._sweep)
        return task.cancel

    def _sweep(self) -> None:
        self.sweeper = None
        now = self.loop.time()
        for task, (deadline, abandon, done) in list(self.limits.items()):
            if deadline <= now and not task.done():
                del self.limits[task]
                self.tasks.discard(task)
                self.abandoned.add(task)
                task.cancel()
                done(abandon())
        if self.limits:
            self.sweeper = self.loop.call_later(SWEEP_S, self._sweep)

    # -- the timer ------------------------------------------------------------------

    def _push(self, e: _Entry) -> None:
        heapq.heappush(self.heap, (e.due, next(self.seq), e))
        if e.due < self.timer_at:  # else the timer armed already wakes no later than its slot: no call per check
            self._arm()

    def _arm(self) -> None:
        if not self.heap:
            return
        n = len(self.entries)
        tick = TICK_S * 4 if n < SPARSE else TICK_S if n < DENSE else TICK_S / 4
        at = -(-self.heap[0][0] // tick) * tick
        if at < self.timer_at:
            if self.timer is not None:
                self.timer.cancel()
            self.timer_at = at
            self.timer = self.loop.call_at(at, self._tick)

    def _tick(self) -> None:
        self.timer, self.timer_at = None, float("inf")
        now = self.loop.time()
        heap = self.heap
        started = 0
        while heap and heap[0][0] <= now:
            if started == BATCH:  # the rest in the next pass, after the I/O that is ready
                if self.timer is not None:  # armed by a check that finished at once
                    self.timer.cancel()
                self.timer, self.timer_at = self.loop.call_soon(self._tick), now  # type: ignore[assignment]
                return
            e = heapq.heappop(heap)[2]
            if not e.live:
                continue
            if e.step and now - e.due >= e.step:
                self._skip(e, now)
                continue
            started += 1
            if self.maxprocs and self.running >= self.maxprocs:
                self._throttle(e, now)
            else:
                self._run(e, now)
        self._arm()

    def behind(self) -> float:
        """How late the most overdue check is now (0: none is due); for the metrics."""
        while self.heap and not self.heap[0][2].live:
            heapq.heappop(self.heap)
        return max(self.loop.time() - self.heap[0][0], 0.0) if self.heap else 0.0

    def _skip(self, e: _Entry, now: float) -> None:
        """`e`'s whole interval passed before it could start: on to its next slot, phase
        kept; counted, and said once per THROTTLE_LOG_S (not per check: an overloaded
        daemon must not also write a line per check)."""
        late = now - e.due
        slots = int(-(-late // e.step))  # the one due and those that passed since
        e.due += slots * e.step
        heapq.heappush(self.heap, (e.due, next(self.seq), e))
        self.skipped["late"] += slots
        pending = self.behind_since_log
        pending[0] += slots
        pending[1] = max(pending[1], late)
        if now - self.behind_logged_at >= THROTTLE_LOG_S:
            self.behind_logged_at = now
            self.log.warning("scheduler.behind", skipped=pending[0], late_s=round(pending[1], 3),
                             skipped_total=self.skipped["late"],
                             action="checks not started within their interval skipped to their next slot")
            pending[:] = [0, 0.0]

    def _throttle(self, e: _Entry, now: float) -> None:
        self.queue.append(e)
        self.throttled += 1
        if now - self.logged_at >= THROTTLE_LOG_S:
            self.logged_at = now
            self.log.warning("scheduler.throttled", service=":".join(map(str, e.key)) if isinstance(e.key, tuple)
                             else str(e.key), queued=len(self.queue), waited=self.throttled)
            self.throttled = 0

    def _run(self, e: _Entry, now: float) -> None:
        e.running = True
        self.running += 1
        cancel = e.job(e.key, now - e.due, e)
        if e.running:  # not finished at once (a skipped check)
            e.cancel = cancel

    def _finished(self, e: _Entry, interval: float) -> None:
        if not e.running:
            return  # stopped or replaced while it ran
        e.running = False
        e.cancel = None
        self.running -= 1
        if e.live:
            step = e.step = max(interval + (self.rng.uniform(-e.skew, e.skew) if e.skew else 0.0), 0.001)
            e.due += step
            late = self.loop.time() - e.due
            if late > 0:  # the run went on past its next slot: skip the slots that passed, keep the phase
                slots = -(-late // step)
                e.due += slots * step
                self.skipped["running"] += int(slots)  # counted, not logged (the module's docstring)
            self._push(e)
        if self.queue:
            self._drain()

    def _drain(self) -> None:
        """Start queued checks while there are free slots (a loop, not recursion: a
        check that finishes at once frees its slot inside `_run`)."""
        if self._draining:
            return
        self._draining = True
        try:
            now = self.loop.time()
            while self.queue and (not self.maxprocs or self.running < self.maxprocs):
                e = self.queue.popleft()
                if e.live:
                    self._run(e, now)
        finally:
            self._draining = False
