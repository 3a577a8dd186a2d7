"""The one owner of the kernel's IPVS table: wanted = config × health × pool policy,
applied as a diff.

`plan`, `adopt`, `fingerprint` and `quorum_step` are pure; `LvsOwner` does the I/O: it
adopts what the kernel holds at start, reconciles on every health change, reload,
operator command and policy deadline, and re-reads the kernel every `resync` seconds to
repair drift (someone ran `ipvsadm -C`).

A reconcile plans only the virtual services whose inputs changed since their last plan
(`LvsOwner._select`) and diffs only those when the kernel holds what the last reconcile
left: a real server behind many VIPs costs its own services, not the whole table. Every
other service keeps its last result: the policy is a fixed point until its
`next_change_at`, so planning it again would give the same table, decisions and no
events.

Per virtual service the pool policy (policy.py, docs/pool-policy.md) decides each real
server's state and weight; the owner keeps its decisions between calls (and across
reloads: they are keyed by the service key and the real server's address and port).
They are not written to disk: after a restart the kernel table is the record of what
was pooled (`adopt`), so a server that was pooled down stays pooled until its health is
known again, and a failed server that had been removed is not brought back.
"""

from __future__ import annotations

import asyncio
import math
import time
import zlib
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Iterable, Iterator, Mapping, Protocol, Sequence

from pymon.ipvs import policy
from pymon.ipvs.policy import Decision, Operator, PoolResult, PoolSpec
from pymon.model.config import IpvsOptions, RealServerSpec, VirtualServiceSpec
from pymon.ipvs.table import Dest, IPVSError, MemoryTable, Op, Service, ServiceKey, Table, after, diff, format_ipvsadm

Health = Callable[[tuple[str, str], str], "bool | None"]  # (group, service), host -> up? None = unknown
OperatorOf = Callable[[VirtualServiceSpec, RealServerSpec], Operator]  # what the operator asked (ops/control.py)
# (group, service), host -> the fraction of its configured weight the server asked for
# (an agent's report: probes/agent.py; 0 = drain); None = the configured weight
WeightOf = Callable[[tuple[str, str], str], "float | None"]
MAX_WEIGHT = 65535  # ipvsadm's bound; an agent may ask for up to 256 %


def _no_report(watch: tuple[str, str], host: str) -> float | None:
    return None


def weighted(dest: Dest, factor: float | None) -> Dest:
    """`dest` at `factor` × the weight the policy gave it (an agent's report), rounded."""
    return dest if factor is None else replace(dest, weight=min(MAX_WEIGHT, round(dest.weight * factor)))

DRAIN_POLL_S = 1.0
"""While a server drains until idle, the kernel is re-read this often to see its active
connections fall to 0 (only then: an idle owner reads the kernel every `resync`)."""


class Backend(Protocol):
    async def read(self) -> Table: ...
    async def apply(self, ops: Any) -> list[str]: ...
    async def close(self) -> None: ...


@dataclass(frozen=True)
class Override:
    """A real server set up or down by the classic `lvs.alert` arguments."""

    service: Service
    dest: Dest
    up: bool
    quiesce: bool = False


def apply_overrides(table: Table, actual: Table,
                    overrides: Mapping[tuple[ServiceKey, tuple[str, int]], Override], frozen: bool = False) -> Table:
    """The classic `lvs.alert` arguments on top of the wanted table (they win), except
    that while the director is at fault (`frozen`) a down alert takes nothing away: its
    check said nothing about the real server, as for the pool policy's own freeze."""
    if not overrides:
        return table
    table = dict(table)
    for (skey, dkey), ov in overrides.items():
        if not ov.up and skey not in table and skey not in actual:
            continue  # lvs.alert's `ipvsadm -d` (`-e -w 0`) fails there: it never creates the service
        svc, dests = table.get(skey) or actual.get(skey) or (ov.service, {})
        dests = dict(dests)
        if ov.up:
            dests[dkey] = ov.dest
        elif frozen and dkey in (actual.get(skey) or (None, {}))[1]:
            dests[dkey] = actual[skey][1][dkey]
        elif ov.quiesce:
            dests[dkey] = replace(ov.dest, weight=0)
        else:
            dests.pop(dkey, None)
        table[skey] = (svc, dests)
    return table


