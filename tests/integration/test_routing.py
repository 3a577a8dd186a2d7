"""routing/: the owner against a real kernel routing table (in a network namespace), and
the `routing:` config section's one-line errors."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import uuid
from pathlib import Path
from typing import Any, Iterator

import pytest

from pymon.loader import load_config
from pymon.model.config import ConfigError
from pymon.model.routing import Options, Policy
from pymon.routing.announce import Service
from pymon.routing.kernel import KernelRoutes
from pymon.routing.owner import Routes

VIP = "10.40.100.100"


class Log:
    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []

    def _add(self, event: str, **kw: Any) -> None:
        self.events.append((event, kw))

    info = warning = error = exception = _add

    def names(self) -> list[str]:
        return [e for e, _ in self.events]


@pytest.fixture
def netns() -> Iterator[str]:
    if os.geteuid() != 0 or not shutil.which("ip"):
        pytest.skip("needs root and iproute2 for a network namespace")
    name = f"pymon-rt-{uuid.uuid4().hex[:6]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
    yield name
    subprocess.run(["ip", "netns", "del", name], check=False)


def table(ns: str) -> str:
    """`ip route show table 100` in the namespace: the reader independent of pyroute2."""
    return subprocess.run(["ip", "-n", ns, "route", "show", "table", "100"], capture_output=True,
                          text=True).stdout.strip()


async def test_owner_keeps_the_kernel_table_to_its_decisions(netns: str, tmp_path: Path) -> None:
    subprocess.run(["ip", "-n", netns, "route", "add", "blackhole", "10.9.9.9/32", "table", "100", "proto", "252",
                    "metric", "5"], check=True)  # a leftover of an earlier run
    subprocess.run(["ip", "-n", netns, "route", "add", "blackhole", "10.8.8.8/32", "table", "100", "proto",
                    "static"], check=True)  # someone else's route in the table: never touched
    pool = {"pooled": 2, "quorum": True}
    ready = {"v": False}
    log = Log()
    opts = Options(policy=Policy(rise=2), interval=0.05, graceful_shutdown=0.5)

    def services() -> dict[str, tuple[Service, ...]]:
        return {VIP: (Service("web", pool["pooled"], pool["quorum"]),)}

    def make() -> Routes:
        return Routes(opts, log, services, lambda: ready["v"], statedir=tmp_path,
                      kernel=KernelRoutes(100, 252, netns=netns))

    r = make()
    await r.start()
    try:
        # before READY nothing is announced, and what an earlier run left is withdrawn
        assert table(netns) == "blackhole 10.8.8.8 proto static"
        assert ("route.repaired", {"vip": "10.9.9.9", "note": "withdrawn: in the table but not announced"}) in log.events
        ready["v"] = True
        await asyncio.sleep(0.3)  # rise 2
        assert f"blackhole {VIP} proto 252 metric 100" in table(netns)
        subprocess.run(["ip", "-n", netns, "route", "flush", "table", "100", "proto", "252"], check=True)
        await asyncio.sleep(0.2)
        assert f"blackhole {VIP} proto 252 metric 100" in table(netns)  # drift repaired
        pool.update(pooled=0, quorum=False)
        await asyncio.sleep(0.2)
        assert table(netns) == "blackhole 10.8.8.8 proto static"
        assert r.json()["vips"][VIP]["reason"] == "web: quorum lost"
        pool.update(pooled=2, quorum=True)
        await asyncio.sleep(0.3)
        await r.disable(VIP, "maintenance", "tester")
        assert VIP not in table(netns)
    finally:
        r.task and r.task.cancel()
    # the operator's disable survives a restart: the new owner does not announce it
    r = make()
    await r.start()
    await asyncio.sleep(0.3)
    assert VIP not in table(netns) and r.json()["vips"][VIP]["reason"] == "disabled by operator"
    assert await r.enable(VIP, "tester")
    assert f"{VIP} proto 252 metric 100" in table(netns)
    # clean stop: the draining MED for graceful_shutdown, then nothing
    stop = asyncio.create_task(r.stop())
    await asyncio.sleep(0.2)
    assert f"{VIP} proto 252 metric 1000" in table(netns)
    await stop
    assert table(netns) == "blackhole 10.8.8.8 proto static"
    changes = [(e, kw.get("state"), kw["reason"]) for e, kw in log.events
               if e in ("route.announced", "route.withdrawn") and kw.get("vip") == VIP]
    assert changes == [
        ("route.announced", "up", "quorum: web (2 pooled)"),
        ("route.withdrawn", None, "web: quorum lost"),
        ("route.announced", "up", "quorum: web (2 pooled)"),
        ("route.withdrawn", None, "disabled by operator"),
        ("route.announced", "up", "quorum: web (2 pooled)"),
        ("route.announced", "draining", "stopping: graceful shutdown"),
        ("route.withdrawn", None, "stopped"),
    ], changes


BASE = """\
hostgroups: {web: [10.0.0.1]}
watch:
  web:
    http: {monitor: {name: http, port: 80}}
