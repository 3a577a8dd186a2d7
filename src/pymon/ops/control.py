"""The daemon's day-two side: what operators decide and what must survive a restart.

`Control` (one instance, made by the wiring) holds:
- the persisted state (persist.py): disabled hosts/services/watches, acks, alert
  history, the downtime log, and a snapshot of every ServiceState, saved a second
  after a change and at stop;
- the operator's commands, as the control API (api.py) calls them: disable/enable,
  ack, test-now, trap, reload;
- what each check asks of them (the engine's `Operator` hook, runner.py): the hosts
  to probe, the downtime log, when to save.

Semantics follow mon 1.3 (`disen_host`, `disen_service`, `disen_watch` in /usr/sbin/mon):
- a disabled *host* is not checked by any service (it is left out of the targets, as
  mon leaves it out of the monitor's argv) and so raises no alerts; its host state is
  dropped. For IPVS it is an operator disable the pool policy applies (ipvs/policy.py):
  it leaves the pool (quiesced or removed) unless that would go below `min_pooled`;
- a disabled *service* or *watch* (hostgroup) is still checked, so its state, the
  status page and IPVS stay true, but every alert for it is suppressed
  (`alert.suppressed`), as mon's `do_alert` ignores it;
- an ack silences failure alerts until the service recovers (the state machine).

Drains (`pymon drain`) are pymon's own: a drained real server gets weight 0 at once and
leaves the pool when the kernel shows no active connections or at the drain's timeout.
A drain that the depool threshold would refuse is rejected (`Refused`) unless forced,
rather than left standing: the operator is at the terminal and can decide.
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import replace
from operator import attrgetter
from typing import TYPE_CHECKING, Any, AsyncIterator, Callable, Protocol

from pymon.ipvs.policy import NO_OPERATOR, Operator
from pymon.ops import persist
from pymon.model.config import ServiceSpec
from pymon.plugin import Result
from pymon.engine.scheduler import Finish
from pymon.engine.rules import Fire, Changes, ServiceState
from pymon.ops.vrrp import Vrrp

if TYPE_CHECKING:
    from pymon.engine.runner import Runner
    from pymon.ops.readiness import Readiness
    from pymon.ipvs.owner import LvsOwner
    from pymon.model.config import Config, RealServerSpec, VirtualServiceSpec


class Refused(Exception):
    """An operator command the depool threshold refuses; args[0]: the reasons, one a line."""


class Daemon(Protocol):
    """What Control needs of the running daemon (the wiring passes itself in)."""

    cfg: "Config | None"
    log: Any
    states: dict[tuple[str, str], ServiceState]
    lvs: "LvsOwner | None"
    runner: "Runner | None"
    readiness: "Readiness"

    async def reload(self) -> bool: ...


class AlertObserver(Protocol):
    """Metrics (metrics.py) as Control sees them: told of every alert, rendered for the API."""

    def alert(self, group: str, service: str, kind: str, ok: bool) -> None: ...

    def render(self) -> bytes: ...


SAVE_DELAY_S = float(os.environ.get("PYMON_STATE_SAVE_DELAY", "1.0"))  # coalesce bursts of changes
STALE_SAVE_S = 60.0  # steady ok checks change only times and counts: saved this often (and at stop)
SAVE_SLICE = 250  # services snapshotted per loop pass while saving: the loop keeps starting checks
_OK = attrgetter("ok")


class Control:
    def __init__(self, daemon: "Daemon"):
        self.d = daemon
        self.log = daemon.log
        self.state = persist.State()
        self.store: persist.Store | None = None
        self.unsaved = False  # the last save of the state file failed
        self.fresh: set[tuple[str, str]] = set()  # checked by this process (restored state is not health)
        self.traps: dict[tuple[str, str], float] = {}
        self.dirty = asyncio.Event()
        self.stale = False  # only steady checks since the last save: no hurry (a snapshot is O(services))
        self.saved_at = time.monotonic()
        self.save_lock = asyncio.Lock()
        self.tasks: list[asyncio.Task[Any]] = []
        self.metrics: AlertObserver | None = None  # set by the wiring when prometheus-client is there
        self.started_at = time.time()
        # the last config load (the start's counts), and when one last succeeded (metrics.py)
        self.reload_ok, self.reload_success_at = True, self.started_at
        self.vrrp = Vrrp(daemon)  # keepalived's role, reported through the API (vrrp.py)
        # a service's spec without its disabled hosts, by service: (spec, hosts left out, trimmed)
        self.trimmed: dict[tuple[str, str], tuple[ServiceSpec, tuple[str, ...], ServiceSpec]] = {}

    # -- lifecycle hooks (called by the wiring) -------------------------------------

    def load(self) -> None:
        """Before the services start: read state.json (disables count from the first check)."""
        assert self.d.cfg is not None
        statedir = self.d.cfg.statedir
        try:
            statedir.mkdir(parents=True, exist_ok=True)
        except OSError:
            pass  # the first save says so (state.write_failed)
        self.store = persist.Store(statedir, self.log)
        self.state = self.store.load()
        self.expire(time.time())
        self.vrrp.load()
        n = sum(len(v) for v in self.state.disabled.values())
        self.log.info("state.loaded", file=str(self.store.path), services=len(self.state.services),
                      disabled=n, acks=len(self.state.acks), history=len(self.state.history))

    async def started(self) -> None:
        """After the services are created and scheduled (before the first check runs)."""
        assert self.d.cfg is not None
        for key, st in self.d.states.items():
            snap = self.state.services.get(persist.service_key(key))
            if snap:
                persist.restore_service(st, snap, self.d.cfg.hosts(st.spec))
                for h in list(st.hosts):
                    if self.state.is_disabled("host", h):
                        del st.hosts[h]
            ack = self.state.acks.get(persist.service_key(key))
            st.acked = ack.comment if ack and st.status == "fail" else None
        self.state.services = {}  # restored: the states hold it now
        self.tasks.append(asyncio.get_running_loop().create_task(self._housekeeping()))

    async def stopped(self) -> None:
        for t in self.tasks:
            t.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        self.tasks.clear()
        await self.save()

    async def reload(self) -> bool:
        """SIGHUP or the API: RELOADING=1 … READY=1 around the daemon's reload."""
        ready = self.d.readiness
        ready.reloading()
        ok = False
        try:
            ok = await self.d.reload()
        finally:
            ready.reloaded(set(self.d.states))
            self.reload_ok = ok
            if ok:
                self.reload_success_at = time.time()
        self.dirty.set()
        return ok

    # -- what each check asks (the engine's Operator hook) ----------------------------------

    def finishing(self, key: tuple[str, str], finish: Finish) -> Finish:
        return self.d.readiness.finishing(key, finish)

    def to_run(self, svc: ServiceSpec) -> ServiceSpec | None:
        """The spec to check with disabled hosts left out; None when nothing is to be
        probed (a trap-only service, or every host disabled: mon's default without
        `allow_empty_group`)."""
        if svc.passive:
            return None
        if not self.state.disabled["host"]:
            return svc
        assert self.d.cfg is not None
        hosts = self.d.cfg.hosts(svc)
        off = tuple(h for h in hosts if self.state.is_disabled("host", h))
        if not off:
            return svc
        if len(off) == len(hosts):
            return None
        # the same trimmed spec for as long as the same hosts are disabled: its targets and
        # params stay the same objects, which the probes' per-service caches go by
        # (`probes/http/lean._PLANS`); a spec per check made a cache entry per check
        hit = self.trimmed.get(svc.key)
        if hit is not None and hit[0] is svc and hit[1] == off:
            return hit[2]
        trimmed = replace(svc, exclude_hosts=list(svc.exclude_hosts) + list(off))
        self.trimmed[svc.key] = (svc, off, trimmed)
        return trimmed

    def idle(self, st: ServiceState, now: float) -> None:
        """A check with nothing to probe; a trap-only service's silence check."""
        svc = st.spec
        if svc.passive and svc.traptimeout:
            last = self.traps.get(svc.key, self.started_at)
            if now - last > svc.traptimeout:
                self.log.info("trap.timeout", group=svc.group, service=svc.name, silent_s=round(now - last, 3))
                summary = f"no trap for {svc.traptimeout:g}s"
                self._passive(st, now, {h: Result(False, summary) for h in self.targets(svc)}, None, 1)
                self.traps[svc.key] = now  # the next failure after another traptimeout (mon)

    def targets(self, svc: ServiceSpec) -> list[str]:
        assert self.d.cfg is not None
        return [h for h in self.d.cfg.hosts(svc) if not self.state.is_disabled("host", h)]

    def record(self, st: ServiceState, now: float, results: dict[str, Result], out: Changes, old_status: str,
               old_first: float, old_summary: str, counting: bool) -> None:
        """After the rules (runner.py): the downtime log, and whether to save soon."""
        key = st.spec.key
        self.fresh.add(key)
        for ch in out.hosts:
            if ch.up and ch.was_up is False:
                self._outage(*key, ch.host, ch.since, now, (st.hosts[ch.host].last_bad or ch.result).summary)
        if old_status == "fail" and st.status == "ok":
            self._outage(*key, None, old_first, now, old_summary)
        if (old_status == st.status == "ok" and not out.hosts and not out.fires and not counting
                and all(map(_OK, results.values()))):
            self.stale = True  # steady: only last-check times and the ok count moved (saved every STALE_SAVE_S)
        else:
            self.dirty.set()

    def _outage(self, group: str, service: str, host: str | None, start: float, end: float, summary: str,
                note: str = "") -> None:
        entry = {"group": group, "service": service, "host": host, "start": start, "end": end,
                 "duration_s": round(end - start, 3), "summary": summary}
        if note:
            entry["note"] = note
        self.state.add_downtime(entry)

    def _passive(self, st: ServiceState, now: float, results: dict[str, Result], output: str | None,
                 retval: int) -> None:
        assert self.d.runner is not None
        self.d.runner.passive(st, now, results, output, retval)

    # -- IPVS and alerts ----------------------------------------------------------------

    def health(self, watch: tuple[str, str], host: str, up: bool | None) -> bool | None:
        if watch not in self.fresh:
            return None  # restored state is history, not health: adopt the kernel's entry
        return up

    def allowed(self, st: ServiceState, fires: list[Fire]) -> list[Fire]:
        g, s = st.spec.key
        why = ("service disabled" if self.state.is_disabled("service", f"{g}:{s}")
               else "watch disabled" if self.state.is_disabled("watch", g) else None)
        if why is None or not fires:
            return fires
        for f in fires:
            self.log.info("alert.suppressed", group=g, service=s, type=f.kind, alert=f.alert.name, reason=why)
        return []

    def alert_done(self, st: ServiceState, fire: Fire, now: float, task: "asyncio.Task[bool]") -> None:
        ok = not task.cancelled() and task.exception() is None and bool(task.result())
        g, s = st.spec.key
        self.state.add_history({"time": now, "group": g, "service": s, "type": fire.kind, "alert": fire.alert.name,
                                "args": list(fire.alert.args), "period": fire.period, "summary": fire.summary,
                                "ok": ok})
        if self.metrics is not None:
            self.metrics.alert(g, s, fire.kind, ok)
        self.dirty.set()

    # -- operator commands (the API calls these) ------------------------------------------

    def exists(self, kind: persist.Kind, name: str) -> bool:
        cfg = self.d.cfg
        assert cfg is not None
        if kind == "host":
            return any(name in hs for hs in cfg.hostgroups.values())
        if kind == "service":
            g, _, s = name.partition(":")
            return (g, s) in cfg.services
        return name in cfg.hostgroups

    def _host_services(self, host: str) -> list[tuple[str, str]]:
        assert self.d.cfg is not None
        return [k for k, st in self.d.states.items() if host in self.d.cfg.hosts(st.spec)]

    async def disable(self, kind: persist.Kind, name: str, reason: str = "", for_s: float | None = None,
                      by: str = "") -> persist.Disabled:
        if not self.exists(kind, name):
            raise KeyError(f"no such {kind} {name!r}")
        now = time.time()
        d = self.state.disable(kind, name, reason, now, now + for_s if for_s else None, by)
        self.log.warning("control.disabled", kind=kind, name=name, reason=reason, until=d.until, by=by)
        if kind == "host":
            for key in self._host_services(name):
                st = self.d.states[key]
                hs = st.hosts.pop(name, None)
                if hs is not None and hs.up is False:
                    self._outage(key[0], key[1], name, hs.since, now,
                                 hs.last_bad.summary if hs.last_bad else "down", note="disabled")
                self.run_now(key)
            if self.d.lvs is not None:
                self.d.lvs.poke()
        self.dirty.set()  # wakes housekeeping to time the expiry (the save clears it: no second save)
        await self.save()
        return d

    async def enable(self, kind: persist.Kind, name: str, by: str = "") -> bool:
        if not self.state.enable(kind, name):
            return False
        self.log.warning("control.enabled", kind=kind, name=name, by=by)
        self._enabled(kind, name)
        await self.save()
        return True

    def _enabled(self, kind: str, name: str) -> None:
        if kind == "host":
            for key in self._host_services(name):
                self.run_now(key)
            if self.d.lvs is not None:
                self.d.lvs.poke()

    def expire(self, now: float) -> None:
        for kind, name, d in self.state.expire(now):
            self.log.warning("control.enabled", kind=kind, name=name, reason="disable expired", since=d.since)
            if self.d.runner is not None:
                self._enabled(kind, name)
            self.dirty.set()

    async def ack(self, key: tuple[str, str], comment: str, by: str = "") -> None:
        st = self.d.states[key]
        if st.status != "fail":
            raise ValueError(f"{key[0]}:{key[1]} is not failing (status {st.status}); nothing to acknowledge")
        st.acked = comment
        self.state.acks[persist.service_key(key)] = persist.Ack(comment, time.time(), by)
        self.log.warning("control.ack", group=key[0], service=key[1], comment=comment, by=by)
        await self.save()

    def run_now(self, key: tuple[str, str]) -> asyncio.Future[None]:
        """Restart the service's timer with no delay: the check runs now (one in flight is cancelled)."""
        st = self.d.states.get(key)
        if st is None or self.d.runner is None:
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            fut.set_result(None)
            return fut
        fut = self.d.readiness.wait(key)
        self.d.runner.schedule(st.spec, 0.0)
        return fut

    async def test_now(self, key: tuple[str, str]) -> None:
        st = self.d.states[key]
        await asyncio.wait_for(self.run_now(key), st.spec.timeout + 5.0)

    def trap(self, key: tuple[str, str], ok: bool, summary: str, detail: str = "",
             hosts: list[str] | None = None) -> None:
        """A passive result: an external agent's word for the whole service. Failing hosts
        are `hosts`, else the group's hosts named in the summary, else all (mon's rule)."""
        st = self.d.states[key]
        targets = self.targets(st.spec)
        now = time.time()
        summary, detail = _cut(summary, MAX_TRAP_SUMMARY), _cut(detail, MAX_TRAP_DETAIL)
        self.traps[key] = now
        if ok:
            results = {h: Result(True, summary) for h in targets}
        else:
            words = set(summary.split())
            failing = set(hosts or [h for h in targets if h in words] or targets)
            results = {h: Result(False, summary or "trap: failure", detail) if h in failing else Result(True, "")
                       for h in targets}
        self.log.info("trap.received", group=key[0], service=key[1], ok=ok, summary=summary)
        output = summary + ("\n" + detail if detail else "")
        self._passive(st, now, results, output, 0 if ok else 1)

    # -- the pool policy's operator state (ipvs/owner.py asks it on every reconcile) ------------

    def operator(self, vs: "VirtualServiceSpec", rs: "RealServerSpec") -> Operator:
        """A disabled host is an operator disable, a drain (of the host everywhere, or in
        the virtual services watching GROUP) an operator drain."""
        st = self.state
        d = st.drains.get(rs.host) if st.drains else None
        if d is None and st.drains:
            d = st.drains.get(f"{vs.watch[0]}/{rs.host}")
        disabled = st.is_disabled("host", rs.host) is not None
        if d is None:
            return Operator(disabled=True) if disabled else NO_OPERATOR
        return Operator(disabled=disabled, drained=True, drain_deadline=d.deadline, force=d.force)

    @staticmethod
    def _drains(d: persist.Drain) -> "Callable[[VirtualServiceSpec, RealServerSpec], bool]":
        """Which (virtual service, real server) a drain covers."""
        return lambda vs, rs: rs.host == d.host and (d.group is None or vs.watch[0] == d.group)

    async def drain(self, host: str, group: str | None, timeout: float | None, force: bool = False,
                    reason: str = "", by: str = "") -> persist.Drain:
        """Drain a real server: KeyError when no virtual service uses it (in GROUP),
        Refused when the depool threshold would refuse it and it is not forced."""
        lvs = self.d.lvs
        assert self.d.cfg is not None
        now = time.time()
        d = persist.Drain(host, group, now, now + timeout if timeout else None, force, reason, by)
        covers = self._drains(d)
        if lvs is None or not any(covers(vs, rs) for vs in self.d.cfg.virtual_services for rs in vs.reals):
            where = f" of hostgroup {group!r}" if group is not None else ""
            raise KeyError(f"no virtual service has a real server {host!r}{where}")
        if not force:
            def would(vs: "VirtualServiceSpec", rs: "RealServerSpec") -> Operator:
                o = self.operator(vs, rs)
                return replace(o, drained=True, drain_deadline=d.deadline) if covers(vs, rs) else o

            refused = lvs.refused(would, covers)
            if refused:
                raise Refused("\n".join(refused))
        self.state.drains[d.name] = d
        self.log.warning("control.drained", name=d.name, timeout=timeout, force=force, reason=reason, by=by)
        await lvs.reconcile("drain")  # weight 0 now, not at the next health change
        await self.save()
        return d

    async def undrain(self, host: str, group: str | None, by: str = "") -> bool:
        name = host if group is None else f"{group}/{host}"
        if self.state.drains.pop(name, None) is None:
            return False
        self.log.warning("control.undrained", name=name, by=by)
        if self.d.lvs is not None:
            await self.d.lvs.reconcile("undrain")
        await self.save()
        return True

    # -- persistence, status ------------------------------------------------------------------

    def snapshot(self) -> AsyncIterator[bytes]:
        """The state file's content, built for this save only and written as it is built
        (kept, the services' part would be the biggest thing in the heap:
        docs/performance.md), SAVE_SLICE services per loop pass."""
        for k in list(self.state.acks):
            g, _, s = k.partition(":")
            st = self.d.states.get((g, s))
            if st is None or st.acked is None:
                del self.state.acks[k]  # recovered (mon clears the ack) or removed
        states = list(self.d.states.values())  # not the items: a tuple each (0.6 MiB at 10,000)

        async def pieces() -> AsyncIterator[bytes]:
            for i in range(0, len(states), SAVE_SLICE):
                if i:
                    await asyncio.sleep(0)
                yield persist.services_json([(st.spec.key, st) for st in states[i:i + SAVE_SLICE]])

        return persist.stream(self.state.to_json(), pieces())

    async def save(self) -> bool:
        if self.store is None:
            return False
        self.dirty.clear()
        self.stale, self.saved_at = False, time.monotonic()
        async with self.save_lock:  # one snapshot at a time: an older one must not be written last
            ok = await self.store.save_stream(self.snapshot())
        self.unsaved = not ok  # the API tells an operator whose change is in memory only
        return ok

    async def _housekeeping(self) -> None:
        """Woken by a change (`dirty`: a state, an operator's command) or when something
        falls due, not every second: each wake-up of an idle daemon costs CPU
        (docs/performance.md), and the status line counts every service."""
        while True:
            try:
                async with asyncio.timeout(self._quiet_for()):  # wait_for would start a task each time
                    await self.dirty.wait()
            except TimeoutError:
                pass
            self.expire(time.time())
            self.d.readiness.send_status()
            if self.dirty.is_set():
                await asyncio.sleep(SAVE_DELAY_S)
                await self.save()
            elif self.stale and time.monotonic() - self.saved_at >= STALE_SAVE_S:
                await self.save()

    def _quiet_for(self) -> float | None:
        """Seconds until housekeeping is due unasked (None: nothing is): a disable that
        expires, or the steady-state save when steady checks wait to be saved (without
        them that time passed and stayed past, and this loop spun)."""
        due = [self.saved_at + STALE_SAVE_S - time.monotonic()] if self.stale else []
        due += [d.until - time.time() for kind in self.state.disabled.values() for d in kind.values()
                if d.until is not None]
        return max(min(due), 0.0) if due else None

    def counts(self) -> dict[str, int]:
        c = {"services": len(self.d.states), "ok": 0, "fail": 0, "untested": 0, "hosts_down": 0, "acked": 0}
        for st in self.d.states.values():
            c[st.status] += 1
            c["hosts_down"] += len(st.failing_hosts)
            c["acked"] += st.acked is not None
        c["disabled"] = sum(len(v) for v in self.state.disabled.values())
        return c

    def status_line(self) -> str:
        c = self.counts()
        return (f"{c['services']} services: {c['ok']} ok, {c['fail']} failing, {c['untested']} untested; "
                f"{c['hosts_down']} host checks down; {c['disabled']} disabled; {c['acked']} acked")


# A trap's text is kept (status, history, state.json) and handed to alerts: bounded, so a
# client sending megabytes per trap cannot grow the daemon and its state file without end.
MAX_TRAP_SUMMARY = 1024
MAX_TRAP_DETAIL = 16 * 1024


def _cut(text: str, most: int) -> str:
    if len(text) <= most:
        return text
    mark = f" [truncated by pymon: {len(text)} characters in all]"
    return text[:most - len(mark)] + mark
