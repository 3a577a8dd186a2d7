"""pymon's own faults, through the real daemon (a subprocess, its JSON log read line by
line): alert scripts that hang, crash or print megabytes; alert plugins that raise,
hang or block the loop; IPVS unavailable (this host has no ip_vs); a full state dir; a
storm of SIGHUPs; kill -9 during state writes; a config replaced by garbage.

After each: the daemon is alive, checks go on, no state was lost, and the log said
what happened in one line. (Probe plugins that raise or hang: test_daemon.py; a probe
that blocks the loop: test_watchdog.py; a read-only state dir and kill -9 of a bare
writer: test_persist.py.)
"""

from __future__ import annotations

import json
import os
import random
import signal
import time
from pathlib import Path
from typing import Callable

import pytest

from daemons import Daemon, setup, starts


def run(cfg: Path, daemons: list[Daemon]) -> Daemon:
    d = Daemon(cfg)
    daemons.append(d)
    return d


def checks_go_on(d: Daemon, tmp: Path, service: str = "s", n: int = 2, timeout: float = 10) -> None:
    """At least `n` more checks of `service` start from now on (the daemon is not stuck)."""
    before = len(starts(tmp, service))
    end = time.monotonic() + timeout
    while len(starts(tmp, service)) < before + n:
        assert d.proc.poll() is None, "the daemon died"
        assert time.monotonic() < end, f"checks of {service} stopped"
        time.sleep(0.05)


def one_line(e: dict) -> None:  # type: ignore[type-arg]
    """What happened, said in one log line of bounded size."""
    text = json.dumps(e)
    assert "\n" not in text and len(text) < 8000, text[:300]


def rss_kib(pid: int) -> int:
    for ln in Path(f"/proc/{pid}/status").read_text().splitlines():
        if ln.startswith("VmRSS:"):
            return int(ln.split()[1])
    raise AssertionError("no VmRSS")


def _alive(pid: int) -> bool:
    try:
        return "\nState:\tZ" not in Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False


# -- alerts ---------------------------------------------------------------------------

HANG = "#!/bin/sh\nsleep 300 &\necho $! > \"$PIDS/hang-child\"\nexec sleep 300\n"
CRASH = "#!/bin/sh\necho about to crash\nkill -SEGV $$\n"
FLOOD = "#!/bin/sh\nhead -c 50000000 /dev/zero | tr '\\0' 'x'\necho\necho last line\n"
GOOD = "#!/bin/sh\necho \"$MON_ALERTTYPE $*\" >> \"$PIDS/good.out\"\n"
PLUGINS = '''
import asyncio, time
from pymon.plugin import alert

@alert("raises")
async def raises(event, params):
    raise RuntimeError("smtp exploded")

@alert("hangs")
async def hangs(event, params):
    await asyncio.sleep(300)

@alert("blocks")
async def blocks(event, params):
    time.sleep(1.3)  # a synchronous call: the loop stops
'''


