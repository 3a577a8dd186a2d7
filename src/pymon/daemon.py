"""The daemon: wires config → scheduler → checks → state machine → alerts, and
handles signals (SIGTERM/SIGINT stop, SIGHUP reload with the old config kept on error)."""

from __future__ import annotations

import asyncio
import signal
import time
from dataclasses import dataclass
from typing import Any

from . import alerting, forked, lvs, plugins as plugins_mod, pool
from .control import Control
from .checks import Check, start_check
from .config import Config, ConfigError, ServiceSpec, VirtualServiceSpec, load_config
from .plugin import Alert
from .plugins import Plugins
from .routing import announce as route_announce, vip_of  # --- routing wiring: BGP announcements (routing/)
from .routing.owner import Routes  # --- routing wiring
from .probes.http import close_sessions
from .scheduler import Cancel, Finish, Scheduler
from .watchdog import Watchdog
from .state import Fire, Outcome, ServiceState

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


def load_all(path: str) -> tuple[Config, Plugins]:
    """Config and plugins together: the plugin dirs come from the config, and the
    config's monitor/alert names are only valid once the plugins are known. The file is
    read and checked in a forked child (forked.py: the heap that reading leaves behind
    stays there); the plugins it named are then loaded here, where they run."""
    try:
        cfg = forked.call(_checked_config, path)
    except forked.ChildDied as e:
        raise ConfigError([f"{path}:1:1: cannot read config: {e}"]) from None
    found = plugins_mod.load(cfg.mondir, cfg.alertdir)
    if found.errors:  # a plugin file that changed between the two reads
        raise ConfigError(found.errors)
    return cfg, found


def _checked_config(path: str) -> Config:
    loading = plugins_mod.Loading()
    try:
        cfg = load_config(path, plugins=loading)
    except ConfigError as e:
        raise ConfigError(loading.errors + e.problems) from None
    if loading.errors:
        raise ConfigError(loading.errors)
    return cfg


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
        self.lvs: lvs.LvsOwner | None = None
        self.lvs_task: asyncio.Task[None] | None = None
        self.watchdog: Watchdog | None = None  # loop-block warnings (watchdog.py)
        self.routes: Routes | None = None  # --- routing wiring: BGP announcements (routing/)
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
        self.watchdog = Watchdog(self.log, self.cfg.block_warning)
        self.watchdog.start()
        pool.configure(self.cfg.probe_workers, self.log)
        self.control.load()
        if self.uses_lvs(self.cfg, self.plugins):
            await self.start_lvs()
        now = time.time()
        for key, svc in self.cfg.services.items():
            st = self.states[key] = ServiceState(svc)
            self._fire(st, st.startup(now), now)
            self._schedule(svc)
        await self.control.started()
        if self.cfg.routing is not None:  # --- routing wiring
            await self.start_routes()
        self.control.freeze()  # config, states, plugins: long-lived; the cyclic GC need not scan them again and again
        self.log.info("daemon.started", services=len(self.cfg.services))
        await self.stopping.wait()
        await self.shutdown()
        return 0

    async def shutdown(self) -> None:
        self.log.info("daemon.stopping")
        if self.routes is not None:  # --- routing wiring: drain, then withdraw, while IPVS still serves
            await self.routes.stop()
        await self.control.stopping()
        if self.sched:
            await self.sched.close()
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
            lvs.OWNER = None
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
        asyncio.get_running_loop().create_task(self.control.reload())

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
        if cfg.routing is not None and self.routes is None:  # --- routing wiring
            await self.start_routes()
        elif self.routes is not None and cfg.routing is None:
            await self.routes.stop()
            self.routes = None
        elif self.routes is not None:
            await self.routes.reconfigure(cfg.routing)  # --- end routing wiring
        await close_sessions()  # keep-alive sessions may belong to params that changed
        self._log_loaded("config.reloaded")
        return True

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
        backend, dry = await lvs.open_backend(self.cfg.ipvs, self.dry_run or self.cfg.ipvs.dry_run, self.log)
        self.lvs = lvs.LvsOwner(self.cfg.ipvs, backend, self.log, dry, list(self.cfg.virtual_services),
                                health=self.host_up, alert=self.quorum_alert)
        lvs.OWNER = self.lvs
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
        if self.routes is not None:  # --- routing wiring: a quorum change is evaluated now, not at the next tick
            self.routes.poke()

    # -- BGP announcements (routing/) --- routing wiring ------------------------------

    async def start_routes(self) -> None:
        assert self.cfg is not None
        self.routes = Routes(self.cfg.routing, self.log, self.route_services, lambda: self.control.ready,
                             self.route_alert, self.cfg.statedir)
        await self.routes.start()

    def route_services(self) -> dict[str, tuple[route_announce.Service, ...]]:
        """Per VIP, its virtual services as the IPVS owner last computed them. An IPVS
        table that cannot be read serves nothing: pooled 0, quorum lost."""
        assert self.cfg is not None
        o = self.lvs
        dead = o is None or o.read_error is not None
        out: dict[str, tuple[route_announce.Service, ...]] = {}
        for vs in self.cfg.virtual_services:
            vip = vip_of(vs.service.key.address)
            if vip is None:
                continue  # a fwmark service has no one address to announce
            dests = {} if dead or o is None else o.last_wanted.get(vs.service.key, (None, {}))[1]
            pooled = sum(1 for k, d in dests.items() if d.weight > 0 and (vs.sorry is None or k != vs.sorry.key))
            quorum = None if not vs.quorum else (False if dead or o is None else o.quorum.get(vs.name, True))
            out[vip] = out.get(vip, ()) + (route_announce.Service(vs.name, pooled, quorum),)
        return out

    def route_alert(self, vip: str, old: route_announce.Announcement, new: route_announce.Announcement) -> None:
        """Every change of a VIP's announcement, as quorum alerts: on the watch of its first service."""
        assert self.cfg is not None
        if self.cfg.routing is None or not self.cfg.routing.alert:
            return
        vs = next((v for v in self.cfg.virtual_services if vip_of(v.service.key.address) == vip), None)
        st = self.states.get(vs.watch) if vs is not None else None
        if st is None:
            return
        what = {"up": "announced", "draining": "draining", "withdrawn": "withdrawn"}[new.state]
        output = f"route {what} for {vip}\n{new.reason}\nwas {old.state}"
        kind = "upalert" if new.state == "up" else "alert"
        self._fire(st, [Fire(kind, a, "route", output, 0 if new.state == "up" else 1) for a in self.cfg.routing.alert],
                   time.time())

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
                               self.sched.in_task)
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
