"""The pool policy inside the IPVS owner, against the kernel's in-memory twin: min_pooled
holds the table through failures, reloads, drift repair and restarts; operator disable and
drain obey it; drains end when the kernel shows the server idle; scheduler flags in the
config. The same behaviour on the real kernel: tests/kernel/inside/test_pool.py."""

from __future__ import annotations

import textwrap
from dataclasses import replace
from typing import Any

import pytest
from owner_harness import owner

from pymon.ipvs.owner import LvsOwner, fingerprint
from pymon.ipvs.policy import NO_OPERATOR, Operator
from pymon.ipvs.table import SVC_F_ONEPACKET, SVC_F_SCHED1, SVC_F_SCHED2, Dest, MemoryTable, Service, ServiceKey, Stats, diff
from pymon.model.config import ConfigError, parse_config
from pymon.ops.persist import Drain, State

VIP = ServiceKey("tcp", "10.0.0.100", 80)
HOSTS = [f"10.0.0.{i}" for i in range(1, 11)]


def config(extra: str = "", scheduler: str = "wlc") -> Any:
    text = textwrap.dedent(f"""
        hostgroups: {{web: [{", ".join(HOSTS)}]}}
        watch: {{web: {{http: {{monitor: x}}}}}}
        virtual_services:
          - vip: 10.0.0.100:80
            scheduler: {scheduler}
            watch: web:http
            real_servers: [{", ".join(HOSTS)}]
        """) + textwrap.indent(textwrap.dedent(extra), "    ")
    return parse_config(text, "t.yaml")


async def weights(mem: MemoryTable) -> dict[str, int]:
    return {a: d.weight for (a, _), d in (await mem.read())[VIP][1].items()}


def all_up() -> dict[str, bool | None]:
    return {h: True for h in HOSTS}


async def operated(cfg: Any) -> tuple[MemoryTable, dict[str, Operator], LvsOwner]:
    """A started owner, every server up, whose operator state per host is the dict returned
    (empty: the test fills it in)."""
    mem = MemoryTable()
    ops: dict[str, Operator] = {}
    o = owner(cfg, mem, all_up(), operator=lambda vs, rs: ops.get(rs.host, NO_OPERATOR))
    await o.reconcile("start")
    return mem, ops, o


async def eight_down(extra: str = "min_pooled: 50%\n") -> tuple[Any, MemoryTable, dict[str, bool | None], LvsOwner]:
    cfg = config(extra)
    mem = MemoryTable()
    health = all_up()
    o = owner(cfg, mem, health)
    await o.reconcile("start")
    for i, h in enumerate(HOSTS[2:]):  # failing one after another: the latest failures were up last
        health[h] = False
        await o.reconcile("health")
    return cfg, mem, health, o


async def test_ten_servers_half_pooled_eight_down_keeps_five() -> None:
    cfg, mem, health, o = await eight_down()
    w = await weights(mem)
    assert len(w) == 5 and all(v == 1 for v in w.values())
    assert {"10.0.0.1", "10.0.0.2"} <= set(w)  # the healthy two, and three failed ones kept
    res = o.results[VIP]
    assert (res.counts.pooled, res.counts.pooled_down, res.counts.need) == (2, 3, 5)
    downs = o.log.named("pool.pooled_down")  # type: ignore[attr-defined]
    assert len(downs) == 3 and "min_pooled 50% of 10 = 5" in downs[0][1]["detail"]
    assert len(o.log.named("pool.depooled")) == 5  # type: ignore[attr-defined]
    assert o.healthy[cfg.virtual_services[0].name] == 2  # quorum counts healthy weight only
    n = len(o.log.events)  # type: ignore[attr-defined]
    assert await o.reconcile("health") == [] and len(o.log.events) == n  # type: ignore[attr-defined]


async def test_without_min_pooled_every_failed_server_goes() -> None:
    _, mem, _, _ = await eight_down(extra="")
    assert set(await weights(mem)) == {"10.0.0.1", "10.0.0.2"}


async def test_reload_keeps_the_decisions() -> None:
    cfg, mem, health, o = await eight_down()
    before = await weights(mem)
    n = len(o.log.events)  # type: ignore[attr-defined]
    o.vss = list(config("min_pooled: 50%\nweight: 1\n").virtual_services)  # a reload: new spec objects
    assert await o.reconcile("reload") == []
    assert await weights(mem) == before
    assert not [e for e, _ in o.log.events[n:] if e.startswith("pool.")]  # type: ignore[attr-defined]


