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
import socket
import time
from collections import Counter
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from pymon.alerts import lvs as lvs_alert
from pymon.engine import alerting
from pymon.engine.checks import Abandoned, Deadlines
from pymon.engine.gc_policy import GcPolicy
from pymon.engine.plugin_loading import Plugins
from pymon.engine.rules import Fire, HostState, ServiceState
from pymon.engine.runner import Runner
from pymon.engine.scheduler import Scheduler
from pymon.engine.watchdog import Watchdog
from pymon.ipvs import owner
from pymon.loader import load_all, load_all_async
from pymon.model.config import Config, ConfigError, PluginSpec, ServiceSpec, VirtualServiceSpec
from pymon.ops import api, exporter
from pymon.ops.director_canaries import SelfCheck
from pymon.ops.control import Control
from pymon.ops.pool import LivePool
from pymon.ops.readiness import Readiness
from pymon.ops.timeline import Timeline
from pymon.plugin import AgentReport, Alert
from pymon.probes.http import close_sessions, pool
from pymon.model.routing import vip_of
from pymon.routing import announce as route_announce
from pymon.routing.owner import Routes

if TYPE_CHECKING:
    from pymon.ops.metrics import Metrics

ALERT_DRAIN_S = 10.0
ALERT_QUEUE_LOG_S = 10.0  # `alert.queued` once per this, with how many waited
TASKS_EVERY_S = 10.0  # how often the loop's tasks are counted (a leak warning)
TASKS_SLACK = 1000  # tasks beyond checks and alerts in flight (API requests, timers of plugins) before it warns


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
        self.timeline = Timeline()  # pooled weight per virtual service over time (status page)
        self.lvs_task: asyncio.Task[None] | None = None
        self.watchdog: Watchdog | None = None  # loop-block warnings (watchdog.py)
        self.api: api.Api | None = None
        self.routes: Routes | None = None  # BGP announcements (routing/)
        self.exporter: exporter.Exporter | None = None  # globals.metrics_listen (exporter.py)
        self.selfcheck: SelfCheck | None = None  # the director's own fault (ops/director_canaries.py)
        self.reloads: set[asyncio.Task[bool]] = set()  # referenced until done (the loop holds tasks weakly)
        self.gc = GcPolicy()
        self.control = Control(self)  # persisted operator state and commands (control.py)
        self.pool = LivePool(self.log, self.repool)  # live real-server overrides (pool.py), applied as a reload
        self._agents: tuple[Config | None, dict[str, list[tuple[str, str]]]] = (None, {})
        self.readiness = Readiness(self.log, self.states, self.control.status_line, self._first_round)
        self._reload_lock = asyncio.Lock()  # one reload at a time: the newest file wins
        self._hup_pending = False  # a SIGHUP's reload waits for the lock: more SIGHUPs join it
        self._tasks_warned = False
        self._task_watch: asyncio.TimerHandle | None = None
        self._alert_slots: asyncio.Semaphore | None = None
        self._alert_slots_n = 0
        self._alerts_waited = 0
        self._alerts_logged_at = -ALERT_QUEUE_LOG_S

    # -- lifecycle ------------------------------------------------------------

    async def run(self) -> int:
        if self.cfg is None:
            self.cfg, self.plugins = load_all(self.path)
        self.cfg = self.pool.loaded(self.cfg)
        self._log_loaded("config.loaded")
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stopping.set)
        loop.add_signal_handler(signal.SIGHUP, self.request_reload)
        loop.set_exception_handler(api.accept_error_handler(self.log))
        Abandoned.log = self.log
        self._task_watch = loop.call_later(TASKS_EVERY_S, self._count_tasks)
        runner = self.runner = Runner(self.log, self.states, Scheduler(self.cfg.maxprocs, self.log), Deadlines(loop),
                                      self.gc, self.control)
        runner.cfg, runner.plugins = self.cfg, self.plugins
        runner.fire = self._fire
        self.watchdog = Watchdog(self.log, self.cfg.block_warning)
        self.watchdog.start()
        pool.configure(self.cfg.probe_workers, self.log)
        runner.metrics = self.control.metrics = self._metrics()
        self.control.load()
        self.start_selfcheck()
        if self.uses_lvs(self.cfg, self.plugins):
            await self.start_lvs()
        self.gc.collect()  # the one full collection at start, before any check is due (gc_policy.py)
        now = time.time()
        for key, svc in self.cfg.services.items():
            st = self.states[key] = ServiceState(svc)
            self._fire(st, st.startup(now), now)
            self._schedule(svc)
        await self.control.started()
        if self.cfg.routing is not None:
            await self.start_routes()
        self.readiness.start({k for k, st in self.states.items() if not st.spec.passive})
        self.api = await api.start(self)
        self.exporter = await exporter.follow(None, self.cfg, self.control.metrics, self.log)
        self.readiness.serving()
        self.gc.freeze()  # states, API, plugins: long-lived; the cyclic GC need not scan them again and again
        self.gc.start(loop)
        self.log.info("daemon.started", services=len(self.cfg.services))
        await self.stopping.wait()
        await self.shutdown()
        return 0

    def _count_tasks(self) -> None:
        """Warn, once, when the loop holds far more tasks than checks and alerts in flight
        explain: a plugin that starts tasks and never ends them grows the daemon's memory
        without any other sign. The most common coroutines name the culprit."""
        loop = asyncio.get_running_loop()
        if self.runner is not None and not self._tasks_warned:
            tasks = asyncio.all_tasks(loop)
            expected = self.runner.sched.running + len(self.alert_tasks) + TASKS_SLACK
            if len(tasks) > expected:
                self._tasks_warned = True
                top = Counter(getattr(t.get_coro(), "__qualname__", "?") for t in tasks).most_common(3)
                self.log.warning("loop.tasks_leaking", tasks=len(tasks), expected_at_most=expected,
                                 most_common=[f"{name} x{n}" for name, n in top],
                                 action="a plugin starts tasks it never ends: memory grows; said once")
        self._task_watch = loop.call_later(TASKS_EVERY_S, self._count_tasks)

    async def shutdown(self) -> None:
        if self._task_watch is not None:
            self._task_watch.cancel()
        self.log.info("daemon.stopping")
        if self.routes is not None:  # drain, then withdraw, while IPVS still serves
            await self.routes.stop()
        self.readiness.stopping()
        if self.api is not None:
            await self.api.stop()
        if self.exporter is not None:
            await self.exporter.stop()
        if self.runner is not None:
            await self.runner.sched.close()
            self.runner.deadlines.close()
        if self.lvs_task:
            self.lvs_task.cancel()
            await asyncio.gather(self.lvs_task, return_exceptions=True)
        if self.selfcheck is not None:
            await self.selfcheck.stop()
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
            assert self.cfg is not None
            cfg, found = await load_all_async(self.path, self.cfg)
        except ConfigError as e:
            self.log.error("config.invalid", file=self.path, problems=e.problems,
                           action="keeping the running config")
            return False
        await self._apply(self.pool.reloaded(cfg), found)
        self._log_loaded("config.reloaded")
        return True

    async def repool(self) -> None:
        """A live pool change (pool.py): the same path as a reload, without reading the file."""
        async with self._reload_lock:
            assert self.pool.base is not None and self.plugins is not None
            await self._apply(self.pool.reloaded(self.pool.base), self.plugins)

    async def _apply(self, cfg: Config, found: Plugins) -> None:
        """Run `cfg`: checks rescheduled where their service or hostgroup changed, IPVS reconciled."""
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
        await self.reload_selfcheck(cfg)
        if self.lvs is None and self.uses_lvs(cfg, found):
            await self.start_lvs()
        elif self.lvs is not None:
            await self.lvs.reconcile("reload", list(cfg.virtual_services))
        if cfg.routing is not None and self.routes is None:
            await self.start_routes()
        elif self.routes is not None and cfg.routing is None:
            await self.routes.stop()
            self.routes = None
        elif self.routes is not None:
            await self.routes.reconfigure(cfg.routing)
        await close_sessions()  # keep-alive sessions may belong to params that changed
        self.exporter = await exporter.follow(self.exporter, cfg, self.control.metrics, self.log)

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
                                  health=self.host_up, alert=self.quorum_alert, weight_of=self.agent_weight,
                                  operator=self.control.operator)
        self.lvs.observe = self.timeline.record
        if self.selfcheck is not None:
            self.lvs.frozen = self.selfcheck.frozen
        lvs_alert.bind(self.lvs)
        self.runner.hosts_changed = self.lvs.poke
        await self.lvs.reconcile("start")
        self.lvs_task = asyncio.get_running_loop().create_task(self.lvs.run())

    def host_up(self, watch: tuple[str, str], host: str) -> bool | None:
        st = self.states.get(watch)
        hs = st.hosts.get(host) if st else None
        up = self.control.health(watch, host, hs.up if hs else None)
        if up and (rep := self.agent_report(watch, host)) is not None and rep.state == "down":
            return False  # its agent holds it out (probes/agent.py), even while the agent is silent
        if up is False and hs is not None and hs.up is False and self.selfcheck is not None \
                and self.selfcheck.holds(watch, host):
            return True  # down because the director is at fault, not drained (ops/director_canaries.py)
        return up

    # -- agent reports (probes/agent.py): a server's own weight and state ---------------------

    def agent_report(self, watch: tuple[str, str], host: str) -> AgentReport | None:
        """The host's last agent report, from the `agent` services of the watched hostgroup."""
        cfg = self.cfg
        assert cfg is not None
        if self._agents[0] is not cfg:  # the `agent` services by hostgroup, once per config
            by_group: dict[str, list[tuple[str, str]]] = {}
            for key, svc in cfg.services.items():
                if svc.monitor.name == "agent":
                    by_group.setdefault(key[0], []).append(key)
            self._agents = (cfg, by_group)
        for key in self._agents[1].get(watch[0], ()):
            st = self.states.get(key)
            hs = st.hosts.get(host) if st else None
            if hs is not None and hs.agent is not None:
                return hs.agent
        return None

    def agent_weight(self, watch: tuple[str, str], host: str) -> float | None:
        """The IPVS owner's `weight_of`: drain = 0, else the reported fraction."""
        rep = self.agent_report(watch, host)
        if rep is None:
            return None
        return 0.0 if rep.state == "drain" else rep.weight

    def quorum_alert(self, vs: VirtualServiceSpec, ok: bool, healthy: int) -> None:
        st = self.states.get(vs.watch)
        if st is None:
            return
        what = "regained" if ok else "lost"
        output = f"quorum {what} for {vs.name}\nhealthy weight {healthy}, quorum {vs.quorum}"
        kind = "upalert" if ok else "alert"
        self._fire(st, [Fire(kind, a, "quorum", output, 0 if ok else 1) for a in vs.quorum_alert], time.time())
        if self.routes is not None:  # a quorum change is evaluated now, not at the next tick
            self.routes.poke()

    # -- BGP announcements (routing/) --------------------------------------------------

    async def start_routes(self) -> None:
        assert self.cfg is not None and self.cfg.routing is not None
        self.routes = Routes(self.cfg.routing, self.log, self.route_services, lambda: self.readiness.ready,
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

    # -- the director's self-check (ops/director_canaries.py) ------------------------

    def start_selfcheck(self, previous: SelfCheck | None = None) -> None:
        assert self.cfg is not None and self.runner is not None
        spec = self.cfg.self_check
        if not spec.enabled:
            return
        hosts = sum(len(self.cfg.hosts(svc)) for svc in self.cfg.services.values() if not svc.passive)
        if hosts < spec.min_hosts:
            self.log.warning("director.inactive", hosts=hosts, min_hosts=spec.min_hosts,
                             note="fewer hosts checked than self_check.min_hosts: no burst can be judged")
        self.selfcheck = SelfCheck(self.cfg.self_check, self.log, self.director_alert, self._poke_lvs,
                                   self._real_addresses)
        self.runner.host_transitions = self.selfcheck.transitions
        if self.lvs is not None:
            self.lvs.frozen = self.selfcheck.frozen
        self.selfcheck.start(previous)

    async def reload_selfcheck(self, cfg: Config) -> None:
        """A changed `self_check:` takes over the running one's verdict: a reload during a
        director fault must not unfreeze the table. Turned off: the owner follows health."""
        assert self.runner is not None
        sc = self.selfcheck
        if sc is not None and sc.spec == cfg.self_check:
            sc.retain({(g, s, h) for (g, s), svc in cfg.services.items() for h in cfg.hosts(svc)})
            return
        if sc is not None:
            await sc.stop()
            self.selfcheck, self.runner.host_transitions = None, None
            if self.lvs is not None:
                self.lvs.frozen = lambda: False
        self.start_selfcheck(sc)
        if self.selfcheck is not None:
            self.selfcheck.retain({(g, s, h) for (g, s), svc in cfg.services.items() for h in cfg.hosts(svc)})
        self._poke_lvs()

    def _poke_lvs(self) -> None:
        if self.lvs is not None:
            self.lvs.poke()

    def _real_addresses(self) -> list[str]:
        assert self.cfg is not None
        return [rs.dest.address for vs in self.cfg.virtual_services for rs in vs.reals]

    def director_alert(self, ok: bool, output: str) -> None:
        """`self_check.alert` as group `director`, service `self_check`, this host its one host."""
        assert self.cfg is not None
        host = socket.gethostname()
        spec = ServiceSpec("director", "self_check", PluginSpec("self_check"), passive=True,
                           description=f"director {host}: its own network toward the real servers")
        st = ServiceState(spec)
        st.status = "ok" if ok else "fail"
        st.hosts[host] = HostState(up=ok)  # the failing host a native alert's event names
        kind = "upalert" if ok else "alert"
        cfg = replace(self.cfg, hostgroups={**self.cfg.hostgroups, "director": [host]})
        self._fire(st, [Fire(kind, a, "self_check", output, 0 if ok else 1) for a in self.cfg.self_check.alert],
                   time.time(), cfg)

    # -- alerts ----------------------------------------------------------------------

    def _fire(self, st: ServiceState, fires: list[Fire], now: float, cfg: Config | None = None) -> None:
        """The engine's `fire` hook: alerts not suppressed by the operator, delivered in
        tasks the shutdown drains, each recorded in the history when done. `cfg`: the
        config with a pseudo group added (the director's self-check)."""
        assert self.cfg is not None and self.plugins is not None
        for fire in self.control.allowed(st, fires):  # disabled service/watch: suppressed
            task = asyncio.get_running_loop().create_task(self._deliver(st, fire, now, cfg or self.cfg))
            self.alert_tasks.add(task)
            task.add_done_callback(self.alert_tasks.discard)
            task.add_done_callback(lambda t, st=st, fire=fire: self.control.alert_done(st, fire, now, t))

    async def _deliver(self, st: ServiceState, fire: Fire, now: float, cfg: Config) -> bool:
        """One alert, once one of `max_alert_procs` slots is free: a trap storm queues its
        alerts instead of starting a process each."""
        assert self.cfg is not None
        if self._alert_slots is None or self._alert_slots_n != self.cfg.max_alert_procs:
            self._alert_slots = asyncio.Semaphore(self.cfg.max_alert_procs)  # holders of the old one finish
            self._alert_slots_n = self.cfg.max_alert_procs
        slots = self._alert_slots
        if slots.locked():
            self._alerts_waited += 1
            at = time.monotonic()
            if at - self._alerts_logged_at >= ALERT_QUEUE_LOG_S:
                self._alerts_logged_at = at
                self.log.warning("alert.queued", running=self.cfg.max_alert_procs, waiting=self._alerts_waited,
                                 action="waiting for a free slot (globals.max_alert_procs)")
                self._alerts_waited = 0
        async with slots:
            assert self.cfg is not None and self.plugins is not None
            return await alerting.deliver(cfg, self.plugins, st, fire, now, self.log)
