"""Readiness for systemd (notify.py): READY=1 once every service has had its first check
and IPVS has been reconciled with that health; STATUS= when it changes, WATCHDOG=1 from
the event loop itself, RELOADING=1 … READY=1 around a reload, STOPPING=1."""

from __future__ import annotations

import asyncio
import time
from typing import Any, Awaitable, Callable

from pymon.engine.scheduler import Finish
from pymon.ops import notify


class _After:
    """A check's `finish` that also tells `Readiness.checked` (slots: see runner.py)."""

    __slots__ = ("r", "key", "finish")

    def __init__(self, r: "Readiness", key: tuple[str, str], finish: Finish):
        self.r, self.key, self.finish = r, key, finish

    def __call__(self, interval: float) -> None:
        self.finish(interval)
        self.r.checked(self.key)


class Readiness:
    """`first_round` is what must happen before READY=1 (IPVS reconciled with the first
    health, the full garbage collection): the wiring passes it in, as `status` (the
    STATUS= line) and the services (`states`, shared)."""

    def __init__(self, log: Any, states: dict[tuple[str, str], Any], status: Callable[[], str],
                 first_round: Callable[[], Awaitable[None]]):
        self.log, self.states, self.status, self.first_round = log, states, status, first_round
        self.notifier = notify.Notifier.from_env(log)
        self.ready = False
        self.pending: set[tuple[str, str]] | None = None  # services still to check once before READY
        self.waiters: dict[tuple[str, str], list[asyncio.Future[None]]] = {}  # test-now callers
        self.tasks: list[asyncio.Task[Any]] = []
        self.spawned: set[asyncio.Task[Any]] = set()  # one-off tasks, referenced until done
        self.last_status = ""

    def start(self, active: set[tuple[str, str]]) -> None:
        """The services to check once before READY (not the passive ones)."""
        self.pending = active
        wd = self.notifier.watchdog_interval()
        if wd:
            self.tasks.append(asyncio.get_running_loop().create_task(self._watchdog(wd)))

    def serving(self) -> None:
        """Once the API listens: with nothing to check first (all passive), ready now."""
        if not self.pending:
            self._spawn(self._become_ready())

    async def stop(self) -> None:
        for t in self.tasks:
            t.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        self.tasks.clear()

    def stopping(self) -> None:
        self.notifier.send("STOPPING=1")

    def reloading(self) -> None:
        self.notifier.send("RELOADING=1", f"MONOTONIC_USEC={time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}")

    def reloaded(self, services: set[tuple[str, str]]) -> None:
        for key in [k for k in self.waiters if k not in services]:  # removed: no check of it will end
            for fut in self.waiters.pop(key):
                if not fut.done():
                    fut.set_result(None)
        if self.pending is not None:
            self.pending &= services
            if not self.pending:
                self.pending = None
                self._spawn(self._become_ready())
        self.notifier.send("READY=1", f"STATUS={self.status()}")

    # -- the engine's hook on every check ---------------------------------------------

    def finishing(self, key: tuple[str, str], finish: Finish) -> Finish:
        """`finish` itself once ready with nobody waiting: every check from then on
        skips this bookkeeping."""
        if self.waiters or self.pending is not None:
            return _After(self, key, finish)
        return finish

    def checked(self, key: tuple[str, str]) -> None:
        for fut in self.waiters.pop(key, []):  # asked before this check started: each asking restarts it
            if not fut.done():
                fut.set_result(None)
        if self.pending is not None and key in self.pending:
            self.pending.discard(key)
            if not self.pending:
                self.pending = None
                self._spawn(self._become_ready())

    def wait(self, key: tuple[str, str]) -> asyncio.Future[None]:
        """Resolved when the service's next check ends."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.waiters.setdefault(key, []).append(fut)
        return fut

    # -- systemd ------------------------------------------------------------------------

    def _spawn(self, coro: Any) -> None:
        """A one-off task, kept referenced until it is done (the loop holds tasks weakly)."""
        task = asyncio.get_running_loop().create_task(coro)
        self.spawned.add(task)
        task.add_done_callback(self.spawned.discard)

    async def _watchdog(self, interval: float) -> None:
        """WATCHDOG=1 from the event loop itself: a loop that hangs stops the pings."""
        while True:
            self.notifier.send("WATCHDOG=1")
            await asyncio.sleep(interval)

    async def _become_ready(self) -> None:
        if self.ready:
            return
        await self.first_round()
        self.ready = True
        line = self.status()
        self.notifier.send("READY=1", f"STATUS={line}")
        self.log.info("daemon.ready", services=len(self.states), status=line)

    def send_status(self) -> None:
        line = self.status()
        if line != self.last_status:
            self.last_status = line
            self.notifier.send(f"STATUS={line}")
