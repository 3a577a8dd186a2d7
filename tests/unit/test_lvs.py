"""The IPVS owner against its in-memory twin: wanted = config × health, adoption,
quiescent, sorry server, quorum with hysteresis, drift repair, lvs.alert args.
The same scenarios run against the real kernel in tests/kernel/inside/."""

from __future__ import annotations

import asyncio
import random
import textwrap
from dataclasses import replace
from typing import Any

import pytest
from owner_harness import Log, owner

from pymon.model.config import ConfigError, parse_config
from pymon.ipvs.table import Dest, MemoryTable, Service, ServiceKey, diff, make_table
from pymon.alerts.lvs import parse_lvs_args
from pymon.ipvs.owner import LvsOwner, plan, quorum_step
from pymon.ipvs.policy import Health

VIP = ServiceKey("tcp", "10.0.0.100", 80)


def config(extra: str = "") -> Any:
    text = textwrap.dedent("""
        hostgroups: {web: [10.0.0.1, 10.0.0.2, 10.0.0.3]}
        watch: {web: {http: {monitor: x}}}
        virtual_services:
          - vip: 10.0.0.100:80
            scheduler: wlc
            watch: web:http
            real_servers: [10.0.0.1, 10.0.0.2, {address: 10.0.0.3, weight: 3}]
        """) + textwrap.indent(textwrap.dedent(extra), "    ")
    return parse_config(text, "t.yaml")


def dests(table: dict, key: ServiceKey = VIP) -> dict[str, int]:
    return {a: d.weight for (a, _), d in table[key][1].items()}


async def test_healthy_servers_in_failed_out() -> None:
    cfg = config()
    mem = MemoryTable()
    health = {"10.0.0.1": True, "10.0.0.2": True, "10.0.0.3": True}
    o = owner(cfg, mem, health)
    await o.reconcile("start")
    assert dests(await mem.read()) == {"10.0.0.1": 1, "10.0.0.2": 1, "10.0.0.3": 3}
    svc = (await mem.read())[VIP][0]
    assert svc.scheduler == "wlc"
    health["10.0.0.2"] = False
    ops = await o.reconcile("health")
    assert [str(op) for op in ops] == ["del dest TCP 10.0.0.100:80 -> 10.0.0.2:80"]
    assert dests(await mem.read()) == {"10.0.0.1": 1, "10.0.0.3": 3}


async def test_quiescent_sets_weight_zero() -> None:
    cfg = config("quiescent: true\n")
    mem = MemoryTable()
    o = owner(cfg, mem, {"10.0.0.1": True, "10.0.0.2": False, "10.0.0.3": True})
    await o.reconcile("start")
    assert dests(await mem.read()) == {"10.0.0.1": 1, "10.0.0.2": 0, "10.0.0.3": 3}


async def test_restart_adopts_kernel_entries_of_unchecked_hosts() -> None:
    """A restart never drops a healthy real server: unknown health keeps the kernel entry."""
    cfg = config()
    existing = make_table([(Service(VIP, "wlc"), [Dest("10.0.0.1", 80, "dr", 1), Dest("10.0.0.2", 80, "dr", 1),
                                                  Dest("10.0.0.9", 80, "dr", 1)])])
    mem = MemoryTable(existing)
    o = owner(cfg, mem, {})
    ops = await o.reconcile("start")
    # nothing of ours removed; the unconfigured 10.0.0.9 in a service we own goes
    assert [str(op) for op in ops] == ["del dest TCP 10.0.0.100:80 -> 10.0.0.9:80"]
    assert dests(await mem.read()) == {"10.0.0.1": 1, "10.0.0.2": 1}


async def test_unowned_services_are_left_alone() -> None:
    cfg = config()
    other = ServiceKey("udp", "10.9.9.9", 53)
    mem = MemoryTable(make_table([(Service(other, "rr"), [Dest("10.9.9.1", 53, "nat", 5)])]))
    await owner(cfg, mem, {"10.0.0.1": True}).reconcile("start")
    assert dests(await mem.read(), other) == {"10.9.9.1": 5}


