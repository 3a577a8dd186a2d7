"""Pooled weight per virtual service over time, for the status page's chart: what the
owner put in each pool (the sum of the wanted weights), one sample per change, not per
reconcile, at most SAMPLES per virtual service. In memory only: a restart starts a
new timeline (the alert history and outages persist, persist.py)."""

from __future__ import annotations

from collections import deque
from typing import Any, Iterable

SAMPLES = 120  # per virtual service: 50 of them keep ~250 KiB at most


class Timeline:
    def __init__(self, samples: int = SAMPLES):
        self.samples = samples
        self.series: dict[str, deque[tuple[float, int]]] = {}  # ipvsadm's spelling -> (time, weight)

    def record(self, table: dict[Any, tuple[Any, dict[Any, Any]]], now: float,
               changed: Iterable[Any] | None = None) -> None:
        """After a reconcile: a sample where a pool's weight changed. `changed`: the only
        services the reconcile can have changed (a health change touching a few of
        thousands), None: all of them, and removed virtual services drop out."""
        seen = set()
        for skey in table if changed is None else changed:
            _, dests = table[skey]
            label = str(skey)
            seen.add(label)
            weight = sum(d.weight for d in dests.values())
            s = self.series.get(label)
            if s is None:
                s = self.series[label] = deque(maxlen=self.samples)
            if not s or s[-1][1] != weight:
                s.append((round(now, 3), weight))
        if changed is None:
            for label in self.series.keys() - seen:
                del self.series[label]

    def json(self) -> dict[str, list[tuple[float, int]]]:
        return {k: list(v) for k, v in sorted(self.series.items())}
