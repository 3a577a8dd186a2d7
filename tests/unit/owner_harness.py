"""The IPVS owner over the kernel's in-memory twin with a log that records what it says,
for the owner's unit tests (test_lvs.py, test_pool_owner.py)."""

from __future__ import annotations

from typing import Any

from pymon.ipvs.owner import LvsOwner
from pymon.ipvs.table import MemoryTable


class Log:
    """Any level: (event, fields) appended to `events`."""

    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []

    def __getattr__(self, level: str) -> Any:
        return lambda event, **kw: self.events.append((event, kw))

    def is_enabled_for(self, level: int) -> bool:  # as the daemon's logger at --log-level debug
        return True

    def named(self, prefix: str) -> list[tuple[str, dict[str, Any]]]:
        return [(e, kw) for e, kw in self.events if e.startswith(prefix)]


def owner(cfg: Any, mem: MemoryTable, health: dict[str, bool | None], **kw: Any) -> LvsOwner:
    """The owner of cfg's virtual services (not dry run); a host's health is health[host]."""
    return LvsOwner(cfg.ipvs, mem, Log(), False, list(cfg.virtual_services),
                    health=lambda watch, host: health.get(host), **kw)
