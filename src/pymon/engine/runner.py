"""The engine's one path for a check: the scheduler's job starts it (checks.py), its end
goes through mon's rules (rules.py), and what changed leaves through hooks the wiring
installs: the operator's state (disabled hosts, downtime log, persistence), metrics,
the garbage-collection policy, IPVS and the alerts. Nothing here imports what is
below the engine; the hooks are the Protocols below."""

from __future__ import annotations

import time
from operator import attrgetter
from typing import Any, Callable, Protocol

from pymon.engine.checks import Check, Deadlines, start_check
from pymon.engine.gc_policy import GcPolicy
from pymon.engine.plugin_loading import Plugins
from pymon.engine.rules import Fire, Changes, HostChange, ServiceState
from pymon.engine.scheduler import Finish, Scheduler
from pymon.model.config import Config, ServiceSpec
from pymon.plugin import Cancel, Result

CHECK_DONE_PER_S = 100.0  # `check.done` lines a second at most (a token bucket); `check.sampled` counts the rest
SAMPLED_EVERY_S = 60.0
_CONSEC_FAIL = attrgetter("consec_fail")


def interval(st: ServiceState) -> float:
    """Seconds to a service's next check: the one place this is decided. A failing
    service waits `failure_interval` when it has one; a trap-only one wakes by its
    `traptimeout` to notice silence."""
    svc = st.spec
    if svc.passive and svc.traptimeout:
        return min(svc.interval, svc.traptimeout)
    if st.status == "fail" and svc.failure_interval:
        return svc.failure_interval
    return svc.interval


class Operator(Protocol):
    """The operator's state as each check meets it (ops/control.py)."""

    def finishing(self, key: tuple[str, str], finish: Finish) -> Finish:
        """`finish`, or one that also tells who waits for this service's check."""

    def to_run(self, svc: ServiceSpec) -> ServiceSpec | None:
        """The spec with disabled hosts left out; None when there is nothing to probe."""

    def idle(self, st: ServiceState, now: float) -> None:
        """A check with nothing to probe (a trap-only service's silence check)."""

    def record(self, st: ServiceState, now: float, results: dict[str, Result], out: Changes, old_status: str,
               old_first: float, old_summary: str, counting: bool) -> None:
        """After the rules: the downtime log and when to save."""


class CheckObserver(Protocol):
    """Told of every check (metrics)."""

    def check(self, spec: ServiceSpec, results: dict[str, Result], duration: float, lag: float) -> None: ...


class _Sampler:
    """Token bucket for per-check debug logs: a handful of services log every check; at
    thousands of checks a second the lines (and their JSON rendering) would cost more
    than the checks. State changes (`host.state`, `service.state`) are never sampled."""

    def __init__(self, rate: float):
        self.rate, self.tokens, self.t = rate, rate, time.monotonic()
        self.left_out, self.report_at = 0, self.t + SAMPLED_EVERY_S

    def allow(self, now: float) -> bool:
        self.tokens = min(self.rate, self.tokens + (now - self.t) * self.rate)
        self.t = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        self.left_out += 1
        return False

    def report(self, now: float) -> int:
        """How many were left out since the last report, once every SAMPLED_EVERY_S (else 0)."""
        if now < self.report_at:
            return 0
        self.report_at = now + SAMPLED_EVERY_S
        n, self.left_out = self.left_out, 0
        return n


class _Checked:
    """A check's end: `Runner._checked` with what the check started with. Slots, not a
    partial: the young garbage collection walks every check in flight (docs/performance.md)."""

    __slots__ = ("r", "st", "key", "dep_ok", "start", "lag", "finish")

    def __init__(self, r: "Runner", st: ServiceState, key: tuple[str, str], dep_ok: bool, start: float, lag: float,
                 finish: Finish):
        self.r, self.st, self.key, self.dep_ok, self.start, self.lag, self.finish = r, st, key, dep_ok, start, lag, finish

    def __call__(self, check: Check | BaseException) -> None:
        self.r._checked(self.st, self.key, self.dep_ok, self.start, self.lag, self.finish, check)


def _nothing() -> None:
    return None