async def test_sorry_server_when_none_healthy_and_out_when_one_returns() -> None:
    cfg = config("sorry_server: 10.0.0.200:80\n")
    mem = MemoryTable()
    health: dict[str, bool | None] = {"10.0.0.1": False, "10.0.0.2": False, "10.0.0.3": False}
    o = owner(cfg, mem, health)
    await o.reconcile("start")
    assert dests(await mem.read()) == {"10.0.0.200": 1}
    health["10.0.0.3"] = True
    await o.reconcile("health")
    assert dests(await mem.read()) == {"10.0.0.3": 3}


async def test_no_sorry_server_while_health_is_unknown() -> None:
    cfg = config("sorry_server: 10.0.0.200:80\n")
    mem = MemoryTable()
    await owner(cfg, mem, {"10.0.0.1": False}).reconcile("start")
    assert dests(await mem.read()) == {}


async def test_drift_is_repaired_and_logged() -> None:
    cfg = config()
    mem = MemoryTable()
    o = owner(cfg, mem, {"10.0.0.1": True, "10.0.0.2": True, "10.0.0.3": True})
    await o.reconcile("start")
    for key in list((await mem.read())):
        mem.run(diff({}, await mem.read(), [key])[-1])  # like `ipvsadm -D`
    assert await mem.read() == {}
    await o.reconcile("resync")
    assert dests(await mem.read()) == {"10.0.0.1": 1, "10.0.0.2": 1, "10.0.0.3": 3}
    assert any(e == "ipvs.repaired" for e, _ in o.log.events)  # type: ignore[attr-defined]


def counted_reads(mem: MemoryTable) -> list[float]:
    """Make mem.read note when each read starts (loop time); return that list."""
    starts: list[float] = []
    read = mem.read

    async def counted() -> Any:
        starts.append(asyncio.get_running_loop().time())
        return await read()

    mem.read = counted  # type: ignore[method-assign]
    return starts


async def test_reads_only_where_the_table_is_not_known() -> None:
    """A read is a dump of the whole table: a reconcile whose ops were all acknowledged
    knows the result without reading it back, a health change starts from that, and
    only a refused op (or a resync, reload, start) reads the kernel."""
    mem = MemoryTable()
    kernel_now = mem.read
    reads = counted_reads(mem)
    health: dict[str, bool | None] = {"10.0.0.1": True, "10.0.0.2": True, "10.0.0.3": True}
    o = owner(config(), mem, health)
    await o.reconcile("start")
    assert len(reads) == 1 and dests(o.last_actual) == {"10.0.0.1": 1, "10.0.0.2": 1, "10.0.0.3": 3}
    assert o.last_actual == await kernel_now()
    assert await o.reconcile("resync") == [] and len(reads) == 2
    health["10.0.0.2"] = False
    assert len(await o.reconcile("health")) == 1 and len(reads) == 2  # no read
    assert o.last_actual == await kernel_now() and dests(o.last_actual) == {"10.0.0.1": 1, "10.0.0.3": 3}
    o.vss[0] = replace(o.vss[0], service=replace(o.vss[0].service, scheduler="rr"))
    mem.schedulers.discard("rr")  # the kernel will refuse the edit
    await o.reconcile("reload")
    assert len(reads) == 4 and o.last_errors  # read, refused, read back
    assert o.last_actual == await kernel_now()


async def test_a_health_change_after_drift_is_repaired_by_the_next_resync() -> None:
    """Someone deleted the service behind pymon's back: a health change (which does not
    read) fails in one line per op, the table is read back, the next resync repairs it."""
    mem = MemoryTable()
    health: dict[str, bool | None] = {"10.0.0.1": True, "10.0.0.2": False, "10.0.0.3": True}
    o = owner(config(), mem, health)
    await o.reconcile("start")
    mem.run(diff({}, await mem.read(), [VIP])[-1])  # like `ipvsadm -D`: the service and its dests go
    health["10.0.0.2"] = True
    await o.reconcile("health")
    assert o.last_errors == ["add dest TCP 10.0.0.100:80 -> 10.0.0.2:80 Route weight 1: Service not defined"]
    assert o.last_actual == {}
    await o.reconcile("resync")
    assert dests(await mem.read()) == {"10.0.0.1": 1, "10.0.0.2": 1, "10.0.0.3": 3}


