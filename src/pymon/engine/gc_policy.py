"""When the cyclic garbage collector runs. It finds nothing in the daemon but walks every
object young enough, and each check's results live one interval: with the default
thresholds, collections came several times a second and stalled the starts of checks
(docs/performance.md). So full collections come only from `freeze`, FREEZE_S apart; once
a second, after a check, the young objects are frozen without a collection (gc.freeze
splices a list and resets the young count), so a young collection comes only when
GC_THRESHOLDS[0] objects pile up within one second. Garbage cycles frozen meanwhile wait
for the next full collection. Frozen objects are still freed by reference counting."""

from __future__ import annotations

import asyncio
import gc
import time

FREEZE_S = 60.0  # the one full garbage collection (`freeze`) comes this often
GC_THRESHOLDS = (50_000, 20, 1_000_000)
YOUNG_FREEZE_S = 1.0


class GcPolicy:
    """The engine calls `young` after a check when YOUNG_FREEZE_S have passed (it reads
    `young_at` itself: no call per check); the wiring calls `freeze` at start and when
    the first round is done, and `start` for the full collection every FREEZE_S."""

    def __init__(self) -> None:
        self.young_at = 0.0  # when the young generation was last frozen (time.time())
        self.young_every = YOUNG_FREEZE_S
        self.frozen_at = time.monotonic()
        self.timer: asyncio.TimerHandle | None = None

    def young(self, now: float) -> None:
        self.young_at = now
        gc.freeze()

    def freeze(self) -> None:
        """The one full collection: thaw what the young freezes held, collect, freeze what
        survives. It walks every object of the daemon, so it comes once a minute instead
        of a young collection every second."""
        gc.set_threshold(*GC_THRESHOLDS)
        gc.unfreeze()  # what the young freezes held since the last time
        gc.collect()
        gc.freeze()
        self.frozen_at = time.monotonic()

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """A full collection FREEZE_S after the last one, for good (until `stop`)."""
        self.timer = loop.call_at(loop.time() + max(self.frozen_at + FREEZE_S - time.monotonic(), 0.0), self._due,
                                  loop)

    def _due(self, loop: asyncio.AbstractEventLoop) -> None:
        self.freeze()
        self.start(loop)

    def stop(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