def test_alerts_that_hang_crash_flood_raise_or_block(tmp_path: Path, daemons: list[Daemon]) -> None:
    alertdir = tmp_path / "alerts"
    alertdir.mkdir()
    for name, text in {"hang.alert": HANG, "crash.alert": CRASH, "flood.alert": FLOOD, "good.alert": GOOD}.items():
        (alertdir / name).write_text(text)
        (alertdir / name).chmod(0o755)
    (alertdir / "bad.py").write_text(PLUGINS)
    cfg = setup(tmp_path, f"""  g:
    s:
      interval: 0.3s
      env: {{PIDS: "{tmp_path}"}}
      monitor: {{name: rec, dir: "{tmp_path}"}}
      periods: [{{alertevery: 1h, alert: [hang.alert, crash.alert, flood.alert, raises, hangs, blocks,
                                          good.alert], upalert: [good.alert]}}]
""", groups="g: [h1]", glob=", alert_timeout: 2s")
    cfg.write_text(cfg.read_text().replace(f"alertdir: {tmp_path}", f"alertdir: {alertdir}"))
    (tmp_path / "down-h1").touch()
    d = run(cfg, daemons)
    d.wait(lambda e: e["event"] == "daemon.started")
    failed = {}
    for _ in range(4):
        e = d.wait(lambda e: e["event"] == "alert.failed" and e["alert"] not in failed)
        failed[e["alert"]] = e
    assert {k: v["error"] for k, v in failed.items()} == {
        "crash.alert": "killed by signal 11 (SIGSEGV)",
        "raises": "RuntimeError: smtp exploded",
        "hang.alert": "timeout after 2s",
        "hangs": "timeout after 2s",
    }
    sent = d.wait(lambda e: e["event"] == "alert.sent" and e["alert"] == "flood.alert")
    # a blocking plugin finishes (nothing can time it out while it holds the loop): it is named
    d.wait(lambda e: e["event"] == "alert.sent" and e["alert"] == "blocks")
    assert failed["crash.alert"]["output"].startswith("about to crash")
    blocked = d.wait(lambda e: e["event"] == "loop.blocked")
    assert (blocked["kind"], blocked["plugin"], blocked["service"]) == ("alert", "blocks", "s")
    assert blocked["blocked_s"] >= 1.0
    # 50 MB of output: read and dropped past the bound; the log line keeps the tail
    assert len(sent["output"]) <= 2000
    for e in [*failed.values(), sent, blocked]:
        one_line(e)
    # the hung script and what it started are gone (process group killed)
    child = int((tmp_path / "hang-child").read_text())
    end = time.monotonic() + 5
    while _alive(child) and time.monotonic() < end:
        time.sleep(0.1)
    assert not _alive(child)
    assert rss_kib(d.proc.pid) < 200_000
    # the good alert was not held up by its neighbours; checks go on; recovery is alerted
    assert (tmp_path / "good.out").read_text().startswith("failure ")
    checks_go_on(d, tmp_path)
    (tmp_path / "down-h1").unlink()
    d.wait(lambda e: e["event"] == "alert.sent" and e["type"] == "upalert")
    assert (tmp_path / "good.out").read_text().splitlines()[-1].startswith("up ")
    assert d.stop() == 0
    # one failure, each alert once (alertevery 1h): no retries hidden anywhere
    assert sum(1 for e in d.events if e["event"] in ("alert.sent", "alert.failed") and e["type"] == "alert") == 7


# -- IPVS unavailable ------------------------------------------------------------------------


def test_ipvs_unavailable_keeps_checking(tmp_path: Path, daemons: list[Daemon]) -> None:
    if Path("/proc/net/ip_vs").exists():
        pytest.skip("this kernel has IPVS: the fault needs a kernel without it")
    cfg = setup(tmp_path, f"""  g:
    s:
      interval: 0.2s
      monitor: {{name: rec, dir: "{tmp_path}"}}
      periods: [{{alert: [log], upalert: [log], alertevery: 1h}}]
virtual_services:
  - {{vip: "192.0.2.1:80", watch: "g:s", real_servers: [h1, h2]}}
ipvs: {{resync: 0.5s}}
""", groups="g: [192.0.2.11, 192.0.2.12]")
    cfg.write_text(cfg.read_text().replace("[h1, h2]", "[192.0.2.11, 192.0.2.12]"))
    d = run(cfg, daemons)
    un = d.wait(lambda e: e["event"] == "ipvs.unavailable")
    assert un["level"] == "error" and "will retry" in un["action"]
    one_line(un)
    d.wait(lambda e: e["event"] == "check.done" and e["ok"])
    (tmp_path / "down-192.0.2.12").touch()
    d.wait(lambda e: e["event"] == "alert.log" and e["type"] == "alert")
    (tmp_path / "down-192.0.2.12").unlink()
    d.wait(lambda e: e["event"] == "alert.log" and e["type"] == "upalert")
    time.sleep(1.5)  # a few resyncs against the missing kernel table
    checks_go_on(d, tmp_path)
    assert d.stop() == 0
    # said once while it lasts, not again on every resync and health change
    said = [e for e in d.events if e["event"] in ("ipvs.unavailable", "ipvs.error")]
    assert [e["event"] for e in said] == ["ipvs.unavailable"], said
    assert sum(1 for e in d.events if e["event"] == "host.state") >= 2  # health changes did happen


