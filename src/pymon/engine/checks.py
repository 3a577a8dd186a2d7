"""Running one check of one service: native probes with a hard timeout, or a
legacy monitor script through mon's exec protocol."""

from __future__ import annotations

import asyncio
import bisect
import time
from operator import attrgetter
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Coroutine

from . import legacy
from pymon.model.config import Config, ServiceSpec
from pymon.plugin import LATE_S, Cancel, Monitor, Result, timeout_unless_late
from pymon.engine.plugin_loading import Plugins
from pymon.engine.rules import ServiceState
from .watchdog import CURRENT, Running, labelled


@dataclass(slots=True)  # one per check: no per-instance dict
class Check:
    results: dict[str, Result]
    output: str | None = None  # legacy monitors only: their stdout
    retval: int | None = None


GUARD_GRACE_S = 1.0
ABANDON_S = 2.0  # past the guard: a probe that swallowed the guard's cancellation is abandoned (scheduler.in_task)


def _timeout_result(timeout: float) -> Result:
    return Result(False, f"timeout after {timeout:g}s", latency_s=timeout)


async def _guard(coro: object, timeout: float) -> object:
    """The hard stop for a native probe, GUARD_GRACE_S after its own `timeout`. A probe
    bounds its I/O by `timeout` from when it starts its I/O and says which step ran out
    ("timeout after 1s connecting"); the guard counts from when the check was started, so
    on a busy loop (thousands of checks due at once) it would fail a healthy server for
    time the daemon spent elsewhere. It catches probes that ignore their timeout."""
    try:
        # in this task (wait_for would start a task per probe); seen late, it waits as the probe's own deadline does
        async with timeout_unless_late(timeout, GUARD_GRACE_S):
            return await coro  # type: ignore[misc]
    except TimeoutError:
        return _timeout_result(timeout)
    except asyncio.CancelledError:
        raise
    except Exception as e:  # noqa: BLE001 - a probe that raises costs one failed check
        return Result(False, f"probe error: {type(e).__name__}: {e}")


Done = Callable[[Check | BaseException], None]


def start_check(cfg: Config, plugins: Plugins, svc: ServiceSpec, st: ServiceState, done: Done,
                in_task: Callable[..., Cancel],
                deadlines: "Deadlines") -> Cancel | None:
    """The one contract the engine sees: start one check; `done(check)` exactly once
    (or done(exception) for a bug) unless the returned Cancel is called first. Every
    probe form runs within the service's `timeout` budget, guarded the same way at
    budget + GUARD_GRACE_S from the start: the callback form (`Monitor.start`, no task)
    by `deadlines`, anything else (awaited per host, `many=`, group scope) by `_guard`
    in one task (`in_task`); a legacy script is killed at the budget (legacy.py). A task
    that ignores its cancellation is abandoned ABANDON_S later (`Abandoned`)."""
    found = plugins.monitor(svc.monitor.name)
    if isinstance(found, Monitor) and found.start is not None:
        hosts = cfg.hosts(svc)
        got = _FirstAnswer(found, hosts, done, svc.timeout)
        prev, CURRENT[0] = CURRENT[0], _running(found, svc)  # named by the loop watchdog, as awaited probes are
        try:
            cancel = found.start(svc.targets(hosts), svc.probe_params, got)
        except Exception as e:  # noqa: BLE001 - as a probe that raises: one failed check
            cancel = None
            got([Result(False, f"probe error: {type(e).__name__}: {e}")] * len(hosts))
        finally:
            CURRENT[0] = prev
        if got.calls:
            return None  # over already: nothing to cancel
        if cancel is not None:
            got.cancel = cancel
            deadlines.add(got)
            return got.stop
    return in_task(run_check(cfg, plugins, svc, st), done, svc.timeout + GUARD_GRACE_S + ABANDON_S,
                   Abandoned(svc, cfg))


