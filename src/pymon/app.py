"""The daemon: wires config → scheduler → checks → state machine → alerts, and
handles signals (SIGTERM/SIGINT stop, SIGHUP reload with the old config kept on error)."""

from __future__ import annotations

import asyncio
import signal
import time
from dataclasses import dataclass
from typing import Any

from pymon.engine import alerting
from pymon.loader import load_all
from pymon.alerts import lvs as lvs_alert
from pymon.ipvs import owner
from pymon.probes.http import pool
from pymon.ops import api
from pymon.ops.control import CheckObserver, Control
from pymon.engine.checks import Check, Deadlines, start_check
from pymon.model.config import Config, ServiceSpec, VirtualServiceSpec, ConfigError
from .plugin import Alert
from pymon.engine.plugin_loading import Plugins
from .probes.http import close_sessions
from pymon.engine.scheduler import Cancel, Finish, Scheduler
from pymon.engine.watchdog import Watchdog
from pymon.engine.rules import Fire, Outcome, ServiceState

ALERT_DRAIN_S = 10.0
CHECK_DONE_PER_S = 100.0  # `check.done` lines a second at most (a token bucket); `check.sampled` counts the rest
SAMPLED_EVERY_S = 60.0


class _Sampler:
    """Token bucket for per-check info logs: a handful of services log every check; at
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
    """A check's end: `Daemon._checked` with what the check started with. Slots, not a
    partial: a partial, its bound method and its arguments are three objects per check in
    flight for the garbage collector's young generation to walk."""

    __slots__ = ("d", "st", "key", "dep_ok", "start", "lag", "finish")

    def __init__(self, d: "Daemon", st: ServiceState, key: tuple[str, str], dep_ok: bool, start: float, lag: float,
                 finish: Finish):
        self.d, self.st, self.key, self.dep_ok, self.start, self.lag, self.finish = d, st, key, dep_ok, start, lag, finish

    def __call__(self, check: Check | BaseException) -> None:
        self.d._checked(self.st, self.key, self.dep_ok, self.start, self.lag, self.finish, check)