async def test_drift_repair_keeps_the_threshold_and_a_failure_during_resync_is_health() -> None:
    cfg, mem, health, o = await eight_down()
    before = await weights(mem)
    kept_down = next(h for h in before if health[h] is False)
    svc = (await mem.read())[VIP][0]
    mem.run(diff({VIP: (svc, {k: d for k, d in (await mem.read())[VIP][1].items() if k[0] != kept_down})},
                 await mem.read(), [VIP])[0])  # like ipvsadm -d
    await o.reconcile("resync")
    assert await weights(mem) == before
    assert o.log.events[-1][0] == "ipvs.repaired"  # type: ignore[attr-defined]
    # a server failing between resyncs is a health change, not drift
    n = len(o.log.events)  # type: ignore[attr-defined]
    health["10.0.0.1"] = False
    await o.reconcile("resync")
    assert not [e for e, _ in o.log.events[n:] if e == "ipvs.repaired"]  # type: ignore[attr-defined]
    assert len(await weights(mem)) == 5


async def test_restart_adopts_the_kernel_without_flapping() -> None:
    cfg, mem, health, o = await eight_down()
    before = await weights(mem)
    o2 = owner(cfg, mem, {})  # a new daemon: nothing checked yet
    assert await o2.reconcile("start") == []
    o2.health = lambda watch, host: health.get(host)
    assert await o2.reconcile("first round") == []  # same health: same five, nothing re-added
    assert await weights(mem) == before


async def test_operator_disable_is_refused_below_the_threshold_and_forced_through() -> None:
    cfg = config("min_pooled: 10\n")
    mem, ops, o = await operated(cfg)
    ops["10.0.0.3"] = Operator(disabled=True)
    await o.reconcile("operator")
    assert len(await weights(mem)) == 10
    (event, kw), = o.log.named("pool.depool_refused")  # type: ignore[attr-defined]
    assert kw["host"] == "10.0.0.3" and "would leave 9 pooled, min_pooled 10" in kw["detail"]
    assert o.refusals[VIP] == 1
    ops["10.0.0.3"] = Operator(disabled=True, force=True)
    await o.reconcile("operator")
    assert "10.0.0.3" not in await weights(mem)


async def test_drain_weight_zero_now_removed_when_idle() -> None:
    cfg = config()
    mem, ops, o = await operated(cfg)
    key = ("10.0.0.4", 80)

    def conns(n: int) -> None:  # what the kernel's dump says of its active connections
        svc, dests = mem._table[VIP]
        dests[key] = replace(dests[key], stats=Stats(active=n))

    conns(2)
    ops["10.0.0.4"] = Operator(drained=True)
    await o.reconcile("drain")
    assert (await weights(mem))["10.0.0.4"] == 0
    assert o.next_change_at is not None  # polls the counters while it drains until idle
    conns(2)
    await o.reconcile("policy")
    assert (await weights(mem))["10.0.0.4"] == 0
    conns(0)
    await o.reconcile("policy")
    assert "10.0.0.4" not in await weights(mem)
    assert [kw["host"] for _, kw in o.log.named("pool.drained")] == ["10.0.0.4"]  # type: ignore[attr-defined]
    assert o.next_change_at is None
    del ops["10.0.0.4"]
    await o.reconcile("undrain")
    assert (await weights(mem))["10.0.0.4"] == 1


async def test_mh_quiesces_a_failed_server_and_keeps_its_flags() -> None:
    cfg = config("scheduler_flags: [mh-fallback, mh-port]\n", scheduler="mh")
    assert cfg.warnings == []
    mem = MemoryTable()
    health = all_up()
    o = owner(cfg, mem, health)
    await o.reconcile("start")
    health["10.0.0.5"] = False
    await o.reconcile("health")
    assert (await weights(mem))["10.0.0.5"] == 0 and len(await weights(mem)) == 10
    svc = (await mem.read())[VIP][0]
    assert svc.flags == SVC_F_SCHED1 | SVC_F_SCHED2
    mem.run(diff({VIP: (replace(svc, flags=0), (await mem.read())[VIP][1])}, await mem.read(), [VIP])[0])
    await o.reconcile("resync")  # ipvsadm -E without -b: repaired
    assert (await mem.read())[VIP][0].flags == SVC_F_SCHED1 | SVC_F_SCHED2