async def test_a_health_change_during_a_resync_is_logged_as_health_not_drift() -> None:
    mem = MemoryTable()
    health: dict[str, bool | None] = {"10.0.0.1": True, "10.0.0.2": True, "10.0.0.3": True}
    o = owner(config(), mem, health)
    await o.reconcile("start")
    read = mem.read

    async def read_while_a_server_dies() -> Any:
        table = await read()
        health["10.0.0.2"] = False  # the check's verdict lands while the kernel is read
        o.poke()
        return table

    mem.read = read_while_a_server_dies  # type: ignore[method-assign]
    ops = await o.reconcile("resync")
    assert [str(op) for op in ops] == ["del dest TCP 10.0.0.100:80 -> 10.0.0.2:80"]
    events = o.log.events  # type: ignore[attr-defined]
    assert not [e for e, _ in events if e == "ipvs.repaired"]
    assert [kw["reason"] for e, kw in events if e == "ipvs.change"][-1] == "health"
    assert not o.wake.is_set()  # handled: no second reconcile for the same change


async def test_a_health_change_whose_wake_a_resync_took_is_still_applied() -> None:
    """The run loop clears the wake before each reconcile. When a resync falls due in the
    same loop pass as a health change's poke, or right after a resync that a health
    change cut short, the reconcile it runs is a resync that finds the kernel as pymon
    left it: it must still plan the health change, not skip it as settled."""
    mem = MemoryTable()
    health: dict[str, bool | None] = {"10.0.0.1": True, "10.0.0.2": True, "10.0.0.3": True}
    o = owner(config(), mem, health)
    await o.reconcile("start")
    assert await o.reconcile("resync") == []
    health["10.0.0.2"] = False
    o.poke()
    o.wake.clear()  # what run() does before it calls reconcile
    ops = await o.reconcile("resync")
    assert [str(op) for op in ops] == ["del dest TCP 10.0.0.100:80 -> 10.0.0.2:80"]
    assert dests(await mem.read()) == {"10.0.0.1": 1, "10.0.0.3": 3}
    assert [kw["reason"] for e, kw in o.log.events if e == "ipvs.change"][-1] == "health"  # type: ignore[attr-defined]
    assert await o.reconcile("resync") == []  # and only once


async def test_health_changes_reach_the_table_whenever_they_land_against_resyncs() -> None:
    """The run loop with a short resync and health changes poked at random moments
    (some in the same loop pass as a resync deadline): after each, the table follows."""
    cfg = config()
    cfg.ipvs.resync = 0.003
    mem = MemoryTable()
    health: dict[str, bool | None] = {"10.0.0.1": True, "10.0.0.2": True, "10.0.0.3": True}
    o = owner(cfg, mem, health)
    await o.reconcile("start")
    task = asyncio.create_task(o.run())
    loop = asyncio.get_running_loop()
    rng = random.Random(7)
    try:
        for i in range(300):
            health["10.0.0.2"] = i % 2 == 1
            delay = rng.choice([0.0, 0.001, 0.002, 0.003])
            loop.call_later(delay, o.poke)
            want = {"10.0.0.1": 1, "10.0.0.3": 3} | ({"10.0.0.2": 1} if health["10.0.0.2"] else {})
            for _ in range(500):  # 1 s at most: a busy machine, not the owner, is late
                await asyncio.sleep(0.002)
                if dests(await mem.read()) == want:
                    break
            assert dests(await mem.read()) == want, f"change {i} never reached the table"
    finally:
        task.cancel()


