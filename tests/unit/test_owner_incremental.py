"""The IPVS owner plans only the virtual services whose inputs changed. Random sequences
of health, operator, agent-weight, freeze, clock, drift, override and reload changes
over many services that share hosts: after every step the owner's table, decisions,
counts, events, ops and next wake-up are those of a full plan of every service on the
same inputs, so a service that needed planning and was skipped fails the step; the
status page's timeline, told only the services a change touched, ends as if told all."""

from __future__ import annotations

import random
from dataclasses import replace
from types import SimpleNamespace
from typing import Any

import pytest
from owner_harness import Log

from pymon.ipvs import owner as owner_mod
from pymon.ipvs.owner import DRAIN_POLL_S, LvsOwner, apply_overrides, plan
from pymon.ipvs.policy import NO_OPERATOR, Operator, parse_min_pooled
from pymon.ipvs.table import Dest, MemoryTable, Service, ServiceKey, Stats, Table, diff
from pymon.model.config import IpvsOptions, RealServerSpec, VirtualServiceSpec
from pymon.ops.timeline import Timeline

WATCHES = [("web", "http"), ("web", "tcp"), ("api", "http")]
HOSTS = [f"10.1.0.{i}" for i in range(1, 13)]


class Kernel(MemoryTable):
    """The in-memory twin, keeping what its last read returned (the owner's `actual`)."""

    last_read: Table | None = None

    async def read(self) -> Table:
        self.last_read = await super().read()
        return self.last_read


def services(rng: random.Random, n: int) -> list[VirtualServiceSpec]:
    out = []
    for i in range(n):
        watch = WATCHES[i % len(WATCHES)]
        hosts = rng.sample(HOSTS, rng.randint(2, 6))
        sched = rng.choice(["wrr", "wlc", "sh", "mh"])
        svc = Service(ServiceKey("tcp", f"10.50.0.{i + 1}", 80), sched)
        reals = [RealServerSpec(h, Dest(h, 80, "dr", rng.randint(1, 20))) for h in hosts]
        out.append(VirtualServiceSpec(
            f"vs{i}", svc, watch, reals,
            quiescent=rng.choice([None, True, False]),
            sorry=Dest("10.9.0.1", 80, "dr", 1) if rng.random() < 0.3 else None,
            quorum=rng.choice([0, 0, 5, 15]), hysteresis=rng.choice([0, 1]),
            min_pooled=parse_min_pooled(rng.choice([None, 1, 2, "50%", "30%"])),
            drain_timeout=rng.choice([0.0, 0.0, 3.0, 10.0]), slowstart=rng.choice([0.0, 0.0, 4.0, 20.0])))
    return out