# -- state dir full ---------------------------------------------------------------------------


def test_state_dir_full_keeps_running_and_catches_up(tmp_path: Path, daemons: list[Daemon],
                                                     mount_tmpfs: Callable[[str, str], Path],
                                                     fill_disk: Callable[[Path], None]) -> None:
    small = mount_tmpfs("small", "size=256k")
    cfg = setup(tmp_path, f"""  g:
    s:
      interval: 0.2s
      monitor: {{name: rec, dir: "{tmp_path}"}}
      periods: [{{alert: [log], upalert: [log], alertevery: 1h}}]
""")
    cfg.write_text(cfg.read_text().replace(f"statedir: {tmp_path}", f"statedir: {small}"))
    d = run(cfg, daemons)
    d.wait(lambda e: e["event"] == "check.done" and e["ok"])
    time.sleep(1.5)
    assert json.loads((small / "state.json").read_text())["services"]["g:s"]["status"] == "ok"
    # fill it up, then change something that must be kept
    fill_disk(small / "filler")
    (tmp_path / "down-h1").touch()
    d.wait(lambda e: e["event"] == "alert.log" and e["type"] == "alert")
    w = d.wait(lambda e: e["event"] == "state.write_failed", timeout=10)
    assert w["level"] == "error" and "No space left" in w["error"]
    one_line(w)
    checks_go_on(d, tmp_path)
    time.sleep(1.5)
    assert sum(1 for e in d.events if e["event"] == "state.write_failed") == 1
    assert json.loads((small / "state.json").read_text())["services"]["g:s"]["status"] == "ok"  # the old one
    assert not list(small.glob(".state.json.tmp*"))  # no half-written leftovers
    # room again: the next write has everything
    (small / "filler").unlink()
    d.wait(lambda e: e["event"] == "state.write_recovered", timeout=10)
    saved = json.loads((small / "state.json").read_text())
    assert saved["services"]["g:s"]["status"] == "fail"
    assert [h["type"] for h in saved["history"]] == ["alert"]
    assert d.stop() == 0


# -- SIGHUP storm ------------------------------------------------------------------------------


def test_hundred_sighups_in_a_second(tmp_path: Path, daemons: list[Daemon]) -> None:
    body = f"""  g:
    s:
      interval: 0.2s
      monitor: {{name: rec, dir: "{tmp_path}"}}
      periods: [{{alert: [log], upalert: [log], alertevery: 1h}}]
"""
    cfg = setup(tmp_path, body)
    (tmp_path / "down-h1").touch()
    d = run(cfg, daemons)
    d.wait(lambda e: e["event"] == "alert.log" and e["type"] == "alert")
    base = cfg.read_text()
    start = time.monotonic()
    for i in range(100):
        # the file changes under the storm: interval 0.2s / 0.25s alternately, the last is 0.25s
        cfg.write_text(base.replace("interval: 0.2s", f"interval: {0.2 if i % 2 == 0 else 0.25}s"))
        d.proc.send_signal(signal.SIGHUP)
        time.sleep(0.005)
    assert time.monotonic() - start < 3.0
    d.wait(lambda e: e["event"] == "config.reloaded")
    time.sleep(2.0)
    checks_go_on(d, tmp_path)
    assert d.proc.poll() is None
    # the last file wins: checks now run every 0.25 s
    s = [float(ln.split()[2]) for ln in (tmp_path / "starts").read_text().splitlines()
         if ln.startswith("s h1 ")][-6:]
    gaps = [b - a for a, b in zip(s, s[1:])]
    assert all(0.2 < g < 0.35 for g in gaps) and sum(gaps) / len(gaps) > 0.235, gaps
    # state kept through all reloads: still failing, no second down alert, no upalert
    alerts = [e for e in d.events if e["event"] == "alert.log"]
    assert [a["type"] for a in alerts] == ["alert"]
    (tmp_path / "down-h1").unlink()
    d.wait(lambda e: e["event"] == "alert.log" and e["type"] == "upalert")
    assert d.stop() == 0
    # write_text truncates first: a reload may catch the file empty, which is refused
    # (it would drop every service and re-alert them all); nothing else went wrong
    errors = [e for e in d.events if e["level"] == "error"]
    assert all(e["event"] == "config.invalid" and e["problems"] == [f"{cfg}:1:1: config is empty: nothing to monitor"]
               for e in errors), errors
    reloads = sum(1 for e in d.events if e["event"] == "config.reloaded")
    assert 1 <= reloads <= 100


