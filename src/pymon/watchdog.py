"""Naming the plugin that blocks the event loop.

A probe or alert that calls something blocking (`time.sleep`, a synchronous DB
driver, a slow DNS lookup through `socket.gethostbyname`) stalls every check of every
service, not just its own. The scheduler's timeouts cannot catch that: a timeout is a
callback, and callbacks do not run while the loop is blocked. So:

- `labelled(coro, running)` wraps a plugin call (checks.py and alerting.py do it for
  every native probe and alert): while the plugin's own code executes a step on the
  loop thread, `CURRENT[0]` says which plugin it is; between steps it is cleared.
- `Watchdog` keeps a heartbeat callback on the loop (every `tick` s) and a daemon
  thread that looks at it. When the heartbeat is late, the thread notes what was
  running at that moment (the label, else the innermost frame of the loop thread).
  When the loop gets going again, the heartbeat measures how late it was and, if that
  is at least `bound` (globals.block_warning, default 1 s), logs a `loop.blocked`
  warning with `blocked_s` and the plugin (`kind`, `plugin`, `group`, `service`) or
  `where` (file:line function). A block still going on after `stall_after` seconds is
  logged from the thread as `loop.stalled` (the loop itself cannot log then).

The measured duration is the heartbeat's lateness: between the real block's length
minus `tick` and its length. `tick` is a quarter of `bound`: finer beats cost wake-ups
(an idle daemon's CPU was half heartbeats at 0.1 s) and measure blocks nobody reports.
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


@dataclass(frozen=True)
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


class Watchdog:
    def __init__(self, log: Any, bound: float = 1.0, tick: float | None = None,
                 stall_after: float | None = None) -> None:
        self.log = log
        self.bound = bound
        self.tick = tick if tick is not None else bound / 4
        self.stall_after = stall_after if stall_after is not None else max(10.0, 5 * bound)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._handle: asyncio.TimerHandle | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._last = 0.0  # monotonic time of the last heartbeat
        self._tid = 0
        self._seen: tuple[float, dict[str, Any]] | None = None  # (heartbeat it was late after, culprit)
        self._stalled = False

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._tid = threading.get_ident()
        self._last = time.monotonic()
        self._handle = self._loop.call_later(self.tick, self._beat)
        self._stop.clear()
        self._thread = threading.Thread(target=self._watch, name="pymon-watchdog", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        if self._thread is not None:
            self._thread.join(2)
            self._thread = None

    # -- on the loop --------------------------------------------------------------

    def _beat(self) -> None:
        now = time.monotonic()
        late = now - self._last - self.tick
        seen, self._seen, self._stalled = self._seen, None, False
        culprit = seen[1] if seen is not None and seen[0] == self._last else {"where": None}
        self._last = now
        assert self._loop is not None
        self._handle = self._loop.call_later(self.tick, self._beat)
        if late >= self.bound:
            self.log.warning("loop.blocked", blocked_s=round(late, 3), bound_s=self.bound, **culprit)

    # -- on the watchdog thread -----------------------------------------------------

    def _watch(self) -> None:
        wait = self.tick
        while not self._stop.wait(wait):
            last = self._last
            late = time.monotonic() - last - self.tick
            if late < self.tick:
                wait = self.tick - late  # until the next beat is a tick late: one wake-up per beat
                continue
            wait = self.tick / 2  # blocked: look again soon (a stall is logged from here)
            seen = self._seen
            if seen is None or seen[0] != last:
                seen = self._seen = (last, self._culprit())
            if late >= self.stall_after and not self._stalled:
                self._stalled = True
                self.log.warning("loop.stalled", blocked_s=round(late, 3), **seen[1])

    def _culprit(self) -> dict[str, Any]:
        running = CURRENT[0]
        where = _where(sys._current_frames().get(self._tid))
        return {**(running.fields() if running is not None else {}), "where": where}