def test_scheduler_flags_config() -> None:
    assert config("scheduler_flags: [sh-port]\n", scheduler="sh").warnings[0].startswith("t.yaml:")
    assert "without scheduler_flags [mh-fallback]" in config(scheduler="mh").warnings[0]
    udp = parse_config(textwrap.dedent("""
        hostgroups: {dns: [10.0.0.1]}
        watch: {dns: {d: {monitor: x}}}
        virtual_services:
          - {vip: "10.0.0.53:53", protocol: udp, scheduler: rr, scheduler_flags: [ops], watch: "dns:d",
             real_servers: [10.0.0.1]}
        """), "u.yaml")
    assert udp.virtual_services[0].service.flags == SVC_F_ONEPACKET
    for bad, msg in (("scheduler_flags: [sh-port]\n", "sh-port is for the sh scheduler, not mh"),
                     ("scheduler_flags: [ops, mh-fallback]\n", "ops (one-packet scheduling) is for UDP"),
                     ("min_pooled: 150%\n", "min_pooled"), ("min_pooled: half\n", "min_pooled"),
                     ("drain_timeout: soon\n", "bad duration")):
        with pytest.raises(ConfigError) as e:
            config(bad, scheduler="mh")
        assert msg in str(e.value) and str(e.value).startswith("t.yaml:"), str(e.value)


def test_pool_keys_default_from_ipvs_section() -> None:
    text = textwrap.dedent(f"""
        hostgroups: {{web: [10.0.0.1]}}
        watch: {{web: {{http: {{monitor: x}}}}}}
        ipvs: {{min_pooled: 3, drain_timeout: 30s, slowstart: 1m}}
        virtual_services:
          - {{vip: "10.0.0.100:80", watch: "web:http", real_servers: [10.0.0.1]}}
          - {{vip: "10.0.0.100:81", watch: "web:http", real_servers: [10.0.0.1], min_pooled: "50%",
             drain_timeout: 0}}
        """)
    a, b = parse_config(text, "t.yaml").virtual_services
    assert (a.min_pooled, a.drain_timeout, a.slowstart) == (3, 30.0, 60.0)
    assert (str(b.min_pooled), b.drain_timeout, b.slowstart) == ("1/2", 0.0, 60.0)


def test_fingerprint_follows_kernel_order_weights_and_flags() -> None:
    svc = Service(VIP, "mh", flags=SVC_F_SCHED1)
    a, b = Dest("10.0.0.1", 80), Dest("10.0.0.2", 80)
    fp = fingerprint(svc, {a.key: a, b.key: b})
    assert fp == fingerprint(svc, {a.key: replace(a, stats=Stats(active=5)), b.key: b})  # counters are not the table
    assert fp != fingerprint(svc, {b.key: b, a.key: a})
    assert fp != fingerprint(svc, {a.key: replace(a, weight=0), b.key: b})
    assert fp != fingerprint(replace(svc, flags=0), {a.key: a, b.key: b})
    assert 0 <= fp < 2**32


def test_drains_survive_the_state_file() -> None:
    st = State()
    d = Drain("10.0.0.4", "web", 100.0, 400.0, True, "disk swap", "uid 0")
    st.drains[d.name] = d
    back = State.from_json(st.to_json())
    assert back.drains == {"web/10.0.0.4": d}
    assert State.from_json({k: v for k, v in st.to_json().items() if k != "drains"}).drains == {}


async def test_the_owner_wakes_at_the_policys_next_change() -> None:
    """A drain deadline is met by one wake-up at that time, not by the resync (30 s here)."""
    import asyncio
    import time

    cfg = config()
    mem, ops, o = await operated(cfg)
    ops["10.0.0.4"] = Operator(drained=True, drain_deadline=time.time() + 0.3, drain_until_idle=False)
    await o.reconcile("drain")
    assert (await weights(mem))["10.0.0.4"] == 0
    task = asyncio.create_task(o.run())
    try:
        for _ in range(40):
            await asyncio.sleep(0.05)
            if "10.0.0.4" not in await weights(mem):
                break
        assert "10.0.0.4" not in await weights(mem)
        assert o.log.events[-1][0] != "ipvs.repaired" and o.next_change_at is None  # type: ignore[attr-defined]
        assert [kw["detail"] for e, kw in o.log.named("pool.drained")] == ["deadline reached (removed)"]  # type: ignore[attr-defined]
    finally:
        task.cancel()


async def test_quorum_counts_the_weight_an_agent_asked_for() -> None:
    """An agent at 50 % halves what its server adds to the healthy weight quorum reads,
    as it halves the weight the kernel gets."""
    cfg = config(extra="weight: 4\nquorum: 30\n")
    mem = MemoryTable()
    health = {h: True for h in HOSTS}
    factor: dict[str, float | None] = {h: None for h in HOSTS}
    o = owner(cfg, mem, health, weight_of=lambda watch, host: factor[host])
    await o.reconcile("start")
    name = cfg.virtual_services[0].name
    assert o.healthy[name] == 40
    factor[HOSTS[0]] = 0.5
    await o.reconcile("health")
    assert o.healthy[name] == 38 and (await mem.read())[VIP][1][(HOSTS[0], 80)].weight == 2