def pool_spec(vs: VirtualServiceSpec) -> PoolSpec:
    """The policy's view of a virtual service; `quiescent` unset means the policy's
    default (true under the hashing schedulers sh and mh)."""
    quiesce = vs.quiescent if vs.quiescent is not None else policy.quiesce_default(vs.service.scheduler)
    return PoolSpec(vs.name, tuple(policy.Member(rs.dest.key, rs.host, rs.dest.weight) for rs in vs.reals),
                    min_pooled=vs.min_pooled, quiesce_failed=quiesce, drain_timeout=vs.drain_timeout,
                    slowstart=vs.slowstart)


def adopt(spec: PoolSpec, have: Mapping[tuple[str, int], Dest], now: float,
          operator: Mapping[tuple[str, int], Operator] | None = None) -> dict[tuple[str, int], Decision]:
    """Decisions for members the owner has none for (daemon start, or new in a reload),
    read off the kernel: present with a weight is in the pool (state unknown until its
    health is known: its entry is kept), present at weight 0 is out (quiesced, or
    draining), absent is out. So a restart neither drops a pooled server nor brings back
    a failed one the previous run had removed."""
    ops = operator or {}
    out: dict[tuple[str, int], Decision] = {}
    for m in spec.members:
        d = have.get(m.key)
        if d is None:
            out[m.key] = Decision("removed", 0, now, cause="absent")
        elif d.weight > 0:
            out[m.key] = Decision("unknown", None, now)
        elif spec.quiesce_failed:
            out[m.key] = Decision("quiesced", 0, now, cause="absent")
        else:
            o = ops.get(m.key, policy.NO_OPERATOR)
            if o.drained:
                out[m.key] = Decision("draining", 0, now, cause="drained", drain_deadline=o.drain_deadline,
                                      drain_until_idle=o.drain_until_idle)
            else:
                out[m.key] = Decision("draining", 0, now, cause="failed", drain_deadline=now + spec.drain_timeout)
    return out


class _Active(Mapping[tuple[str, int], "int | None"]):
    """A service's active connections per real server, as the policy asks for them
    (only for draining members), read off the kernel's entries when asked."""

    __slots__ = ("have",)

    def __init__(self, have: Mapping[tuple[str, int], Dest]) -> None:
        self.have = have

    def __getitem__(self, key: tuple[str, int]) -> int | None:
        return self.have[key].active_conns

    def __iter__(self) -> Iterator[tuple[str, int]]:
        return iter(self.have)

    def __len__(self) -> int:
        return len(self.have)


@dataclass
class Plan:
    """What one reconcile wants: the table, and the policy's result per virtual service."""

    table: Table
    results: dict[ServiceKey, PoolResult]


def plan(vss: Iterable[VirtualServiceSpec], health: Mapping[tuple[str, str], Mapping[str, policy.Health]],
         actual: Table, previous: Mapping[ServiceKey, Mapping[tuple[str, int], Decision]], now: float, *,
         operators: Mapping[ServiceKey, Sequence[Operator]] | None = None, frozen: bool = False,
         started_at: float = -math.inf,
         first_round: float = 0.0, specs: Mapping[ServiceKey, PoolSpec] | None = None,
         weight_of: WeightOf = _no_report) -> Plan:
    """The table the kernel should hold: each virtual service's members as the policy
    decides (`unknown` keeps the kernel's entry, `removed` is absent), plus the sorry
    server when nothing pooled is up. `health` is per watch, per host; `operators` per
    service, the operator's state of each real server in configuration order (none: no
    operator state); `weight_of` scales the weight of a server the policy pools (an
    agent's report)."""
    table: Table = {}
    results: dict[ServiceKey, PoolResult] = {}
    for vs in vss:
        key = vs.service.key
        spec = (specs or {}).get(key) or pool_spec(vs)
        have = actual.get(key, (vs.service, {}))[1]
        ops = dict(zip([m.key for m in spec.members], operators[key])) if operators is not None else {}
        prev = previous.get(key) or {}
        if any(m.key not in prev for m in spec.members):
            prev = {**adopt(spec, have, now, ops), **prev}
        res = policy.decide(spec, health.get(vs.watch, {}), now=now, previous=prev, operator=ops,
                            active=_Active(have), started_at=started_at, first_round=first_round, frozen=frozen)
        dests: dict[tuple[str, int], Dest] = {}
        for rs in vs.reals:
            dk = rs.dest.key
            d = res.decisions[dk]
            if d.state == "removed":
                continue
            if d.weight is None:  # unknown: the kernel's entry, if any, stays as it is
                if dk in have:
                    dests[dk] = have[dk]
            else:  # the configured entry itself when the weight is its own (a replace() validates again)
                dest = rs.dest if d.weight == rs.dest.weight else replace(rs.dest, weight=d.weight)
                dests[dk] = weighted(dest, weight_of(vs.watch, rs.host) if d.weight else None)
        # counts.sorry: nothing pooled is up; and no member's health is still unknown (one adopted
        # as absent may yet be up: a sorry server added at start would go again a check later)
        hs = health.get(vs.watch, {})
        if vs.sorry is not None and res.counts.sorry and all(
                hs.get(rs.host, policy.UNKNOWN).up is not None for rs in vs.reals):
            dests[vs.sorry.key] = vs.sorry
        table[key] = (vs.service, dests)
        results[key] = res
    return Plan(table, results)