virtual_services:
  - vip: 10.0.0.100:80
    watch: web:http
    real_servers: [10.0.0.1]
"""


@pytest.mark.parametrize("section, error", [
    ("routing:\n  table: 254\n", "c.yaml:10:10: routing.table: 254 is one of the kernel's own tables (0, 253-255); "
                                 "use a table of its own, e.g. 100"),
    ("routing:\n  med: {up: 500, draining: 500}\n",
     "c.yaml:10:28: routing.med.draining (500) must be above med.up (500): a draining director is the less "
     "preferred path"),
    ("routing:\n  announce: {when: always}\n", "c.yaml:10:20: routing.announce.when: 'always' is not one of "
                                                "['quorum', 'any_pooled']"),
    ("routing:\n  graceful_shutdown: soon\n", "c.yaml:10:22: routing.graceful_shutdown: bad duration 'soon' "
                                               "(use e.g. 30s, 5m, 1h)"),
])
def test_routing_config_errors_are_one_line_with_file_and_line(tmp_path: Path, section: str, error: str) -> None:
    f = tmp_path / "c.yaml"
    f.write_text(BASE + section)
    with pytest.raises(ConfigError) as e:
        load_config(f)
    assert [p.replace(str(tmp_path) + "/", "") for p in e.value.problems] == [error]


def test_routing_config_defaults_and_scheduler_flags(tmp_path: Path) -> None:
    f = tmp_path / "c.yaml"
    f.write_text(BASE.replace("    watch: web:http\n", "    watch: web:http\n    scheduler: mh\n"
                              "    scheduler_flags: [mh-port, mh-fallback]\n") + "routing: {graceful_shutdown: 3s}\n")
    cfg = load_config(f)
    assert cfg.routing.table == 100 and cfg.routing.graceful_shutdown == 3.0 and cfg.routing.med_up == 100
    assert cfg.virtual_services[0].service.flags == 0x18
    f.write_text(BASE.replace("    watch: web:http\n", "    watch: web:http\n    scheduler_flags: [mh-port]\n"))
    with pytest.raises(ConfigError, match=r"c.yaml:8:23: scheduler_flags: mh-port is for the mh "
                                          r"scheduler, not wlc"):
        load_config(f)


ETC = Path(__file__).resolve().parents[2] / "etc" / "bgp"


def test_shipped_examples_parse_and_agree() -> None:
    """etc/bgp: pymon's config loads, BIRD accepts both files, and the numbers the two
    sides share (table, protocol, draining MED) are the same on both."""
    cfg = load_config(ETC / "pymon.yaml")
    director = (ETC / "bird-director.conf").read_text()
    assert f"kernel table {cfg.routing.table};" in director
    assert f"define PYMON_PROTO = {cfg.routing.protocol};" in director
    assert f"define MED_DRAINING = {cfg.routing.med_draining};" in director
    if not shutil.which("bird"):
        pytest.skip("bird2 not installed: the BIRD files are not parsed")
    for conf in ("bird-director.conf", "bird-router.conf"):
        p = subprocess.run(["bird", "-p", "-c", str(ETC / conf)], capture_output=True, text=True)
        assert p.returncode == 0, (conf, p.stderr)