class Abandoned:
    """What a check that ignored its cancellation counts as: every host failed. Logged
    once per service (a probe that does it once does it every time)."""

    __slots__ = ("svc", "cfg")
    logged: set[tuple[str, str]] = set()
    log: Any = None  # the daemon's logger, set at start

    def __init__(self, svc: ServiceSpec, cfg: Config):
        self.svc, self.cfg = svc, cfg

    def __call__(self) -> Check:
        svc = self.svc
        limit = svc.timeout + GUARD_GRACE_S + ABANDON_S
        if svc.key not in Abandoned.logged and Abandoned.log is not None:
            Abandoned.logged.add(svc.key)
            Abandoned.log.error("check.abandoned", group=svc.group, service=svc.name, monitor=svc.monitor.name,
                                 after_s=limit, action="failed; its task is left to itself (it ignored its "
                                 "cancellation); the schedule goes on")
        bad = Result(False, f"probe ignored its timeout and cancellation: abandoned after {limit:g}s")
        return Check({h: bad for h in self.cfg.hosts(svc)})


class _FirstAnswer:
    """A callback probe's `done`: the results in host order, from its first call (a plugin
    calling back twice), or the budget's timeout from `Deadlines`. An object with slots,
    not a closure: the young garbage collection walks every check in flight
    (docs/performance.md). `done` is dropped once answered, so that an answered check
    still queued in `Deadlines` holds nothing of its service."""

    __slots__ = ("mon", "hosts", "done", "calls", "budget", "deadline", "cancel")

    def __init__(self, mon: Monitor, hosts: list[str], done: Done, budget: float):
        self.mon, self.hosts, self.done, self.calls, self.budget = mon, hosts, done, 0, budget
        self.deadline = 0.0
        self.cancel: Cancel | None = None

    def __call__(self, results: list[Result]) -> None:
        self.calls += 1
        done = self.done
        if self.calls == 1 and done is not None:
            self.done = None
            done(_per_host(self.mon, self.hosts, results))

    def stop(self) -> None:
        """The scheduler's cancel: no answer is wanted any more."""
        self.calls += 1
        self.done = None
        if self.cancel is not None:
            self.cancel()

    def expire(self) -> None:
        """Past budget + grace with no answer: every host failed by timeout; the probe is
        told to stop, and what it says later is dropped."""
        done = self.done
        self.stop()
        if done is not None:
            res = _timeout_result(self.budget)
            done(Check({h: res for h in self.hosts}))


_LATE = -1.0  # the queue of checks given more time (no budget is negative)
_DEADLINE = attrgetter("deadline")