class World:
    """The owner's inputs, and the full plan every step is checked against."""

    def __init__(self, rng: random.Random, monkeypatch: pytest.MonkeyPatch) -> None:
        self.rng = rng
        self.now = 1_000_000.0
        monkeypatch.setattr(owner_mod, "time", SimpleNamespace(time=lambda: self.now))
        self.health: dict[tuple[tuple[str, str], str], bool | None] = {}
        self.ops: dict[tuple[str, str], Operator] = {}
        self.weights: dict[tuple[tuple[str, str], str], float | None] = {}
        self.frozen = False
        self.kernel = Kernel()
        self.timeline, self.full_timeline = Timeline(), Timeline()
        self.o = LvsOwner(IpvsOptions(), self.kernel, Log(), False, services(rng, 40),
                          health=lambda w, h: self.health.get((w, h)),
                          operator=lambda vs, rs: self.ops.get((vs.name, rs.host), NO_OPERATOR),
                          weight_of=lambda w, h: self.weights.get((w, h)), frozen=lambda: self.frozen)
        self.o.observe = self.timeline.record
        self.planned = 0  # services planned over all steps
        self.refusals: dict[ServiceKey, int] = {}
        decide = owner_mod.policy.decide

        def counting(*a: Any, **kw: Any) -> Any:
            self.planned += 1
            return decide(*a, **kw)

        monkeypatch.setattr(owner_mod.policy, "decide", counting)

    async def step(self, reason: str) -> None:
        o = self.o
        previous = dict(o.decisions)
        before = o.last_actual
        n = len(o.log.events)  # type: ignore[attr-defined]
        self.kernel.last_read = None
        ops = await o.reconcile(reason)
        actual = self.kernel.last_read if self.kernel.last_read is not None else before
        # the full plan, with what the owner used: its previous decisions, that table, these inputs
        self.planned, counted = 0, self.planned
        operators = {vs.service.key: [o.operator(vs, rs) for rs in vs.reals] for vs in o.vss}
        full = plan(o.vss, o._health(self.now), actual, previous, self.now, operators=operators,
                    frozen=self.frozen, started_at=o.started_at, first_round=o._first_round(),
                    weight_of=o.weight_of)
        self.planned = counted
        for k, r in full.results.items():
            if r.counts.refusals:
                self.refusals[k] = self.refusals.get(k, 0) + r.counts.refusals
        wanted = apply_overrides(full.table, actual, o.overrides, self.frozen)
        where = f"step {reason!r} at {self.now}"
        assert o.last_wanted == wanted, where
        assert ops == diff(wanted, actual, o.owned), where
        assert o.decisions == {k: r.decisions for k, r in full.results.items()}, where
        # a kept result's refusals are those of the call that made it (the log and the
        # cumulative count have them); every other count is the same
        assert {k: (replace(r.counts, refusals=0), r.next_change_at) for k, r in o.results.items()} == \
            {k: (replace(r.counts, refusals=0), r.next_change_at) for k, r in full.results.items()}, where
        assert o.refusals == self.refusals, where
        events = [(e, kw["virtual_service"], kw["host"], kw["detail"])
                  for e, kw in o.log.events[n:] if e.startswith("pool.")]  # type: ignore[attr-defined]
        assert events == [(f"pool.{e.kind}", e.vs, e.host, e.detail)
                          for r in full.results.values() for e in r.events], where
        wake = [r.next_change_at for r in full.results.values() if r.next_change_at is not None]
        if any(d.state == "draining" and d.drain_until_idle for r in full.results.values()
               for d in r.decisions.values()):
            wake.append(self.now + DRAIN_POLL_S)
        assert o.next_change_at == (min(wake) if wake else None), where
        kernel = await self.kernel.read()  # a service no longer configured is left there, as any not owned
        assert {k: kernel[k] for k in wanted if k in kernel} == wanted and o.last_errors == [], where
        self.full_timeline.record(wanted, self.now)
        assert self.timeline.json() == self.full_timeline.json(), where
        for vs in o.vss:
            r, dests = full.results[vs.service.key], full.table[vs.service.key][1]
            healthy = sum(dests[k].weight for k, d in r.decisions.items() if d.state == "pooled" and k in dests)
            assert o.healthy[vs.name] == healthy, where

    def member(self) -> tuple[VirtualServiceSpec, RealServerSpec]:
        vs = self.rng.choice(self.o.vss)
        return vs, self.rng.choice(vs.reals)

    async def random_step(self) -> None:
        rng, o = self.rng, self.o
        self.now += rng.choice([0.0, 0.0, 0.5, 1.0, 2.5, 6.0])
        kind = rng.choices(["health", "operator", "weight", "deadline", "drift", "idle", "freeze", "override",
                            "reload"], [40, 12, 8, 10, 5, 5, 3, 2, 3])[0]
        reason = "health"
        if kind == "health":
            for _ in range(rng.choice([1, 1, 2, 3])):
                vs, rs = self.member()
                self.health[(vs.watch, rs.host)] = rng.choice([True, True, False, False, None])
        elif kind == "operator":
            vs, rs = self.member()
            self.ops[(vs.name, rs.host)] = rng.choice([
                NO_OPERATOR, Operator(disabled=True), Operator(disabled=True, force=True),
                Operator(drained=True, drain_deadline=self.now + rng.choice([2.0, 30.0])),
                Operator(drained=True, drain_deadline=None, drain_until_idle=True, force=rng.random() < 0.3)])
            reason = rng.choice(["health", "drain", "undrain"])  # a poke, or the command's own reconcile
        elif kind == "weight":
            vs, rs = self.member()
            self.weights[(vs.watch, rs.host)] = rng.choice([None, 0.0, 0.5, 1.5])
        elif kind == "deadline":
            if o.next_change_at is not None:
                self.now = max(self.now, o.next_change_at)
            reason = "policy"
        elif kind == "drift":  # someone ran ipvsadm: a real server or a whole service gone
            table = self.kernel._table
            key = rng.choice(sorted(table, key=ServiceKey.sort_key))
            if table[key][1] and rng.random() < 0.7:
                table[key][1].pop(rng.choice(sorted(table[key][1])))
            else:
                del table[key]
            reason = "resync"
        elif kind == "idle":  # the kernel's counters: a draining server's last connection ends
            for _, dests in self.kernel._table.values():
                for k, d in dests.items():
                    if d.weight == 0:
                        dests[k] = replace(d, stats=Stats(active=rng.choice([0, 0, 3])))
            reason = "policy"
        elif kind == "freeze":
            self.frozen = not self.frozen
        elif kind == "override":
            vs, rs = self.member()
            await o.set_override(vs.service, rs.dest, rng.random() < 0.5, rng.random() < 0.5)
            reason = "health"
        else:  # a reload: one service's members or policy changed, or one service gone
            vss = list(o.vss)
            i = rng.randrange(len(vss))
            if rng.random() < 0.3 and len(vss) > 30:
                del vss[i]
            else:
                vss[i] = replace(vss[i], reals=vss[i].reals[:-1] if len(vss[i].reals) > 2 else vss[i].reals,
                                 min_pooled=parse_min_pooled(rng.choice([None, 1, "50%"])))
            o.vss = vss
            reason = "reload"
        if kind == "override":  # set_override reconciled already; a poke after it must agree too
            await self.step("health")
        else:
            await self.step(reason)


@pytest.mark.parametrize("seed", range(6))
async def test_incremental_owner_ends_every_step_as_a_full_plan(seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = random.Random(seed)
    w = World(rng, monkeypatch)
    for h in HOSTS:  # most hosts up at start, some unknown
        for watch in WATCHES:
            w.health[(watch, h)] = rng.choice([True, True, True, None])
    await w.step("start")
    w.now += 5
    await w.step("first round")
    steps = 150
    w.planned = 0
    for _ in range(steps):
        await w.random_step()
    # the point of it: most steps planned a few services, not all 40
    assert w.planned < steps * len(w.o.vss) / 3, w.planned


async def test_one_host_plans_only_its_services(monkeypatch: pytest.MonkeyPatch) -> None:
    """A host behind some of the services: a change of its health plans those, and the
    kernel gets their changes only."""
    w = World(random.Random(99), monkeypatch)
    for h in HOSTS:
        for watch in WATCHES:
            w.health[(watch, h)] = True
    await w.step("start")
    host = HOSTS[0]
    users = [vs for vs in w.o.vss if vs.watch == WATCHES[0] and any(rs.host == host for rs in vs.reals)]
    assert 0 < len(users) < len(w.o.vss)
    w.planned = 0
    w.health[(WATCHES[0], host)] = False
    await w.step("health")
    assert w.planned == len(users)
