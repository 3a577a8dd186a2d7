"""The daemon: builds and wires everything (the only module that knows every layer) —
config → scheduler → checks → rules → alerts, IPVS and the operator's side — and
handles signals (SIGTERM/SIGINT stop, SIGHUP reload with the old config kept on error).

The engine (engine/runner.py) runs each check on one straight path and hands what
changed to the hooks installed here: the operator's state (ops/control.py), metrics
(ops/metrics.py), readiness (ops/readiness.py), the IPVS owner (ipvs/owner.py) and the
alerts (engine/alerting.py)."""

from __future__ import annotations

import asyncio
import signal
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from pymon.alerts import lvs as lvs_alert
from pymon.engine import alerting
from pymon.engine.checks import Deadlines
from pymon.engine.gc_policy import GcPolicy
from pymon.engine.plugin_loading import Plugins
from pymon.engine.rules import Fire, ServiceState
from pymon.engine.runner import Runner
from pymon.engine.scheduler import Scheduler
from pymon.engine.watchdog import Watchdog
from pymon.ipvs import owner
from pymon.loader import load_all, load_all_async
from pymon.model.config import Config, ConfigError, ServiceSpec, VirtualServiceSpec
from pymon.ops import api
from pymon.ops.control import Control
from pymon.ops.readiness import Readiness
from pymon.plugin import Alert
from pymon.probes.http import close_sessions, pool

if TYPE_CHECKING:
    from pymon.ops.metrics import Metrics

ALERT_DRAIN_S = 10.0