async def test_a_reload_behind_a_health_change_is_logged_as_the_reload() -> None:
    """A SIGHUP while a resync reads the kernel and a health change waits its turn: the
    health change is planned on the configuration it came under, the reload's change is
    applied and logged as the reload's, each once."""
    mem = MemoryTable()
    health: dict[str, bool | None] = {"10.0.0.1": True, "10.0.0.2": True, "10.0.0.3": True}
    o = owner(config(), mem, health)
    await o.reconcile("start")
    inner, gate = mem.read, asyncio.Event()

    async def slow() -> Any:
        await gate.wait()
        return await inner()

    mem.read = slow  # type: ignore[method-assign]
    resync = asyncio.create_task(o.reconcile("resync"))
    await asyncio.sleep(0)  # the resync holds the lock and waits for its read
    health["10.0.0.1"] = False
    change = asyncio.create_task(o.reconcile("health"))
    vs = o.vss[0]
    heavier = [replace(vs, reals=[replace(rs, dest=replace(rs.dest, weight=5)) if rs.host == "10.0.0.2" else rs
                                  for rs in vs.reals])]
    reload = asyncio.create_task(o.reconcile("reload", heavier))
    await asyncio.sleep(0)
    gate.set()
    await asyncio.gather(resync, change, reload)
    assert [(kw["op"], kw["reason"]) for e, kw in o.log.events if e == "ipvs.change"][-2:] == [  # type: ignore[attr-defined]
        ("del dest TCP 10.0.0.100:80 -> 10.0.0.1:80", "health"),
        ("edit dest TCP 10.0.0.100:80 -> 10.0.0.2:80 Route weight 5", "reload")]
    assert dests(await inner()) == {"10.0.0.2": 5, "10.0.0.3": 3}


async def test_resyncs_start_one_period_apart_whatever_they_take() -> None:
    """The period is start to start: a slow read (0.2 s of 0.5 s) does not stretch it,
    and a health change between resyncs does not move them."""
    cfg = config()
    cfg.ipvs.resync = 0.5
    mem = MemoryTable()
    inner = mem.read

    async def slow() -> Any:
        await asyncio.sleep(0.2)
        return await inner()

    mem.read = slow  # type: ignore[method-assign]
    o = owner(cfg, mem, {"10.0.0.1": True, "10.0.0.2": True, "10.0.0.3": True})
    starts: list[tuple[float, str]] = []
    reconcile = o.reconcile

    async def noted(reason: str) -> Any:
        starts.append((asyncio.get_running_loop().time(), reason))
        return await reconcile(reason)

    o.reconcile = noted  # type: ignore[method-assign]
    task = asyncio.create_task(o.run())
    await asyncio.sleep(1.3)
    o.poke()
    await asyncio.sleep(1.6)
    task.cancel()
    resyncs = [t for t, reason in starts if reason == "resync"]
    periods = [b - a for a, b in zip(resyncs, resyncs[1:])]
    assert [r for _, r in starts].count("health") == 1
    assert len(periods) >= 3 and all(0.45 < p < 0.62 for p in periods), periods


async def test_quorum_lost_and_regained_with_hysteresis() -> None:
    cfg = config("quorum: 4\nhysteresis: 1\n")
    mem = MemoryTable()
    calls: list[tuple[bool, int]] = []
    health: dict[str, bool | None] = {"10.0.0.1": True, "10.0.0.2": True, "10.0.0.3": True}
    o = owner(cfg, mem, health)
    o.alert = lambda vs, ok, w: calls.append((ok, w))
    await o.reconcile("start")  # weight 5
    health["10.0.0.1"] = False  # 4: still >= 4-1
    await o.reconcile("health")
    health["10.0.0.2"] = False  # 3: >= 3, kept (hysteresis)
    await o.reconcile("health")
    assert calls == []
    health["10.0.0.3"] = False  # 0: lost
    await o.reconcile("health")
    health["10.0.0.3"] = True  # 3 < 4+1: not yet
    await o.reconcile("health")
    health["10.0.0.1"] = health["10.0.0.2"] = True  # 5: regained
    await o.reconcile("health")
    assert calls == [(False, 0), (True, 5)]


