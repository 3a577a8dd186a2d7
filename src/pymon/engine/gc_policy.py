"""When the cyclic garbage collector runs. It finds nothing in the daemon but walks every
object young enough, and each check's results live one interval: with the default
thresholds, collections came several times a second and stalled the starts of checks
(docs/performance.md). So once a second, after a check, the young objects are frozen
without a collection (gc.freeze splices a list and resets the young count), and a young
collection comes only when GC_THRESHOLDS[0] objects pile up within one second.

A full collection walks every object of the daemon (150-500 ms at 10,000 services, a
pass in which no check starts), so it comes once at start, before any check is due, and
later only when the frozen objects grew by GROWTH (and at least GROWTH_MIN) since the
last one or since the daemon's long-lived objects were frozen (`freeze`, at start and
after the first round), looked at every FREEZE_S: garbage cycles frozen meanwhile are growth, and wait
for it; a daemon whose objects keep their number has nothing to collect. Frozen objects
are still freed by reference counting."""

from __future__ import annotations

import asyncio
import gc
import time

FREEZE_S = 60.0  # how often the growth of the frozen objects is looked at
GROWTH = 0.1  # a full collection when the frozen objects grew by this fraction since the last one ...
GROWTH_MIN = 20_000  # ... and by at least this many
GC_THRESHOLDS = (50_000, 20, 1_000_000)
YOUNG_FREEZE_S = 1.0


class GcPolicy:
    """The engine calls `young` after a check when YOUNG_FREEZE_S have passed (it reads
    `young_at` itself: no call per check); the wiring calls `collect` at start before
    scheduling, `freeze` when the first round is done, and `start` for the growth check
    every FREEZE_S."""

    def __init__(self) -> None:
        self.young_at = 0.0  # when the young generation was last frozen (time.time())
        self.young_every = YOUNG_FREEZE_S
        self.frozen_at = time.monotonic()  # the last full collection
        self.baseline = 0  # objects frozen right after it
        self.timer: asyncio.TimerHandle | None = None

    def young(self, now: float) -> None:
        self.young_at = now
        gc.freeze()

    def freeze(self) -> None:
        """Freeze what is young without collecting it: the wiring's long-lived objects
        (states, timers, the first round's results and counts). Growth counts from here:
        measured from the collection at start, before the states existed, it was 200,000
        objects at 10,000 services, and the first look collected for nothing."""
        gc.freeze()
        self.baseline = gc.get_freeze_count()

    def collect(self) -> None:
        """A full collection: thaw what the young freezes held, collect, freeze what
        survives. It walks every object of the daemon."""
        gc.set_threshold(*GC_THRESHOLDS)
        gc.unfreeze()  # what the young freezes held since the last time
        gc.collect()
        gc.freeze()
        self.frozen_at = time.monotonic()
        self.baseline = gc.get_freeze_count()

    def grown(self) -> bool:
        """The frozen objects grew enough since the last full collection to look for garbage."""
        return gc.get_freeze_count() - self.baseline >= max(GROWTH_MIN, self.baseline * GROWTH)

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Look at the growth every FREEZE_S, for good (until `stop`)."""
        self.timer = loop.call_later(FREEZE_S, self._due, loop)

    def _due(self, loop: asyncio.AbstractEventLoop) -> None:
        if self.grown():
            self.collect()
        self.start(loop)

    def stop(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
