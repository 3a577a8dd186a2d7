"""Is it me or them: the pure decision whether a burst of real-server failures is the
director's own fault (its link, VLAN or route toward the servers) rather than theirs.

When the director loses its path to the real servers, every check fails and the IPVS
owner would empty every pool: the outage pymon exists to prevent. This detector
watches the down/up transitions of (group, service, host) that the engine already
emits (nothing per check), and when a large share of the known hosts went down within
one round (`window` seconds: the asyncio schedule has no global round, so a sliding
window as long as the slowest service takes to mark a host down stands for one), it
asks for the director's canaries to be probed (default gateway, configured addresses,
link carrier toward the real servers). Any canary failing is the director's fault.

States: `ok` (normal depools), `suspect` (a burst: the table is frozen while the
canaries are probed, so no depool slips through during the probe), `fault` (frozen,
the canaries re-probed every `recheck` seconds; the hosts that went down in the burst
are held as up, so those depooled before the share was reached come back),
`recovering` (canaries back: the `director` upalert and the track file are cleared at
once, the table stays frozen for one more `window` so the checks can see the servers
again before the owner reconciles to real health; else every server still marked down
from the outage would be removed).

No I/O and no clock: every call takes `now` (ops/director_canaries.py does the I/O).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Literal

State = Literal["ok", "suspect", "fault", "recovering"]
Key = tuple[str, str, str]  # (group, service, host)
Action = Literal["none", "probe", "fault", "recovered", "them", "unfreeze"]


@dataclass(frozen=True)
class Settings:
    share: float = 0.5  # of the known hosts that went down within `window`
    min_hosts: int = 4  # fewer known hosts: no verdict (one of two servers down is half)
    window: float = 10.0  # one round: how long the slowest service takes to mark a host down
    recheck: float = 2.0  # seconds between canary probes while in fault


@dataclass
class Detector:
    """The decision; `frozen` tells the IPVS owner to remove nothing."""

    settings: Settings = field(default_factory=Settings)
    state: State = "ok"
    known: dict[Key, bool] = field(default_factory=dict)  # last state of every host seen
    downs: deque[tuple[float, Key]] = field(default_factory=deque)  # down transitions in the window
    since: float = 0.0  # when the state began
    canaries: dict[str, bool] = field(default_factory=dict)  # the last probe's results
    burst: tuple[int, int] = (0, 0)  # (went down, known) when the last burst was seen
    held: set[Key] = field(default_factory=set)  # went down in the burst the director caused

    @property
    def frozen(self) -> bool:
        return self.state != "ok"

    @property
    def faulty(self) -> bool:
        """The director is at fault (the alert is raised, the track file says so)."""
        return self.state == "fault"

    def transition(self, now: float, key: Key, up: bool) -> Action:
        """One host's change of state. `probe` when a burst begins: the caller probes
        the canaries and reports with `probed` (the table is frozen from now)."""
        self.known[key] = up
        if not up:
            self.downs.append((now, key))
        self._expire(now)
        if self.state != "ok":
            return "none"
        down, total = self.went_down(), len(self.known)
        if total >= self.settings.min_hosts and down >= self.settings.share * total and down > 0:
            self.state, self.since, self.burst = "suspect", now, (down, total)
            return "probe"
        return "none"

    def holds(self, key: Key) -> bool:
        """While frozen at fault: a host whose going down was the director's, taken as up
        (the table as it was before the burst, also for hosts depooled early in it)."""
        return key in self.held

    def went_down(self) -> int:
        """Hosts that went down within the window and are still down."""
        return len({k for _, k in self.downs if self.known.get(k) is False})

    def _expire(self, now: float) -> None:
        horizon = now - self.settings.window
        while self.downs and self.downs[0][0] < horizon:
            self.downs.popleft()

    def probed(self, now: float, results: dict[str, bool]) -> Action:
        """The canaries' results (name -> answered). Any failing canary: the director."""
        self.canaries = dict(results)
        bad = not all(results.values())
        if self.state == "suspect":
            if bad:
                self.state, self.since = "fault", now
                # the burst's first hosts may have been depooled before the share was reached
                self.held = {k for _, k in self.downs if self.known.get(k) is False}
                return "fault"
            self.state, self.since = "ok", now
            self.downs.clear()  # this burst is theirs: only a new one probes again
            return "them"
        if self.state == "fault" and not bad:
            self.state, self.since = "recovering", now
            return "recovered"
        if self.state == "recovering" and bad:
            self.state, self.since = "fault", now
            return "fault"
        return "none"

    def tick(self, now: float) -> Action:
        """Time passing: a recovering director unfreezes after one more window."""
        self._expire(now)
        if self.state == "recovering" and now - self.since >= self.settings.window:
            self.state, self.since = "ok", now
            self.held = set()
            self.downs.clear()  # the outage's downs were the director's: not a new burst
            return "unfreeze"
        return "none"

    def next_wake(self, now: float) -> float | None:
        """Seconds until the caller should act again (`tick` or a re-probe), None: on a transition."""
        if self.state == "fault":
            return self.settings.recheck
        if self.state == "recovering":
            return min(self.settings.recheck, max(0.0, self.since + self.settings.window - now))
        return None

    def retain(self, keys: set[Key]) -> None:
        """After a reload: forget hosts no longer checked (they would skew the share)."""
        self.known = {k: v for k, v in self.known.items() if k in keys}
        self.downs = deque((t, k) for t, k in self.downs if k in keys)