def test_quorum_step() -> None:
    assert quorum_step(True, 2, 3, 1) is True
    assert quorum_step(True, 1, 3, 1) is False
    assert quorum_step(False, 3, 3, 1) is False
    assert quorum_step(False, 4, 3, 1) is True


def test_lvs_alert_args() -> None:
    svc, dest, action = parse_lvs_args("-P tcp -V 10.0.0.100:80 -R 10.0.0.5 -W 2 -F nat".split())
    assert svc.key == VIP and dest == Dest("10.0.0.5", 80, "nat", 2) and action == "down"
    svc, dest, action = parse_lvs_args("-P udp -V [2001:db8::1]:53 -R [2001:db8::5]:5353 -W 1 -F tun -X quiesce".split())
    assert svc.key == ServiceKey("udp", "2001:db8::1", 53) and dest.port == 5353 and action == "quiesce"
    for bad in ("-V 10.0.0.1:80", "-V 10.0.0.1:80 -R 10.0.0.2 -F bogus", "-Q x", "-V x:80 -R 10.0.0.2"):
        with pytest.raises(ValueError):
            parse_lvs_args(bad.split())


async def test_lvs_alert_override_removes_and_restores() -> None:
    cfg = config()
    mem = MemoryTable()
    o = owner(cfg, mem, {"10.0.0.1": True})
    svc, dest, _ = parse_lvs_args("-P tcp -V 10.0.0.100:80 -R 10.0.0.1 -W 1 -F dr".split())
    await o.set_override(svc, dest, up=False, quiesce=False)
    assert dests(await mem.read()) == {}
    await o.set_override(svc, dest, up=True, quiesce=False)
    assert dests(await mem.read()) == {"10.0.0.1": 1}


def test_plan_is_pure_and_weights_add_up() -> None:
    cfg = config()
    health = {("web", "http"): {h: Health(h != "10.0.0.1") for h in ("10.0.0.1", "10.0.0.2", "10.0.0.3")}}
    p = plan(cfg.virtual_services, health, {}, {}, 1000.0)
    assert dests(p.table) == {"10.0.0.2": 1, "10.0.0.3": 3}
    assert p.results[VIP].counts.healthy_weight == 4


@pytest.mark.parametrize("bad, msg", [
    ("    vip: 10.0.0.100\n", "needs a port"),
    ("    vip: nonsense:80\n", "virtual service"),
    ("    watch: web:nosuch\n", "no such service web:nosuch"),
    ("    scheduler: fastest\n", "fastest"),
])
def test_bad_virtual_service_config(bad: str, msg: str) -> None:
    base = textwrap.dedent("""
        hostgroups: {web: [10.0.0.1]}
        watch: {web: {http: {monitor: x}}}
        virtual_services:
          - real_servers: [10.0.0.1]
        """)
    defaults = {"vip": "    vip: 10.0.0.100:80\n", "watch": "    watch: web:http\n"}
    key = bad.split(":")[0].strip()
    defaults[key] = bad
    text = base + "".join(defaults.values())
    with pytest.raises(ConfigError) as e:
        parse_config(text, "t.yaml")
    assert msg in str(e.value)
    assert str(e.value).startswith("t.yaml:")


def test_real_server_must_be_a_host_of_the_watched_group() -> None:
    text = textwrap.dedent("""
        hostgroups: {web: [10.0.0.1]}
        watch: {web: {http: {monitor: x}}}
        virtual_services:
          - {vip: "10.0.0.100:80", watch: "web:http", real_servers: [10.0.0.7]}
        """)
    with pytest.raises(ConfigError, match="not a host of hostgroup 'web'"):
        parse_config(text, "t.yaml")