class Deadlines:
    """The guard of callback-form checks in flight: one loop timer for all of them. A
    budget's checks are queued in start order, which is deadline order; an answered check
    is skipped when it reaches the head of its queue (no removal from the middle)."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.loop = loop
        self.queues: dict[float, deque[_FirstAnswer]] = {}
        self.timer: asyncio.TimerHandle | None = None
        self.timer_at = float("inf")

    def add(self, got: _FirstAnswer) -> None:
        got.deadline = at = self.loop.time() + got.budget + GUARD_GRACE_S
        q = self.queues.get(got.budget)
        if q is None:
            q = self.queues[got.budget] = deque()
        q.append(got)
        if at < self.timer_at:
            self._arm(at)

    def _arm(self, at: float) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self.timer, self.timer_at = self.loop.call_at(at, self._expire), at

    def _expire(self) -> None:
        """A check past its guard fails, unless the daemon saw the guard more than LATE_S
        late (not scheduled, stopped, its loop held): then it gets, once, as long again
        (at most its budget), in the queue `_LATE` sorted by the new deadline, so that the
        probe's own deadline, extended the same way, comes first."""
        self.timer, self.timer_at = None, float("inf")
        now = self.loop.time()
        nxt = float("inf")
        for budget in list(self.queues):
            q = self.queues[budget]
            while q and (q[0].calls or q[0].deadline <= now):
                got = q.popleft()
                if got.calls:
                    continue
                late = now - got.deadline
                if budget != _LATE and late > LATE_S:
                    got.deadline = now + min(late, budget) + GUARD_GRACE_S
                    q2 = self.queues.get(_LATE)
                    if q2 is None:
                        q2 = self.queues[_LATE] = deque()
                    bisect.insort(q2, got, key=_DEADLINE)
                else:
                    got.expire()
            if q:
                nxt = min(nxt, q[0].deadline)
            else:
                del self.queues[budget]
        late_q = self.queues.get(_LATE)
        if late_q:
            nxt = min(nxt, late_q[0].deadline)
        if nxt != float("inf"):
            self._arm(nxt)

    def close(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self.timer, self.timer_at = None, float("inf")
        self.queues.clear()


_RUNNING: dict[tuple[str, str, str], Running] = {}


def _running(mon: Monitor, svc: ServiceSpec) -> Running:
    key = (mon.name, svc.group, svc.name)
    found = _RUNNING.get(key)
    if found is None:
        if len(_RUNNING) >= 65536:
            _RUNNING.clear()
        found = _RUNNING[key] = Running("monitor", mon.name, svc.group, svc.name)
    return found


def _per_host(mon: Monitor, hosts: list[str], results: list[object]) -> Check:
    """A host probe's results, in host order, each checked to be a Result."""
    if len(results) != len(hosts):
        bad = Result(False, f"probe error: {mon.name} gave {len(results)} results for {len(hosts)} hosts")
        return Check({h: bad for h in hosts})
    out = dict(zip(hosts, results))  # in C: a comprehension makes a function object per check
    for h, r in out.items():
        if not isinstance(r, Result):
            out[h] = Result(False, f"probe error: {mon.name} returned {type(r).__name__}, not a Result")
    return Check(out)  # type: ignore[arg-type]


async def run_check(cfg: Config, plugins: Plugins, svc: ServiceSpec, st: ServiceState) -> Check:
    hosts = cfg.hosts(svc)
    found = plugins.monitor(svc.monitor.name)
    if found is None:
        return Check({h: Result(False, f"monitor {svc.monitor.name!r} not found") for h in hosts})
    if isinstance(found, Path):
        return await _run_legacy(cfg, svc, st, found, hosts)
    return await _run_native(found, svc, hosts)


async def _run_native(mon: Monitor, svc: ServiceSpec, hosts: list[str]) -> Check:
    params = svc.probe_params
    targets = svc.targets(hosts)
    running = _running(mon, svc)  # named by the loop watchdog
    group = mon.fn if mon.scope == "group" else mon.many if len(targets) > 1 else None
    if group is not None:
        start = time.monotonic()
        res = await _guard(labelled(group(targets, params), running), svc.timeout)
        if isinstance(res, Result):  # timeout or error: every host failed the same way
            return Check({h: res for h in hosts})
        if not isinstance(res, dict):
            bad = Result(False, f"probe error: {mon.name} returned {type(res).__name__}, not a dict")
            return Check({h: bad for h in hosts})
        lat = time.monotonic() - start
        return Check({h: res.get(h) or Result(False, "no result from probe", latency_s=lat) for h in hosts})
    if len(targets) == 1:  # the usual watch of one real server: no gather, no extra task
        results = [await _guard(labelled(mon.fn(targets[0], params), running), svc.timeout)]
    else:
        results = await asyncio.gather(*(_guard(labelled(mon.fn(t, params), running), svc.timeout)
                                         for t in targets))
    return _per_host(mon, hosts, results)


async def _run_legacy(cfg: Config, svc: ServiceSpec, st: ServiceState, script: Path,
                      hosts: list[str]) -> Check:
    env = legacy.monitor_env(svc.group, svc.name, svc.description, cfg.statedir, cfg.logdir,
                             Path(cfg.file).parent, svc.env, mon_state_env(st))
    run = await legacy.run(legacy.mon_argv(script, svc.monitor.args, hosts), env, svc.timeout,
                           keep_caps=svc.monitor.keep_caps)
    if run.error:
        output, rc = run.error, 127
    elif run.timed_out:
        output, rc = f"timeout after {svc.timeout:g}s", 124
    else:
        output, rc = run.output, run.retval
    summary = output.split("\n", 1)[0]
    if rc == 0:
        res = Result(True, summary, latency_s=run.duration_s)
        return Check({h: res for h in hosts}, output, 0)
    words = set(summary.split())
    named = [h for h in hosts if h in words]
    failing = set(named or hosts)  # a summary naming no host: the whole group failed
    bad = Result(False, summary or f"exit {rc}", output, run.duration_s)
    good = Result(True, "", latency_s=run.duration_s)
    return Check({h: bad if h in failing else good for h in hosts}, output, rc if rc > 0 else 255)


def mon_state_env(st: ServiceState) -> dict[str, str | None]:
    """The MON_* state variables mon would give a script now (None: unset)."""
    return dict(st.mon)