# -- kill -9 during state writes --------------------------------------------------------------


def test_kill_9_during_state_writes(tmp_path: Path, daemons: list[Daemon]) -> None:
    """A daemon whose state changes on every check (a flapping host, a long history) is
    killed at random moments; every restart finds an intact state file and goes on."""
    watch = "".join(f"""    s{i}:
      interval: 0.1s
      monitor: {{name: rec, dir: "{tmp_path}"}}
      periods: [{{alert: [log], upalert: [log]}}]
""" for i in range(20))
    cfg = setup(tmp_path, "  g:\n" + watch, groups="g: [h1, h2]")
    rng = random.Random(9)
    history = 0
    for round_ in range(5):
        flag = tmp_path / "down-h1"
        d = run(cfg, daemons)
        d.wait(lambda e: e["event"] == "daemon.started")
        if round_ > 0:
            assert not [e for e in d.events if e["event"] == "state.corrupt"]
            loaded = d.wait(lambda e: e["event"] == "state.loaded")
            one_line(loaded)
        end = time.monotonic() + rng.uniform(1.5, 3.0)
        while time.monotonic() < end:  # flap: every check a change, writes back to back
            flag.touch() if not flag.exists() else flag.unlink()
            time.sleep(0.15)
        d.proc.send_signal(signal.SIGKILL)
        d.proc.wait()
        raw = json.loads((tmp_path / "state.json").read_text())  # never torn
        assert len(raw["history"]) >= history  # nothing lost that had been written
        history = len(raw["history"])
        assert set(raw["services"]) == {f"g:s{i}" for i in range(20)}
    assert history > 20


# -- config replaced by garbage ------------------------------------------------------------------


def test_garbage_configs_keep_the_old_one(tmp_path: Path, daemons: list[Daemon]) -> None:
    cfg = setup(tmp_path, f"""  g:
    s:
      interval: 0.2s
      monitor: {{name: rec, dir: "{tmp_path}"}}
""")
    good = cfg.read_text()
    d = run(cfg, daemons)
    d.wait(lambda e: e["event"] == "check.done")
    garbage: list[bytes | None] = [
        os.urandom(4096),  # binary
        b"",  # empty
        b"\xff\xfe\x00w\x00a\x00t\x00c\x00h",  # UTF-16
        good.encode()[: len(good) // 2],  # truncated mid-write
        b"watch: {g: {s: {monitor: nosuch, interval: -1}}}\n",  # valid YAML, invalid config
        b"a: &a [*a, *a]\n" * 3,  # alias games
        b"- " * 5000 + b"x\n",  # deep nesting
        None,  # the file is gone
    ]
    for g in garbage:
        if g is None:
            cfg.unlink()
        else:
            cfg.write_bytes(g)
        n = sum(1 for e in d.events if e["event"] == "config.invalid")
        d.proc.send_signal(signal.SIGHUP)
        e = d.wait(lambda e: e["event"] == "config.invalid" and sum(
            1 for x in d.events[: d.events.index(e) + 1] if x["event"] == "config.invalid") > n)
        assert e["action"] == "keeping the running config"
        assert e["problems"] and all(isinstance(p, str) and "\n" not in p and "Traceback" not in p
                                     for p in e["problems"]), e["problems"]
        one_line(e)
        checks_go_on(d, tmp_path)
    cfg.write_text(good)
    assert d.stop() == 0
    assert "Traceback" not in d.proc.stderr.read()  # type: ignore[union-attr]