def test_daemon_dry_run_logs_table_changes(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The real daemon, real HTTP backends, dry-run: the log shows the table following health."""
    import json
    import signal
    import socket
    import subprocess
    import sys
    import time

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    backends = {h: subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", h],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                for h in ("127.0.0.21", "127.0.0.22")}
    cfg = tmp_path / "p.yaml"
    cfg.write_text(textwrap.dedent(f"""
        globals: {{statedir: {tmp_path}, mondir: {tmp_path}, alertdir: {tmp_path}}}
        hostgroups: {{web: [127.0.0.21, 127.0.0.22]}}
        watch: {{web: {{http: {{monitor: {{name: http, port: {port}}}, interval: 0.3s, timeout: 1s}}}}}}
        virtual_services:
          - vip: 192.0.2.1:80
            watch: web:http
            forwarding: nat
            real_servers: ["127.0.0.21:{port}", "127.0.0.22:{port}"]
        ipvs: {{dry_run: true}}
        """))
    time.sleep(0.5)
    d = subprocess.Popen([sys.executable, "-m", "pymon", "run", "-c", str(cfg)], stdout=subprocess.PIPE, text=True)
    try:
        lines: list[dict] = []
        assert d.stdout is not None

        def until(pred) -> dict:  # type: ignore[no-untyped-def]
            end = time.monotonic() + 15
            while time.monotonic() < end:
                e = json.loads(d.stdout.readline())
                lines.append(e)
                if pred(e):
                    return e
            raise AssertionError([x["event"] for x in lines])

        until(lambda e: e["event"] == "ipvs.would_change" and "127.0.0.22" in e["op"])
        backends["127.0.0.22"].terminate()
        e = until(lambda e: e["event"] == "ipvs.would_change" and e["op"].startswith("del dest"))
        assert e["op"] == f"del dest TCP 192.0.2.1:80 -> 127.0.0.22:{port}"
    finally:
        d.send_signal(signal.SIGTERM)
        d.wait(10)
        for b in backends.values():
            b.kill()
    adds = [x["op"] for x in lines if x["event"] == "ipvs.would_change" and x["op"].startswith("add dest")]
    assert sorted(adds) == [f"add dest TCP 192.0.2.1:80 -> 127.0.0.21:{port} Masq weight 1",
                            f"add dest TCP 192.0.2.1:80 -> 127.0.0.22:{port} Masq weight 1"]


async def test_dry_run_lvs_alert_without_kernel_table_previews_the_removal() -> None:
    """`run --dry-run` where no kernel table can be read: a down lvs.alert shows the removal
    the script makes on the director (`ipvsadm -d`), and creates no service, which
    `ipvsadm -d` never does; the upalert shows the real server going back."""
    mem = MemoryTable()
    mem.no_kernel_table = True  # type: ignore[attr-defined]  # as open_backend marks it
    cfg = parse_config("hostgroups: {web: [10.0.0.1]}\nwatch: {web: {http: {monitor: x}}}\n", "t.yaml")
    o = LvsOwner(cfg.ipvs, mem, Log(), True, [])
    svc, dest, _ = parse_lvs_args("-P tcp -V 10.0.0.100:80 -R 10.0.0.1 -W 2 -F dr".split())
    await o.set_override(svc, dest, up=False, quiesce=False)
    changes = [kw["op"] for ev, kw in o.log.events if ev == "ipvs.would_change"]
    assert changes == ["del dest TCP 10.0.0.100:80 -> 10.0.0.1:80"]
    assert await mem.read() == {}
    _, dest_q, _ = parse_lvs_args("-P tcp -V 10.0.0.100:80 -R 10.0.0.2 -W 2 -F dr -X quiesce".split())
    await o.set_override(svc, dest_q, up=False, quiesce=True)
    changes = [kw["op"] for ev, kw in o.log.events if ev == "ipvs.would_change"]
    assert changes[1].startswith("edit dest TCP 10.0.0.100:80 -> 10.0.0.2:80") and "weight 0" in changes[1]
    await o.set_override(svc, dest, up=True, quiesce=False)
    changes = [kw["op"] for ev, kw in o.log.events if ev == "ipvs.would_change"]
    assert changes[2:] == ["add service TCP 10.0.0.100:80 wlc",
                           "add dest TCP 10.0.0.100:80 -> 10.0.0.1:80 Route weight 2"]


def test_side_by_side_marks_config_differences_not_connection_counts() -> None:
    from pymon.ipvs.owner import side_by_side
    from pymon.ipvs.table import Stats, format_ipvsadm

    svc = Service(VIP, "wlc")
    wanted = make_table([(svc, [Dest("10.0.0.1", 80), Dest("10.0.0.2", 80, weight=2)])])
    busy = make_table([(svc, [replace(Dest("10.0.0.1", 80), stats=Stats(active=5, inactive=9)),
                              Dest("10.0.0.2", 80, weight=3)])])
    rows = side_by_side(format_ipvsadm(wanted), format_ipvsadm(busy)).splitlines()
    marked = [r.split()[1] for r in rows if "≠" in r]
    assert marked == ["10.0.0.2:80"]
    assert any("5          9" in r for r in rows)


async def test_a_health_change_does_not_wait_for_a_resyncs_read() -> None:
    """A read of a big table is slow: a health change during it is applied at once (the
    read is dropped), logged as health, and the resync runs again right after."""
    cfg = config()
    cfg.ipvs.resync = 0.3
    mem = MemoryTable()
    inner = mem.read
    reads: list[float] = []

    async def slow() -> Any:
        reads.append(asyncio.get_running_loop().time())
        await asyncio.sleep(1.0)
        return await inner()

    health: dict[str, bool | None] = {"10.0.0.1": True, "10.0.0.2": True, "10.0.0.3": True}
    o = owner(cfg, mem, health)
    await o.reconcile("start")
    mem.read = slow  # type: ignore[method-assign]
    task = asyncio.create_task(o.run())
    while not reads:
        await asyncio.sleep(0.01)
    health["10.0.0.2"] = False
    o.poke()
    t0 = asyncio.get_running_loop().time()
    while dests(await inner()) != {"10.0.0.1": 1, "10.0.0.3": 3}:
        await asyncio.sleep(0.01)
    took = asyncio.get_running_loop().time() - t0
    await asyncio.sleep(0.1)
    task.cancel()
    assert took < 0.5
    assert len(reads) == 2 and reads[1] - t0 < 0.5  # the resync started over at once
    events = o.log.events  # type: ignore[attr-defined]
    assert [kw["reason"] for e, kw in events if e == "ipvs.change"][-1] == "health"
    assert not [e for e, _ in events if e == "ipvs.repaired"]


async def test_a_resync_of_an_unchanged_table_refreshes_counters_and_still_finds_drift() -> None:
    """A resync that finds the table as pymon left it plans nothing (no log line, no
    change) but keeps the counters it read; drift after it is repaired as before."""
    from pymon.ipvs.table import Stats

    cfg = config()
    mem = MemoryTable()
    o = owner(cfg, mem, {"10.0.0.1": True, "10.0.0.2": True, "10.0.0.3": True})
    await o.reconcile("start")
    before = len(o.log.events)  # type: ignore[attr-defined]
    svc, have = mem._table[VIP]
    have[("10.0.0.1", 80)] = replace(have[("10.0.0.1", 80)], stats=Stats(active=4, connections=9))
    assert await o.reconcile("resync") == []
    assert o.log.events[before:] == []  # type: ignore[attr-defined]
    assert o.last_actual[VIP][1][("10.0.0.1", 80)].active_conns == 4
    del have[("10.0.0.2", 80)]  # someone ran ipvsadm -d
    ops = await o.reconcile("resync")
    assert [str(op) for op in ops] == ["add dest TCP 10.0.0.100:80 -> 10.0.0.2:80 Route weight 1"]
    assert [kw["changes"] for e, kw in o.log.events if e == "ipvs.repaired"] == [1]  # type: ignore[attr-defined]