def fingerprint(svc: Service, dests: Mapping[tuple[str, int], Dest]) -> int:
    """A 32-bit digest of a service as the kernel holds it: scheduler, flags, persistence,
    and the real servers in the kernel's own order with forwarding and weight. Two
    directors meant to agree (active-active, or a standby about to take over) hash flows
    the same way only if this is equal: the order matters to sh/mh."""
    text = f"{svc.scheduler}|{svc.kernel_flags}|{svc.persistence}|{svc.netmask}|" + ";".join(
        f"{d.address},{d.port},{d.forwarding},{d.weight}" for d in dests.values())
    return zlib.crc32(text.encode())


def quorum_step(has_quorum: bool, healthy: int, quorum: int, hysteresis: int) -> bool:
    """keepalived's rule: lost below quorum - hysteresis, regained at quorum + hysteresis."""
    if has_quorum:
        return healthy >= quorum - hysteresis
    return healthy >= quorum + hysteresis


@dataclass(frozen=True)
class _Index:
    """A configuration as the owner walks it: built again when `vss` changed."""

    vss: tuple[VirtualServiceSpec, ...]
    specs: dict[ServiceKey, PoolSpec]
    hosts: dict[tuple[str, str], tuple[str, ...]]  # watch -> its hosts that real servers use
    users: dict[tuple[tuple[str, str], str], list[int]]  # (watch, host) -> the vss (indexes) it drives

    @classmethod
    def of(cls, vss: tuple[VirtualServiceSpec, ...]) -> "_Index":
        hosts: dict[tuple[str, str], dict[str, None]] = {}
        users: dict[tuple[tuple[str, str], str], list[int]] = {}
        for i, vs in enumerate(vss):
            for rs in vs.reals:
                hosts.setdefault(vs.watch, {})[rs.host] = None
                u = users.setdefault((vs.watch, rs.host), [])
                if not u or u[-1] != i:
                    u.append(i)
        return cls(vss, {vs.service.key: pool_spec(vs) for vs in vss},
                   {w: tuple(hs) for w, hs in hosts.items()}, users)


_UNPLANNED: Any = object()  # _planned_on's default: a service never planned (or after a failed apply)