@dataclass
class Daemon:
    path: str
    log: Any
    cfg: Config | None = None
    plugins: Plugins | None = None
    dry_run: bool = False

    def __post_init__(self) -> None:
        self.states: dict[tuple[str, str], ServiceState] = {}  # shared with the runner, Control and the API
        self.stopping = asyncio.Event()
        self.alert_tasks: set[asyncio.Task[None]] = set()
        self.runner: Runner | None = None  # the checks (engine/runner.py), once running
        self.lvs: owner.LvsOwner | None = None
        self.lvs_task: asyncio.Task[None] | None = None
        self.watchdog: Watchdog | None = None  # loop-block warnings (watchdog.py)
        self.api: api.Api | None = None
        self.reloads: set[asyncio.Task[bool]] = set()  # referenced until done (the loop holds tasks weakly)
        self.gc = GcPolicy()
        self.control = Control(self)  # persisted operator state and commands (control.py)
        self.readiness = Readiness(self.log, self.states, self.control.status_line, self._first_round)
        self._reload_lock = asyncio.Lock()  # one reload at a time: the newest file wins
        self._hup_pending = False  # a SIGHUP's reload waits for the lock: more SIGHUPs join it
        # a director self-fault holds the pools (ipvs/policy.py freeze); the detector replaces this
        self.frozen: Callable[[], bool] = lambda: False

    # -- lifecycle ------------------------------------------------------------

    async def run(self) -> int:
        if self.cfg is None:
            self.cfg, self.plugins = load_all(self.path)
        self._log_loaded("config.loaded")
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stopping.set)
        loop.add_signal_handler(signal.SIGHUP, self.request_reload)
        runner = self.runner = Runner(self.log, self.states, Scheduler(self.cfg.maxprocs, self.log), Deadlines(loop),
                                      self.gc, self.control)
        runner.cfg, runner.plugins = self.cfg, self.plugins
        runner.fire = self._fire
        self.watchdog = Watchdog(self.log, self.cfg.block_warning)
        self.watchdog.start()
        pool.configure(self.cfg.probe_workers, self.log)
        runner.metrics = self.control.metrics = self._metrics()
        self.control.load()
        if self.uses_lvs(self.cfg, self.plugins):
            await self.start_lvs()
        now = time.time()
        for key, svc in self.cfg.services.items():
            st = self.states[key] = ServiceState(svc)
            self._fire(st, st.startup(now), now)
            self._schedule(svc)
        await self.control.started()
        self.readiness.start({k for k, st in self.states.items() if not st.spec.passive})
        self.api = await api.start(self)
        self.readiness.serving()
        self.gc.freeze()  # config, states, plugins: long-lived; the cyclic GC need not scan them again and again
        self.gc.start(loop)
        self.log.info("daemon.started", services=len(self.cfg.services))
        await self.stopping.wait()
        await self.shutdown()
        return 0

    async def shutdown(self) -> None:
        self.log.info("daemon.stopping")
        self.readiness.stopping()
        if self.api is not None:
            await self.api.stop()
        if self.runner is not None:
            await self.runner.sched.close()
            self.runner.deadlines.close()
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
        self.gc.stop()
        await self.readiness.stop()
        await self.control.stopped()
        if self.watchdog:
            self.watchdog.stop()
        self.log.info("daemon.stopped")

    async def _first_round(self) -> None:
        """Before READY=1: IPVS follows the first health, and the first round's results
        and metric counts are frozen with the rest (gc_policy.py)."""
        if self.lvs is not None:
            await self.lvs.reconcile("first round")
        self.gc.freeze()

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
            cfg, found = await load_all_async(self.path)
        except ConfigError as e:
            self.log.error("config.invalid", file=self.path, problems=e.problems,
                           action="keeping the running config")
            return False
        old, runner = self.cfg, self.runner
        assert old is not None and runner is not None
        self.cfg, self.plugins = runner.cfg, runner.plugins = cfg, found
        if self.watchdog:
            self.watchdog.bound = cfg.block_warning
        pool.configure(cfg.probe_workers, self.log)
        if cfg.maxprocs != old.maxprocs:
            runner.sched.set_maxprocs(cfg.maxprocs)
        for key in list(self.states):
            if key not in cfg.services:
                runner.sched.stop(key)
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

    def _metrics(self) -> "Metrics | None":
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
        for w in self.cfg.warnings:
            self.log.warning("config.warning", problem=w)

    def _schedule(self, svc: ServiceSpec) -> None:
        assert self.cfg is not None and self.runner is not None
        delay = self.runner.sched.rng.uniform(0, self.cfg.randstart) if self.cfg.randstart else 0.0
        self.runner.schedule(svc, delay)

    # -- IPVS ------------------------------------------------------------------

    @staticmethod
    def uses_lvs(cfg: Config, found: Plugins) -> bool:
        if cfg.virtual_services:
            return True
        specs = (a for svc in cfg.services.values() for p in svc.periods for a in p.alert + p.upalert)
        return any(isinstance(x := found.alert(a.name), Alert) and x.name == "lvs" for a in specs)

    async def start_lvs(self) -> None:
        assert self.cfg is not None and self.runner is not None
        backend, dry = await owner.open_backend(self.cfg.ipvs, self.dry_run or self.cfg.ipvs.dry_run, self.log)
        self.lvs = owner.LvsOwner(self.cfg.ipvs, backend, self.log, dry, list(self.cfg.virtual_services),
                                  health=self.host_up, alert=self.quorum_alert, operator=self.control.operator,
                                  frozen=lambda: self.frozen())
        lvs_alert.bind(self.lvs)
        self.runner.hosts_changed = self.lvs.poke
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

    # -- alerts ----------------------------------------------------------------------

    def _fire(self, st: ServiceState, fires: list[Fire], now: float) -> None:
        """The engine's `fire` hook: alerts not suppressed by the operator, delivered in
        tasks the shutdown drains, each recorded in the history when done."""
        assert self.cfg is not None and self.plugins is not None
        for fire in self.control.allowed(st, fires):  # disabled service/watch: suppressed
            task = asyncio.get_running_loop().create_task(
                alerting.deliver(self.cfg, self.plugins, st, fire, now, self.log))
            self.alert_tasks.add(task)
            task.add_done_callback(self.alert_tasks.discard)
            task.add_done_callback(lambda t, st=st, fire=fire: self.control.alert_done(st, fire, now, t))