class Runner:
    """The checks of the running config. `states` is shared with the wiring, which
    replaces `cfg` and `plugins` on reload and installs the hooks."""

    def __init__(self, log: Any, states: dict[tuple[str, str], ServiceState], sched: Scheduler,
                 deadlines: Deadlines, gc_policy: GcPolicy, operator: Operator):
        self.log = log
        self.states = states
        self.sched, self.deadlines, self.gc, self.operator = sched, deadlines, gc_policy, operator
        self.cfg: Config | None = None
        self.plugins: Plugins | None = None
        self.metrics: CheckObserver | None = None
        self.fire: Callable[[ServiceState, list[Fire], float], None] = lambda st, fires, now: None
        self.hosts_changed: Callable[[], None] = _nothing  # IPVS: health changed
        # the director's self-check (ops/director_canaries.py): which hosts flipped, only when some did
        self.host_transitions: Callable[[ServiceState, list[HostChange], float], None] | None = None
        self.done_log = _Sampler(CHECK_DONE_PER_S)
        enabled = getattr(log, "is_enabled_for", None)
        self.debug = enabled(10) if enabled else True  # skip building check.result fields when filtered

    def schedule(self, svc: ServiceSpec, delay: float) -> None:
        self.sched.start(svc.key, delay, self.job, svc.randskew)

    def dep_ok(self, svc: ServiceSpec) -> bool:
        return not svc.depend or all(self.states[d].status != "fail" for d in svc.depend if d in self.states)

    def job(self, key: tuple[str, str], lag: float, finish: Finish) -> Cancel | None:
        """The scheduler's job: start one check of a service; when it is over, act on it
        and `finish(seconds to the next)`. Returns how to cancel the check in flight."""
        st = self.states[key]
        svc = st.spec
        finish = self.operator.finishing(key, finish)
        try:
            assert self.cfg is not None and self.plugins is not None
            now = time.time()
            if svc.exclude_period is not None and svc.exclude_period.contains(now):
                self.log.debug("check.skipped", group=svc.group, service=svc.name, reason="exclude_period")
                return finish(interval(st))
            dep_ok = self.dep_ok(svc)
            if not dep_ok and svc.dep_behavior == "m":
                self.log.info("check.skipped", group=svc.group, service=svc.name, reason="dependency failing")
                return finish(interval(st))
            to_run = self.operator.to_run(svc)  # disabled hosts left out; None: trap-only or all disabled
            if to_run is None:
                self.operator.idle(st, now)
                return finish(interval(st))
            start = time.monotonic()
            return start_check(self.cfg, self.plugins, to_run, st, _Checked(self, st, key, dep_ok, start, lag, finish),
                               self.sched.in_task, self.deadlines)
        except Exception as e:  # noqa: BLE001 - a bug must not silently end a service's timer
            self._crashed(svc, e)
            return finish(interval(st))

    def _checked(self, st: ServiceState, key: tuple[str, str], dep_ok: bool, start: float, lag: float,
                 finish: Finish, check: Check | BaseException) -> None:
        svc = st.spec
        try:
            if isinstance(check, BaseException):
                raise check
            if st is not self.states.get(key):
                return finish(interval(st))  # removed by a reload while it ran
            now = time.time()
            if self.debug:
                for host, res in check.results.items():
                    self.log.debug("check.result", group=svc.group, service=svc.name, host=host, ok=res.ok,
                                   summary=res.summary, latency_s=round(res.latency_s, 4))
            mono = time.monotonic()
            duration = mono - start
            out = self.observe(st, now, check.results, check.output, check.retval, dep_ok, duration, lag)
            if self.debug:  # check.done is debug: at info its fields are not even built
                if self.done_log.allow(mono):
                    self.log.debug("check.done", group=svc.group, service=svc.name, ok=st.status == "ok",
                                   failing=st.failing_hosts, duration_s=round(duration, 4), lag_s=round(lag, 4))
                if left_out := self.done_log.report(mono):
                    self.log.debug("check.sampled", left_out=left_out, per_s=CHECK_DONE_PER_S)
            self.act(st, out, now)
        except Exception as e:  # noqa: BLE001
            self._crashed(svc, e)
        finish(interval(st))

    def _crashed(self, svc: ServiceSpec, e: Exception) -> None:
        self.log.exception("check.crashed", group=svc.group, service=svc.name, error=f"{type(e).__name__}: {e}")

    def observe(self, st: ServiceState, now: float, results: dict[str, Result], output: str | None,
                retval: int | None, dep_ok: bool, duration: float = 0.0, lag: float = 0.0) -> Changes:
        """The rules on one check's results, then the operator's record and metrics."""
        old_status, old_first, old_summary = st.status, st.first_failure, st.last_summary
        counting = any(map(_CONSEC_FAIL, st.hosts.values()))  # map, not a generator: no Python frame per host
        out = st.observe(now, results, output, retval, dep_ok)
        self.operator.record(st, now, results, out, old_status, old_first, old_summary, counting)
        if self.metrics is not None:
            self.metrics.check(st.spec, results, duration, lag)
        if not 0.0 <= now - self.gc.young_at < self.gc.young_every:  # (a clock step either way freezes too)
            self.gc.young(now)
        return out

    def passive(self, st: ServiceState, now: float, results: dict[str, Result], output: str | None,
                retval: int) -> None:
        """Results that came without a check (a trap, a trap's silence)."""
        self.act(st, self.observe(st, now, results, output, retval, self.dep_ok(st.spec)), now)

    def act(self, st: ServiceState, out: Changes, now: float) -> None:
        """Log the transitions of one observation, tell IPVS, fire the alerts."""
        if not (out.hosts or out.status_changed or out.fires or out.agents):
            return
        fields = dict(group=st.spec.group, service=st.spec.name)
        for ch in out.hosts:
            # a real server going down is a warning (journalctl -p warning); coming back is info
            (self.log.info if ch.up else self.log.warning)(
                "host.state", **fields, host=ch.host, state="up" if ch.up else "down", summary=ch.result.summary)
        for host in out.agents:
            rep = st.hosts[host].agent
            assert rep is not None
            self.log.info("host.agent", **fields, host=host, weight=rep.weight, state=rep.state)
        if out.hosts and self.host_transitions is not None:  # before IPVS hears: a burst freezes it first
            self.host_transitions(st, out.hosts, now)
        if out.hosts or out.agents:
            self.hosts_changed()
        if out.status_changed:
            (self.log.warning if st.status == "fail" else self.log.info)(
                "service.state", **fields, state=st.status, summary=st.last_summary if st.status == "fail" else "")
        self.fire(st, out.fires, now)