@dataclass
class LvsOwner:
    opts: IpvsOptions
    backend: Backend
    log: Any
    dry_run: bool = False
    vss: list[VirtualServiceSpec] = field(default_factory=list)
    health: Health = lambda watch, host: None
    alert: Callable[[VirtualServiceSpec, bool, int], None] = lambda vs, ok, w: None
    operator: OperatorOf = lambda vs, rs: policy.NO_OPERATOR
    weight_of: WeightOf = _no_report
    frozen: Callable[[], bool] = lambda: False  # a director self-fault: the policy holds the pools

    def __post_init__(self) -> None:
        # told the wanted table after each reconcile that planned, and the services it can
        # have changed (None: all) (ops/timeline.py)
        self.observe: Callable[[Table, float, Iterable[ServiceKey] | None], None] = lambda table, now, changed: None
        self.overrides: dict[tuple[ServiceKey, tuple[str, int]], Override] = {}
        self.quorum: dict[str, bool] = {}
        self.wake = asyncio.Event()
        # pokes counted, and the count the last plan's health read saw: a poke whose wake
        # run() cleared before a resync (it clears the wake before every reconcile) still
        # makes that resync plan, as the health change it is (reconcile)
        self.pokes = 0
        self.planned_pokes = 0
        self.lock = asyncio.Lock()
        self.last_wanted: Table = {}
        self.last_actual: Table = {}
        self.known = False  # last_actual is what the kernel holds (read, or applied without error)
        self.resync_preempted = False
        self.planned_frozen = False  # the freeze the last plan saw (_settled)
        enabled = getattr(self.log, "is_enabled_for", None)
        self.debug = enabled(10) if enabled else True  # build the ipvs.table line only when it is logged
        self.last_errors: list[str] = []
        self.healthy: dict[str, int] = {}
        self.error_count = 0  # every failed read or change since start (pymon_ipvs_errors_total)
        # the pool policy's memory: its decisions per virtual service (passed back on the
        # next call), the results for status and metrics, refusals counted since start
        self.decisions: dict[ServiceKey, dict[tuple[str, int], Decision]] = {}
        self.results: dict[ServiceKey, PoolResult] = {}
        self.refusals: dict[ServiceKey, int] = {}
        self.next_change_at: float | None = None
        self.started_at = time.time()
        self.first_round_at: float | None = None  # slow start ramps only after the first round of checks
        self.last_up: dict[tuple[tuple[str, str], str], float] = {}  # when each host was last seen up
        self._ix = _Index.of(())
        # what each service's last plan saw, to plan again only what changed (_select): the
        # inputs of every service at once (configuration, freeze, first round), each host's
        # health and agent weight, each service's operator states, and its kernel entry
        # (as the apply after that plan left it); `planned` is the policy's table (no overrides)
        self.planned: Table = {}
        self._global: tuple[Any, ...] = ()
        self._sigs: dict[tuple[tuple[str, str], str], tuple[Any, ...]] = {}
        self._operators: dict[ServiceKey, tuple[Operator, ...]] = {}
        self._planned_on: dict[ServiceKey, Any] = {}
        self._due: dict[ServiceKey, float] = {}  # each service's next_change_at
        self._polled: set[ServiceKey] = set()  # services draining a member until idle: the counters decide
        # the kernel table could not be read: said once (ipvs.unavailable or ipvs.error),
        # not on every resync and health change, until it can be read again (ipvs.recovered)
        self.read_error: str | None = getattr(self.backend, "unavailable", None)

    @property
    def owned(self) -> set[ServiceKey]:
        return {vs.service.key for vs in self.vss} | {k for k, _ in self.overrides}

    def poke(self) -> None:
        self.pokes += 1
        self.wake.set()

    def _index(self) -> _Index:
        """The policy's specs and the host index, built again only when the configuration changed."""
        vss = tuple(self.vss)
        if self._ix.vss != vss:  # element by element: identity first
            self._ix = _Index.of(vss)
        return self._ix

    def _health(self, now: float) -> dict[tuple[str, str], dict[str, policy.Health]]:
        """Each watch's hosts (those real servers use), once each however many services share them."""
        out: dict[tuple[str, str], dict[str, policy.Health]] = {}
        for watch, hosts in self._index().hosts.items():
            hs = out[watch] = {}
            for host in hosts:
                up = self.health(watch, host)
                if up:
                    self.last_up[(watch, host)] = now
                hs[host] = policy.Health(up, now, self.last_up.get((watch, host)))
        return out

    def _first_round(self) -> float:
        return (self.first_round_at - self.started_at) if self.first_round_at is not None else math.inf

    def _operators_of(self, operator: OperatorOf) -> dict[ServiceKey, tuple[Operator, ...]]:
        """What `operator` says of each real server, per service (asked once per reconcile)."""
        return {vs.service.key: tuple([operator(vs, rs) for rs in vs.reals]) for vs in self._index().vss}

    def plan(self, actual: Table, now: float, operators: Mapping[ServiceKey, Sequence[Operator]],
             vss: list[VirtualServiceSpec] | None = None,
             health: Mapping[tuple[str, str], Mapping[str, policy.Health]] | None = None) -> Plan:
        """The policy on the current inputs with `operators` (`_operators_of`), for `vss`
        (default: every virtual service)."""
        return plan(self.vss if vss is None else vss, self._health(now) if health is None else health, actual,
                    self.decisions, now, operators=operators, frozen=self.frozen(),
                    started_at=self.started_at, first_round=self._first_round(), specs=self._index().specs,
                    weight_of=self.weight_of)

    def _select(self, actual: Table, now: float,
                health: Mapping[tuple[str, str], Mapping[str, policy.Health]]
                ) -> tuple[list[VirtualServiceSpec], bool]:
        """The virtual services whose plan can differ from their last, and whether that is
        all of them: every one when an input of all changed (configuration, freeze,
        first round) or the last apply failed; else those with a host whose health or
        agent weight changed, an operator state that changed, a kernel entry other than
        the one their last plan left, a deadline due (drain, slow-start step), or a member
        draining until idle (the kernel's counters decide). A host's health counts as its
        up/down and, when not up, when it was last up (it ranks which failed member stays
        pooled; `refused` may have seen it up in between); nothing else of it reaches the
        policy."""
        ix = self._index()
        sigs = {(w, h): (x.up, None if x.up else x.last_up, self.weight_of(w, h))
                for w, hs in health.items() for h, x in hs.items()}
        operators = self._operators_of(self.operator)
        glob = (ix.vss, self.frozen(), self._first_round())
        if not self._global or self._global[0] is not ix.vss or self._global[1:] != glob[1:]:
            chosen = set(range(len(ix.vss)))
        else:
            chosen = set()
            for pair, sig in sigs.items():
                if self._sigs.get(pair) != sig:
                    chosen.update(ix.users.get(pair, ()))
            seen_on, seen_ops, due, polled = self._planned_on, self._operators, self._due, self._polled
            for i, vs in enumerate(ix.vss):
                if i in chosen:
                    continue
                key = vs.service.key
                seen = seen_on.get(key, _UNPLANNED)
                if seen is _UNPLANNED or operators[key] != seen_ops[key] or key in polled \
                        or due.get(key, math.inf) <= now:
                    chosen.add(i)
                    continue
                have = actual.get(key)
                if have is not seen:
                    if have == seen:  # the same entry read again (counters take no part)
                        seen_on[key] = have
                    else:
                        chosen.add(i)
        self._global, self._sigs, self._operators = glob, sigs, operators
        return [vs for i, vs in enumerate(ix.vss) if i in chosen], len(chosen) == len(ix.vss)

    def refused(self, operator: OperatorOf, changed: Callable[[VirtualServiceSpec, RealServerSpec], bool]
                ) -> list[str]:
        """The `depool_refused` reasons an operator state would meet now, for the members
        `changed` selects: an API rejects the command with them instead of letting it
        stand (the policy would keep such a command waiting for the threshold)."""
        res = self.plan(self.last_actual, time.time(), self._operators_of(operator)).results
        hosts = {(vs.name, rs.host) for vs in self.vss for rs in vs.reals if changed(vs, rs)}
        return [f"{e.vs} {e.host}: {e.detail}" for r in res.values() for e in r.events
                if e.kind == "depool_refused" and (e.vs, e.host) in hosts]

    async def reconcile(self, reason: str, vss: list[VirtualServiceSpec] | None = None) -> list[Op]:
        """Read the kernel, let the policy decide, apply the difference, log it.

        A health change does not read: the kernel holds what the last read or clean
        apply left (`last_actual`), so it costs only its own ops; drift is the
        resync's to find. `vss`: a reload's virtual services, taken once the lock is
        held, so a reconcile already running (a resync's read) ends on the configuration
        it began with and the reload's changes are logged as the reload's.
        """
        async with self.lock:
            if vss is not None:
                self.vss = vss
            try:
                actual = await self._actual(reason)
            except IPVSError as e:
                if str(e) != self.read_error:
                    self.log.error("ipvs.error", error=str(e), reason=reason,
                                   action="will retry; checks and alerts keep running")
                self.read_error = str(e)
                self.last_errors = [str(e)]
                self.error_count += 1
                self.known = False
                return []
            if self.read_error is not None:
                self.log.info("ipvs.recovered", reason=reason, was=self.read_error)
                self.read_error = None
            if reason == "resync" and self.pokes != self.planned_pokes:
                # health changed since the last plan (while the kernel was read, or its wake
                # was taken by this resync): what this applies is that change, not drift
                reason = "health"
                self.wake.clear()
            if reason == "first round" and self.first_round_at is None:
                self.first_round_at = time.time()
            if self._settled(reason, actual):
                # the same table: only its counters are newer; the services' entries are
                # the ones their plans left, read again
                for key, seen in self._planned_on.items():
                    if seen is self.last_actual.get(key):
                        self._planned_on[key] = actual.get(key)
                self.last_actual = actual
                return []
            now = time.time()
            self.planned_pokes = self.pokes  # no await until the health is read
            health = self._health(now)
            todo, whole = self._select(actual, now, health)
            p = self.plan(actual, now, self._operators, vss=todo, health=health)
            self._take(todo, p, now, whole)
            wanted = apply_overrides(self.planned, actual, self.overrides, self.frozen())
            # not read: the kernel holds what the last reconcile's clean apply left (an
            # override comes with a reconcile of its own, which reads; a failed op makes
            # the next plan whole), so only the services planned now can differ from it
            changed = None if whole or actual is not self.last_actual else p.table.keys()
            ops = diff(wanted, actual, self.owned) if changed is None else diff({k: wanted[k] for k in changed}, actual)
            # drift: what changed in the kernel since pymon last read it (someone ran
            # ipvsadm), as opposed to what health or the policy changed meanwhile
            drift = diff(self.last_actual, actual, self.owned) if self.last_actual and actual is not self.last_actual \
                else []
            self.last_wanted, self.last_actual = wanted, actual
            self.planned_frozen = self.frozen()
            self.observe(wanted, now, changed)
            for op in ops:
                self.log.info("ipvs.would_change" if self.dry_run else "ipvs.change", op=str(op), reason=reason)
            errors = await self.backend.apply(ops) if ops else []
            for err in errors:
                self.log.error("ipvs.error", error=err, reason=reason)
            if ops and self.debug:
                # the services this changed (debug: at thousands of destinations the
                # whole table would be a line of hundreds of kilobytes per change)
                changed = {op.service.key for op in ops}
                self.log.debug("ipvs.table", dry_run=self.dry_run,
                               table=format_ipvsadm({k: v for k, v in wanted.items() if k in changed}).splitlines())
            self.last_errors = errors
            self.error_count += len(errors)
            if ops and drift:
                self.log.warning("ipvs.repaired", changes=len(drift), reason=reason,
                                 note="the kernel table differed from what pymon set (drift)")
            if errors:  # the kernel refused something: read back what it holds, plan everything next time
                back = await self._read_quiet()
                self.last_actual, self.known = (back, True) if back is not None else (actual, False)
                self._planned_on = {}
            else:  # every op acknowledged: the kernel holds exactly this
                self.last_actual, self.known = after(actual, ops), True
                if whole:
                    self._planned_on = {}
                for key in p.table:
                    self._planned_on[key] = self.last_actual.get(key)
            self._quorum(todo)
            return ops

    def _settled(self, reason: str, actual: Table) -> bool:
        """A resync that finds the kernel exactly as the last reconcile left it, with no
        failed op to retry and the freeze as it was, would plan the same table again:
        every input that can change between resyncs (health, operator commands, reloads,
        the policy's own deadlines, the self-check) wakes the owner with its own reason
        (a poke not yet planned turns a resync into the health change it is: reconcile).
        Skipping the plan and the diff keeps a resync at the cost of its read
        (docs/performance.md, IPVS at scale)."""
        return (reason == "resync" and self.known and not self.last_errors and actual == self.last_actual
                and self.frozen() == self.planned_frozen)

    def _take(self, vss: list[VirtualServiceSpec], p: Plan, now: float, whole: bool) -> None:
        """Keep the policy's decisions for the next call, log its events (one line each:
        the policy emits them on transitions only), and time the next wake-up. `p` is
        the plan of `vss`; the other services keep theirs (`whole`: there are none, and
        services no longer configured are forgotten)."""
        if whole:
            self.planned, self.decisions, self.results, self.healthy = {}, {}, {}, {}
            self._due, self._polled = {}, set()
        self.planned = {**self.planned, **p.table}
        for vs in vss:
            key = vs.service.key
            r = p.results[key]
            self.decisions[key] = r.decisions
            self.results[key] = r
            dests = p.table[key][1]
            # quorum counts the weights the kernel gets (an agent's report scales the
            # policy's), as keepalived counts the current weights
            self.healthy[vs.name] = sum(dests[k].weight for k, d in r.decisions.items()
                                        if d.state == "pooled" and k in dests)
            if r.counts.refusals:
                self.refusals[vs.service.key] = self.refusals.get(vs.service.key, 0) + r.counts.refusals
            for e in r.events:
                self.log.warning(f"pool.{e.kind}", virtual_service=e.vs, host=e.host, detail=e.detail,
                                 pooled=r.counts.pooled, pooled_down=r.counts.pooled_down, need=r.counts.need)
            if r.next_change_at is None:
                self._due.pop(key, None)
            else:
                self._due[key] = r.next_change_at
            if r.counts.draining and any(d.state == "draining" and d.drain_until_idle for d in r.decisions.values()):
                self._polled.add(key)
            else:
                self._polled.discard(key)
        wake = min(self._due.values(), default=None)
        if self._polled:
            wake = min(wake if wake is not None else math.inf, now + DRAIN_POLL_S)
        self.next_change_at = wake

    async def _actual(self, reason: str) -> Table:
        """What the kernel holds: `last_actual` for a health change, else a read.

        A resync's read gives way to a health change that comes in meanwhile (a read
        is a dump of the whole table; the change must not wait for it): the read is
        dropped, the change applied from `last_actual`, and the resync run again
        right after.
        """
        if reason == "health" and self.known:
            return self.last_actual
        if reason != "resync" or not self.known:
            return await self.backend.read()
        read = asyncio.ensure_future(self.backend.read())
        poked = asyncio.ensure_future(self.wake.wait())
        try:
            await asyncio.wait({read, poked}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            poked.cancel()
        if read.done():
            return read.result()
        read.cancel()
        self.resync_preempted = True
        return self.last_actual  # the wake is set: reconcile logs this as the health change it is

    async def _read_quiet(self) -> Table | None:
        try:
            return await self.backend.read()
        except IPVSError:
            return None

    def _quorum(self, vss: list[VirtualServiceSpec]) -> None:
        """Quorum of the services just planned (no other's healthy weight changed)."""
        for vs in vss:
            if not vs.quorum:
                continue
            healthy = self.healthy.get(vs.name, 0)
            old = self.quorum.get(vs.name, True)
            new = quorum_step(old, healthy, vs.quorum, vs.hysteresis)
            self.quorum[vs.name] = new
            if new != old:
                self.log.warning("ipvs.quorum", virtual_service=vs.name, state="regained" if new else "lost",
                                 healthy_weight=healthy, quorum=vs.quorum)
                self.alert(vs, new, healthy)

    async def run(self) -> None:
        """Reconcile whenever poked, when the policy has something due (a drain deadline,
        a slow-start step), and every `resync` seconds regardless: resyncs start `resync`
        seconds apart (start to start), whatever ran between."""
        loop = asyncio.get_running_loop()
        next_resync = loop.time() + self.opts.resync
        while True:
            if self.resync_preempted:  # a health change cut the last resync's read short
                self.resync_preempted = False
                reason = "resync"
            else:
                timeout, reason = next_resync - loop.time(), "resync"
                if self.next_change_at is not None and self.next_change_at - time.time() < timeout:
                    timeout, reason = self.next_change_at - time.time(), "policy"
                try:
                    async with asyncio.timeout(max(timeout, 0.0)):
                        await self.wake.wait()
                    reason = "health"
                except TimeoutError:
                    pass
                if reason == "resync":
                    next_resync = max(next_resync + self.opts.resync, loop.time())
            self.wake.clear()
            await self.reconcile(reason)

    async def set_override(self, service: Service, dest: Dest, up: bool, quiesce: bool) -> None:
        self.overrides[(service.key, dest.key)] = Override(service, dest, up, quiesce)
        ops = await self.reconcile("lvs alert")
        if not up and service.key not in self.last_wanted and self.read_error is None:
            # the service is not there: the script's ipvsadm fails and leaves nothing behind
            self.overrides.pop((service.key, dest.key), None)
        if self.dry_run and getattr(self.backend, "no_kernel_table", False) and not up and not ops:
            # no kernel table to start from: the real server the director's kernel holds
            # is not in the dry-run table, so show the removal lvs.alert makes there
            op = Op("edit", service, replace(dest, weight=0)) if quiesce else Op("del", service, dest)
            self.log.info("ipvs.would_change", op=str(op), reason="lvs alert",
                          note="no kernel table here: what the alert does on a director that has this real server")

    async def stop(self) -> None:
        if self.opts.cleanstop and not self.dry_run:
            async with self.lock:
                try:
                    actual = await self.backend.read()
                except IPVSError as e:
                    self.log.error("ipvs.error", error=str(e), reason="cleanstop")
                else:
                    ops = diff({}, actual, self.owned)
                    for op in ops:
                        self.log.info("ipvs.change", op=str(op), reason="cleanstop")
                    for err in await self.backend.apply(ops):
                        self.log.error("ipvs.error", error=err, reason="cleanstop")
        await self.backend.close()

    def render(self) -> str:
        """Wanted and actual side by side, each in `ipvsadm -Ln` style."""
        return side_by_side(format_ipvsadm(self.last_wanted), format_ipvsadm(self.last_actual))


def side_by_side(left: str, right: str, titles: tuple[str, str] = ("WANTED (config x health)", "ACTUAL (kernel)")) -> str:
    ll, rl = left.splitlines(), right.splitlines()
    width = max([len(x) for x in ll] + [len(titles[0])]) + 3
    rows = [f"{titles[0]:<{width}}{titles[1]}", f"{'-' * len(titles[0]):<{width}}{'-' * len(titles[1])}"]
    for i in range(max(len(ll), len(rl))):
        a = ll[i] if i < len(ll) else ""
        b = rl[i] if i < len(rl) else ""
        mark = "  " if _config_part(a) == _config_part(b) else "≠ "
        rows.append(f"{a:<{width - 2}}{mark}{b}".rstrip())
    return "\n".join(rows)


def _config_part(line: str) -> list[str]:
    """An `ipvsadm -Ln` line without a real server's connection counts (only the kernel has them)."""
    words = line.split()
    return words[:-2] if line.startswith("  ->") and len(words) == 6 else words


async def open_backend(opts: IpvsOptions, dry_run: bool, log: Any) -> tuple[Backend, bool]:
    """The kernel backend, or a MemoryTable seeded from the kernel when dry-running
    (or when IPVS is unavailable and the config asks for `fallback: dry-run`)."""
    from pymon.ipvs.kernel import KernelIPVS

    kernel = KernelIPVS()
    try:
        current = await kernel.read()
    except IPVSError as e:
        await kernel.close()
        kernel.unavailable = str(e)  # type: ignore[attr-defined]  # LvsOwner logs it only once
        if dry_run or opts.fallback == "dry-run":
            log.warning("ipvs.unavailable", error=str(e), action="dry-run: changes are only logged")
            mem = MemoryTable()
            mem.no_kernel_table = True  # type: ignore[attr-defined]  # set_override previews removals
            return mem, True
        log.error("ipvs.unavailable", error=str(e),
                  action="will retry; checks and other alerts keep running (ipvs.fallback: dry-run to silence)")
        return kernel, False
    if dry_run:
        await kernel.close()
        log.info("ipvs.dry_run", note="changes are only logged", adopted=len(current))
        return MemoryTable(current), True
    log.info("ipvs.adopted", services=len(current),
             dests=sum(len(d) for _, d in current.values()))
    return kernel, False