@dataclass
class Daemon:
    path: str
    log: Any
    cfg: Config | None = None
    plugins: Plugins | None = None
    dry_run: bool = False

    def __post_init__(self) -> None:
        self.states: dict[tuple[str, str], ServiceState] = {}
        self.stopping = asyncio.Event()
        self.alert_tasks: set[asyncio.Task[None]] = set()
        self.sched: Scheduler | None = None
        self.deadlines: Deadlines | None = None  # the callback-form checks' guard (checks.py)
        self.lvs: owner.LvsOwner | None = None
        self.lvs_task: asyncio.Task[None] | None = None
        self.watchdog: Watchdog | None = None  # loop-block warnings (watchdog.py)
        self.api: api.Api | None = None
        self.reloads: set[asyncio.Task[bool]] = set()  # referenced until done (the loop holds tasks weakly)
        self.control = Control(self)  # persisted state, sd_notify, control API (control.py)
        self._reload_lock = asyncio.Lock()  # one reload at a time: the newest file wins
        self._hup_pending = False  # a SIGHUP's reload waits for the lock: more SIGHUPs join it
        self.done_log = _Sampler(CHECK_DONE_PER_S)
        enabled = getattr(self.log, "is_enabled_for", None)
        self.debug = enabled(10) if enabled else True  # skip building check.result fields when filtered

    # -- lifecycle ------------------------------------------------------------

    async def run(self) -> int:
        if self.cfg is None:
            self.cfg, self.plugins = load_all(self.path)
        self._log_loaded("config.loaded")
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stopping.set)
        loop.add_signal_handler(signal.SIGHUP, self.request_reload)
        self.sched = Scheduler(self.cfg.maxprocs, self.log)
        self.deadlines = Deadlines(loop)
        self.watchdog = Watchdog(self.log, self.cfg.block_warning)
        self.watchdog.start()
        pool.configure(self.cfg.probe_workers, self.log)
        self.control.metrics = self._metrics()
        self.control.load()
        if self.uses_lvs(self.cfg, self.plugins):
            await self.start_lvs()
        now = time.time()
        for key, svc in self.cfg.services.items():
            st = self.states[key] = ServiceState(svc)
            self._fire(st, st.startup(now), now)
            self._schedule(svc)
        await self.control.started()
        self.api = await api.start(self)
        self.control.serving()
        self.control.freeze()  # config, states, plugins: long-lived; the cyclic GC need not scan them again and again
        self.log.info("daemon.started", services=len(self.cfg.services))
        await self.stopping.wait()
        await self.shutdown()
        return 0

    async def shutdown(self) -> None:
        self.log.info("daemon.stopping")
        await self.control.stopping()
        if self.api is not None:
            await self.api.stop()
        if self.sched:
            await self.sched.close()
        if self.deadlines:
            self.deadlines.close()
        if self.lvs_task:
            self.lvs_task.cancel()
            await asyncio.gather(self.lvs_task, return_exceptions=True)
        if self.alert_tasks:
            done, pending = await asyncio.wait(self.alert_tasks, timeout=ALERT_DRAIN_S)
            for t in pending:
                t.cancel()
            if pending:
                self.log.warning("daemon.alerts_abandoned", count=len(pending))
        if self.lvs:
            await self.lvs.stop()
            lvs_alert.bind(None)
        await close_sessions()
        pool.configure(0, self.log)  # the workers exit
        await self.control.stopped()
        if self.watchdog:
            self.watchdog.stop()
        self.log.info("daemon.stopped")

    def request_reload(self) -> None:
        if self._hup_pending:
            return  # a reload that has not read the file yet will see this change too
        self._hup_pending = True
        task = asyncio.get_running_loop().create_task(self.control.reload())
        self.reloads.add(task)
        task.add_done_callback(self.reloads.discard)

    async def reload(self) -> bool:
        """Serialised: concurrent reloads (a SIGHUP storm, the API) could otherwise apply
        an older file after a newer one, or interleave their changes to the schedule."""
        async with self._reload_lock:
            self._hup_pending = False
            return await self._reload()

    async def _reload(self) -> bool:
        self.log.info("reload.started", file=self.path)
        try:
            cfg, found = await asyncio.get_running_loop().run_in_executor(None, load_all, self.path)
        except ConfigError as e:
            self.log.error("config.invalid", file=self.path, problems=e.problems,
                           action="keeping the running config")
            return False
        old = self.cfg
        assert old is not None and self.sched is not None
        self.cfg, self.plugins = cfg, found
        if self.watchdog:
            self.watchdog.bound = cfg.block_warning
        pool.configure(cfg.probe_workers, self.log)
        if cfg.maxprocs != old.maxprocs:
            self.sched.set_maxprocs(cfg.maxprocs)
        for key in list(self.states):
            if key not in cfg.services:
                self.sched.stop(key)
                del self.states[key]
        for key, svc in cfg.services.items():
            st = self.states.get(key)
            if st is None:
                self.states[key] = ServiceState(svc)
                self._schedule(svc)
            elif st.spec != svc or old.hostgroups.get(svc.group) != cfg.hostgroups.get(svc.group):
                st.rebind(svc)
                for h in set(st.hosts) - set(cfg.hosts(svc)):
                    del st.hosts[h]
                self._schedule(svc)
        if self.lvs is None and self.uses_lvs(cfg, found):
            await self.start_lvs()
        elif self.lvs is not None:
            self.lvs.vss = list(cfg.virtual_services)
            await self.lvs.reconcile("reload")
        await close_sessions()  # keep-alive sessions may belong to params that changed
        self._log_loaded("config.reloaded")
        return True

    def _metrics(self) -> CheckObserver | None:
        try:
            from pymon.ops.metrics import Metrics  # prometheus-client is optional
        except ImportError as e:  # missing: everything but /metrics works
            self.log.warning("metrics.unavailable", error=str(e))
            return None
        return Metrics(self)

    def _log_loaded(self, event: str) -> None:
        assert self.cfg is not None and self.plugins is not None
        self.log.info(event, file=self.path, hostgroups=len(self.cfg.hostgroups),
                      services=len(self.cfg.services),
                      monitors=sorted(self.plugins.registry.monitors), alerts=sorted(self.plugins.registry.alerts))

    # -- IPVS ------------------------------------------------------------------

    @staticmethod
    def uses_lvs(cfg: Config, found: Plugins) -> bool:
        if cfg.virtual_services:
            return True
        specs = (a for svc in cfg.services.values() for p in svc.periods for a in p.alert + p.upalert)
        return any(isinstance(x := found.alert(a.name), Alert) and x.name == "lvs" for a in specs)

    async def start_lvs(self) -> None:
        assert self.cfg is not None
        backend, dry = await owner.open_backend(self.cfg.ipvs, self.dry_run or self.cfg.ipvs.dry_run, self.log)
        self.lvs = owner.LvsOwner(self.cfg.ipvs, backend, self.log, dry, list(self.cfg.virtual_services),
                                health=self.host_up, alert=self.quorum_alert)
        lvs_alert.bind(self.lvs)
        await self.lvs.reconcile("start")
        self.lvs_task = asyncio.get_running_loop().create_task(self.lvs.run())

    def host_up(self, watch: tuple[str, str], host: str) -> bool | None:
        st = self.states.get(watch)
        hs = st.hosts.get(host) if st else None
        return self.control.health(watch, host, hs.up if hs else None)

    def quorum_alert(self, vs: VirtualServiceSpec, ok: bool, healthy: int) -> None:
        st = self.states.get(vs.watch)
        if st is None:
            return
        what = "regained" if ok else "lost"
        output = f"quorum {what} for {vs.name}\nhealthy weight {healthy}, quorum {vs.quorum}"
        kind = "upalert" if ok else "alert"
        self._fire(st, [Fire(kind, a, "quorum", output, 0 if ok else 1) for a in vs.quorum_alert], time.time())

    # -- one service ------------------------------------------------------------

    def _schedule(self, svc: ServiceSpec) -> None:
        assert self.cfg is not None and self.sched is not None
        delay = self.sched.rng.uniform(0, self.cfg.randstart) if self.cfg.randstart else 0.0
        self.sched.start(svc.key, delay, self.control.checked, svc.randskew)

    def dep_ok(self, svc: ServiceSpec) -> bool:
        return not svc.depend or all(self.states[d].status != "fail" for d in svc.depend if d in self.states)

    def check(self, key: tuple[str, str], lag: float, finish: Finish) -> Cancel | None:
        """Start one check of a service (the scheduler's job); when it is over, act on it
        and `finish(seconds to the next)`. Returns how to cancel the check in flight."""
        st = self.states[key]
        svc = st.spec
        try:
            assert self.cfg is not None and self.plugins is not None and self.sched is not None
            assert self.deadlines is not None
            now = time.time()
            if svc.exclude_period is not None and svc.exclude_period.contains(now):
                self.log.debug("check.skipped", group=svc.group, service=svc.name, reason="exclude_period")
                return finish(svc.interval)
            dep_ok = self.dep_ok(svc)
            if not dep_ok and svc.dep_behavior == "m":
                self.log.info("check.skipped", group=svc.group, service=svc.name, reason="dependency failing")
                return finish(svc.interval)
            to_run = self.control.spec_to_run(svc)  # disabled hosts left out; None: trap-only or all disabled
            if to_run is None:
                return finish(self.control.idle(st, now))
            start = time.monotonic()
            return start_check(self.cfg, self.plugins, to_run, st, _Checked(self, st, key, dep_ok, start, lag, finish),
                               self.sched.in_task, self.deadlines)
        except Exception as e:  # noqa: BLE001 - a bug must not silently end a service's timer
            return finish(self._crashed(svc, e))

    def _checked(self, st: ServiceState, key: tuple[str, str], dep_ok: bool, start: float, lag: float,
                 finish: Finish, check: Check | BaseException) -> None:
        svc = st.spec
        try:
            if isinstance(check, BaseException):
                raise check
            if st is not self.states.get(key):
                return finish(svc.interval)  # removed by a reload while it ran
            now = time.time()
            if self.debug:
                for host, res in check.results.items():
                    self.log.debug("check.result", group=svc.group, service=svc.name, host=host, ok=res.ok,
                                   summary=res.summary, latency_s=round(res.latency_s, 4))
            mono = time.monotonic()
            duration = mono - start
            out = self.control.observe(st, now, check.results, check.output, check.retval, dep_ok, duration, lag)
            if self.done_log.allow(mono):
                self.log.info("check.done", group=svc.group, service=svc.name, ok=st.status == "ok",
                              failing=st.failing_hosts, duration_s=round(duration, 4), lag_s=round(lag, 4))
            if left_out := self.done_log.report(mono):
                self.log.info("check.sampled", left_out=left_out, per_s=CHECK_DONE_PER_S)
            self.act(st, out, now)
            interval = svc.failure_interval if st.status == "fail" and svc.failure_interval else svc.interval
        except Exception as e:  # noqa: BLE001
            interval = self._crashed(svc, e)
        finish(interval)

    def _crashed(self, svc: ServiceSpec, e: Exception) -> float:
        self.log.exception("check.crashed", group=svc.group, service=svc.name, error=f"{type(e).__name__}: {e}")
        return svc.interval

    def act(self, st: ServiceState, out: Outcome, now: float) -> None:
        """Log the transitions of one observation, tell IPVS, fire the alerts."""
        if not (out.hosts or out.status_changed or out.fires):
            return
        fields = dict(group=st.spec.group, service=st.spec.name)
        for ch in out.hosts:
            self.log.info("host.state", **fields, host=ch.host, state="up" if ch.up else "down",
                          summary=ch.result.summary)
        if out.hosts and self.lvs is not None:
            self.lvs.poke()
        if out.status_changed:
            self.log.info("service.state", **fields, state=st.status,
                          summary=st.last_summary if st.status == "fail" else "")
        self._fire(st, out.fires, now)

    def _fire(self, st: ServiceState, fires: list[Fire], now: float) -> None:
        assert self.cfg is not None and self.plugins is not None
        for fire in self.control.allowed(st, fires):  # disabled service/watch: suppressed
            task = asyncio.get_running_loop().create_task(
                alerting.deliver(self.cfg, self.plugins, st, fire, now, self.log))
            self.alert_tasks.add(task)
            task.add_done_callback(self.alert_tasks.discard)
            task.add_done_callback(lambda t, st=st, fire=fire: self.control.alert_done(st, fire, now, t))
