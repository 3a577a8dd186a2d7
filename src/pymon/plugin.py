"""The plugin contract shared by built-in and drop-in probes and alerts.

Plain async functions registered by name (as blackbox_exporter's ProbeFn): a probe
checks targets once and never raises; the scheduler enforces the timeout. An alert
reacts to one event and must be idempotent.
"""

from __future__ import annotations

import asyncio
import inspect
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Awaitable, Callable, Literal

Params = dict[str, Any]
# A timer that fires more than LATE_S after it was due found the process late: not
# scheduled (a starved CPU), stopped, or its loop held. The time it was late is not the
# server's: a deadline seen that late is extended once by as much (at most its timeout)
# before it fails a check (docs/failure-behaviour.md). `timeout_unless_late` does it for
# an awaited probe; a callback probe with timers of its own should do the same.
LATE_S = 0.01


class timeout_unless_late:
    """`asyncio.timeout(seconds + grace)`, except when the loop sees the deadline more
    than LATE_S late: then, once, `min(late, seconds) + grace` more, since nothing tells
    when in the window the process was not running. What had arrived by then is judged
    either way: the cancel comes after the callbacks of the loop pass that saw the
    deadline, so an answer the selector reported in that pass reaches the probe first.
    `grace`: a guard around a probe's own deadline (engine/checks.py) stays behind it."""

    __slots__ = ("seconds", "grace", "loop", "cm", "due", "handle", "extended")

    def __init__(self, seconds: float, grace: float = 0.0):
        self.seconds, self.grace = seconds, grace

    async def __aenter__(self) -> "timeout_unless_late":
        self.loop = loop = asyncio.get_running_loop()
        self.cm = asyncio.timeout(None)
        await self.cm.__aenter__()
        self.due = loop.time() + self.seconds + self.grace
        self.extended = False
        self.handle = loop.call_at(self.due, self._fire)
        return self

    def _fire(self) -> None:
        now = self.loop.time()
        late = now - self.due
        if not self.extended and late > LATE_S:
            self.extended = True
            self.due = now + min(late, self.seconds) + self.grace
            self.handle = self.loop.call_at(self.due, self._fire)
        else:
            self.cm.reschedule(now)  # the cancel, after this pass's callbacks

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> bool | None:
        self.handle.cancel()
        return await self.cm.__aexit__(kind, exc, tb)


@dataclass(frozen=True, slots=True)  # one per host per service, kept for the spec's life
class Target:
    host: str
    group: str
    service: str


@dataclass(frozen=True, slots=True)
class AgentReport:
    """What a real server said about itself (HAProxy's agent-check), for its IPVS weight.
    `weight`: a fraction of its configured weight (0.5 for "50%"); `state`: "ready"
    (back to the reported or configured weight), "drain" (weight 0, kept in the table) or
    "down" (taken out). None: unchanged since the last report."""

    weight: float | None = None
    state: Literal["ready", "drain", "down"] | None = None


@dataclass(slots=True)  # one per host per check: no __dict__ to make
class Result:
    ok: bool
    summary: str
    detail: str = ""
    latency_s: float = 0.0
    value: float | None = None
    agent: AgentReport | None = None  # a server's own word on its weight (probes/agent.py); rarely set


@dataclass(frozen=True)
class AlertEvent:
    """One alert to deliver; `hosts` are the failing hosts (mon's summary line)."""

    type: Literal["alert", "upalert", "startupalert", "trap"]
    group: str
    service: str
    hosts: tuple[str, ...]
    summary: str
    detail: str
    time: float
    args: tuple[str, ...] = ()
    description: str = ""
    retval: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


HostProbe = Callable[[Target, Params], Awaitable[Result]]
GroupProbe = Callable[[list[Target], Params], Awaitable[dict[str, Result]]]
AlertFn = Callable[[AlertEvent, Params], Awaitable[None]]
ResultsDone = Callable[[list[Result]], None]  # a start form's answer: one Result per target, in order
Cancel = Callable[[], object]  # stops what was started; what it returns is ignored
# (targets, params, done) -> cancel, or None when this check needs the awaited form
StartProbe = Callable[[list[Target], Params, ResultsDone], Cancel | None]


