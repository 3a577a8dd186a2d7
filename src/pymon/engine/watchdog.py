"""Naming the plugin that blocks the event loop.

A probe or alert that calls something blocking (`time.sleep`, a synchronous DB
driver, a slow DNS lookup through `socket.gethostbyname`) stalls every check of every
service, not just its own. The scheduler's timeouts cannot catch that: a timeout is a
callback, and callbacks do not run while the loop is blocked. So:

- `labelled(coro, running)` wraps a plugin call (checks.py and alerting.py do it for
  every native probe and alert): while the plugin's own code executes a step on the
  loop thread, `CURRENT[0]` says which plugin it is; between steps it is cleared.
- `Watchdog` times the loop's passes: its selector is wrapped, so the loop says when it
  starts to wait and when it stops. A pass that kept the loop busy for at least
  `bound` (globals.block_warning, default 1 s) is logged as a `loop.blocked` warning
  when it ends, with `blocked_s` (the pass's length) and the plugin (`kind`, `plugin`,
  `group`, `service`) or `where` (file:line function) that a daemon thread saw running
  in it. A pass still going on after `stall_after` seconds is logged from the thread as
  `loop.stalled` (the loop itself cannot log then).

The thread looks every half bound while the loop is busy, and one bound after a look
that found it idle (a pass starting after that look has lasted under a bound at the
next one, and half a bound later it is looked at again): a pass of `bound` always
spans one of its looks at least a quarter of the bound in. Every wake-up of an idle
daemon costs CPU: a heartbeat timer on the loop and a thread woken at each beat, four of
each a second, would be most of an idle daemon's CPU (docs/performance.md).
A loop without a selector to wrap (uvloop) gets that heartbeat instead, every quarter
bound: its passes are the beats, and a pass counts as busy only past the beat's own
length.
"""

from __future__ import annotations

import asyncio
import os
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any, Awaitable, Coroutine, Generator, TypeVar

T = TypeVar("T")


@dataclass(frozen=True, slots=True)  # one per service's monitor (engine/checks.py)
class Running:
    kind: str  # "monitor" or "alert"
    name: str
    group: str
    service: str

    def fields(self) -> dict[str, str]:
        return {"kind": self.kind, "plugin": self.name, "group": self.group, "service": self.service}


# What plugin code the loop thread is executing right now (None: not plugin code).
# A one-element list so the watchdog thread reads it without a lock.
CURRENT: list[Running | None] = [None]


class _Steps:
    """Drive `coro` step by step, with CURRENT[0] set during each step."""

    __slots__ = ("coro", "running")

    def __init__(self, coro: Awaitable[Any], running: Running) -> None:
        self.coro, self.running = coro, running

    def __await__(self) -> Generator[Any, Any, Any]:
        it = self.coro.__await__()
        value: Any = None
        exc: BaseException | None = None
        while True:
            prev = CURRENT[0]
            CURRENT[0] = self.running
            try:
                step = it.send(value) if exc is None else it.throw(exc)
            except StopIteration as stop:
                return stop.value
            finally:
                CURRENT[0] = prev
            value, exc = None, None
            try:
                value = yield step
            except GeneratorExit:
                it.close()
                raise
            except BaseException as e:  # noqa: BLE001 - cancellation and the like go to the plugin
                exc = e


async def labelled(coro: Coroutine[Any, Any, T], running: Running) -> T:
    return await _Steps(coro, running)  # type: ignore[no-any-return]


def _where(frame: Any) -> str | None:
    """The innermost frame that is neither the stdlib's asyncio/selectors nor this module."""
    skip = (os.path.dirname(asyncio.__file__), __file__)
    while frame is not None:
        fn = frame.f_code.co_filename
        if not fn.startswith(skip) and not fn.endswith(("selectors.py", "threading.py")):
            return f"{fn}:{frame.f_lineno} {frame.f_code.co_name}"
        frame = frame.f_back
    return None


class _TimedSelector:
    """The loop's selector, telling the watchdog when the loop waits and when it works."""

    def __init__(self, inner: Any, wd: "Watchdog") -> None:
        self.inner, self.wd = inner, wd

    def select(self, timeout: float | None = None) -> Any:
        self.wd._waiting()
        try:
            return self.inner.select(timeout)
        finally:
            self.wd._working()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class Watchdog:
    def __init__(self, log: Any, bound: float = 1.0, stall_after: float | None = None) -> None:
        self.log = log
        self.bound = bound
        self.stall_after = stall_after if stall_after is not None else max(10.0, 5 * bound)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._selector: _TimedSelector | None = None
        self._handle: asyncio.TimerHandle | None = None  # the heartbeat, without a selector
        self._slack = 0.0  # a pass's expected length: 0, or the heartbeat's period
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._pass = (0, time.monotonic())  # (number, start) of the loop's current pass: one tuple, read whole
        self._idle = True  # the loop is waiting in select
        self._tid = 0
        self._seen: tuple[int, dict[str, Any]] | None = None  # (pass, culprit) noted by the thread
        self._stalled = 0  # the pass logged as stalled

    def start(self) -> None:
        loop = self._loop = asyncio.get_running_loop()
        self._tid = threading.get_ident()
        self._working()
        inner = getattr(loop, "_selector", None)
        if inner is not None:
            self._selector = loop._selector = _TimedSelector(inner, self)  # type: ignore[attr-defined]
            self._slack = 0.0
        else:
            self._slack = self.bound / 4
            self._handle = loop.call_later(self._slack, self._beat)
        self._stop.clear()
        self._thread = threading.Thread(target=self._watch, name="pymon-watchdog", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._selector is not None and self._loop is not None:
            self._loop._selector = self._selector.inner  # type: ignore[attr-defined]
            self._selector = None
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        if self._thread is not None:
            self._thread.join(2)
            self._thread = None

    # -- on the loop --------------------------------------------------------------

    def _waiting(self) -> None:
        """The pass is over: was it long?"""
        n, since = self._pass
        busy = time.monotonic() - since - self._slack
        self._idle = True
        if busy >= self.bound:
            seen = self._seen
            culprit = seen[1] if seen is not None and seen[0] == n else {"where": None}
            self.log.warning("loop.blocked", blocked_s=round(busy, 3), bound_s=self.bound, **culprit)

    def _working(self) -> None:
        self._pass = (self._pass[0] + 1, time.monotonic())
        self._idle = False

    def _beat(self) -> None:
        self._waiting()
        self._working()
        assert self._loop is not None
        self._slack = self.bound / 4  # a reload may have changed the bound
        self._handle = self._loop.call_later(self._slack, self._beat)

    # -- on the watchdog thread -----------------------------------------------------

    def _watch(self) -> None:
        wait = self.bound / 2
        while not self._stop.wait(self._slack or wait):  # per look: a reload may change the bound
            if self._idle:
                wait = self.bound  # see the module's docstring: no pass can reach a bound before then
                continue
            wait = self.bound / 2
            n, since = self._pass
            busy = time.monotonic() - since - self._slack
            if busy < self.bound / 4:
                continue
            seen = self._seen
            if seen is None or seen[0] != n:
                culprit = self._culprit()
                if self._pass[0] != n or self._idle:
                    continue  # the pass ended while we looked: the frame is not its
                seen = self._seen = (n, culprit)
            if busy >= self.stall_after and self._stalled != n:
                self._stalled = n
                self.log.warning("loop.stalled", blocked_s=round(busy, 3), **seen[1])

    def _culprit(self) -> dict[str, Any]:
        running = CURRENT[0]
        where = _where(sys._current_frames().get(self._tid))
        return {**(running.fields() if running is not None else {}), "where": where}