@dataclass(frozen=True)
class Monitor:
    name: str
    fn: Callable[..., Awaitable[Any]]
    scope: Literal["host", "group"]
    origin: str
    many: GroupProbe | None = None  # a host probe's form for several hosts at once (fewer tasks)
    start: StartProbe | None = None  # a host probe's callback form: no task, no coroutine


@dataclass(frozen=True)
class Alert:
    name: str
    fn: AlertFn
    origin: str


class PluginError(Exception):
    """A plugin that cannot be registered; the message names file and line."""


@dataclass
class Registry:
    monitors: dict[str, Monitor] = field(default_factory=dict)
    alerts: dict[str, Alert] = field(default_factory=dict)

    def copy(self) -> "Registry":
        return Registry(dict(self.monitors), dict(self.alerts))


# The decorators register into `current`; the loader swaps in a fresh copy of the
# built-ins while it imports drop-ins, so a failed reload leaves the old set intact.
current = Registry()


def _origin(fn: Callable[..., Any]) -> str:
    try:
        return f"{inspect.getsourcefile(fn)}:{inspect.getsourcelines(fn)[1]}"
    except (OSError, TypeError):
        return getattr(fn, "__module__", "?")


def _check(fn: Callable[..., Any], kind: str, name: str) -> None:
    if not inspect.iscoroutinefunction(fn):
        raise PluginError(f"{_origin(fn)}: {kind} {name!r} must be an async function")
    if len(inspect.signature(fn).parameters) != 2:
        raise PluginError(f"{_origin(fn)}: {kind} {name!r} must take exactly (target, params)")


def monitor(name: str, scope: Literal["host", "group"] = "host", many: GroupProbe | None = None,
            start: StartProbe | None = None) -> Callable[[Any], Any]:
    """Register a probe. scope="host": fn(target, params) -> Result, once per host;
    scope="group": fn(targets, params) -> {host: Result}, once for all hosts. A host
    probe may also give `many`, a group form the daemon uses for a watch of several
    hosts: the same results without a task per host; and `start`, a callback form:
    start(targets, params, done) starts the checks without blocking, calls
    done([Result, ...]) once, in target order, from the loop, and returns a function
    that cancels them, or returns None to have this check awaited through fn/many. It
    never raises. Every form bounds its I/O by `params["timeout"]` (the service's one
    budget); the daemon fails a check still running a second later, whatever its form,
    and calls a start form's cancel. The start form exists because at thousands of
    checks a second a task and its coroutines cost as much as the check itself."""

    def deco(fn: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        _check(fn, "monitor", name)
        old = current.monitors.get(name)
        if old is not None and old.fn is not fn:
            raise PluginError(f"{_origin(fn)}: monitor {name!r} already defined at {old.origin}")
        if scope not in ("host", "group"):
            raise PluginError(f"{_origin(fn)}: monitor {name!r}: scope must be 'host' or 'group'")
        current.monitors[name] = Monitor(name, fn, scope, _origin(fn), many, start)
        return fn

    return deco


def alert(name: str) -> Callable[[AlertFn], AlertFn]:
    """Register an alert: fn(event, params) -> None."""

    def deco(fn: AlertFn) -> AlertFn:
        _check(fn, "alert", name)
        old = current.alerts.get(name)
        if old is not None and old.fn is not fn:
            raise PluginError(f"{_origin(fn)}: alert {name!r} already defined at {old.origin}")
        current.alerts[name] = Alert(name, fn, _origin(fn))
        return fn

    return deco


def param_problems(found: Monitor | Alert, params: dict[str, Any],
                   builtin: dict[str, Callable[[dict[str, Any]], list[str]]]) -> list[str]:
    """`PARAM_VALIDATORS[name](params)`: a built-in's from its package table, a drop-in's from
    the module that defines it. A validator that raises is itself the problem."""
    fn = found.fn
    validators = builtin if fn.__module__.startswith(("pymon.probes.", "pymon.alerts.")) \
        else getattr(fn, "__globals__", {}).get("PARAM_VALIDATORS")
    check = validators.get(found.name) if isinstance(validators, dict) else None
    if not callable(check):
        return []
    try:
        return [str(m) for m in check(params)]
    except Exception as e:  # noqa: BLE001 - a drop-in validator's bug is a config problem
        return [f"{found.origin}: param validator raised {type(e).__name__}: {e}"]
