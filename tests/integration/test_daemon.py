"""The running daemon as a user meets it: JSON logs, schedule, timeouts, maxprocs,
drop-in plugins, SIGHUP reload (bad config keeps the old one), SIGTERM stop."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

from daemons import Daemon, setup, starts


def test_json_logs_state_changes_and_alerts(tmp_path: Path, daemons: list[Daemon]) -> None:
    cfg = setup(tmp_path, f"""  g:
    s:
      interval: 0.3s
      monitor: {{name: rec, dir: "{tmp_path}"}}
      periods: [{{alert: [log], upalert: [log]}}]
""")
    d = Daemon(cfg)
    daemons.append(d)
    d.wait(lambda e: e["event"] == "daemon.started")
    d.wait(lambda e: e["event"] == "check.done" and e["ok"])
    (tmp_path / "down-h2").touch()
    e = d.wait(lambda e: e["event"] == "host.state" and e["state"] == "down")
    assert e["host"] == "h2" and e["summary"] == "flagged down"
    a = d.wait(lambda e: e["event"] == "alert.log")
    assert a["type"] == "alert" and a["hosts"] == ["h2"] and a["summary"] == "h2"
    (tmp_path / "down-h2").unlink()
    d.wait(lambda e: e["event"] == "alert.log" and e["type"] == "upalert")
    d.wait(lambda e: e["event"] == "service.state" and e["state"] == "ok")
    assert d.stop() == 0
    assert d.events[-1]["event"] == "daemon.stopped"
    assert all({"event", "level", "timestamp"} <= e.keys() for e in d.events)


def test_schedule_does_not_drift_and_never_overlaps(tmp_path: Path, daemons: list[Daemon]) -> None:
    cfg = setup(tmp_path, f"""  g:
    fast:
      interval: 0.2s
      exclude_hosts: [slowhost]
      monitor: {{name: rec, dir: "{tmp_path}"}}
    slow:
      interval: 0.2s
      timeout: 0.5s
      exclude_hosts: [h1]
      monitor: {{name: rec, dir: "{tmp_path}", sleep: 0.45}}
""", groups="g: [h1, slowhost]")
    d = Daemon(cfg)
    daemons.append(d)
    d.wait(lambda e: e["event"] == "daemon.started")
    time.sleep(3.0)
    d.stop()
    fast = starts(tmp_path, "fast")
    assert len(fast) >= 13
    # no drift: the n-th run starts at first + n*interval; lateness of one run (load)
    # does not push the later ones back
    period = (fast[-1] - fast[0]) / (len(fast) - 1)
    assert abs(period - 0.2) < 0.01, period
    offsets = [t - n * 0.2 for n, t in enumerate(fast)]  # constant if every start is on its grid point
    assert max(offsets) - min(offsets) < 0.15, offsets
    # a run that takes longer than its interval never overlaps itself
    slow = [float(ln.split()[2]) for ln in (tmp_path / "starts").read_text().splitlines()
            if ln.startswith("slow slowhost")]
    gaps = [b - a for a, b in zip(slow, slow[1:])]
    assert gaps and min(gaps) >= 0.44, gaps


def test_timeout_is_a_failure_with_summary(tmp_path: Path, daemons: list[Daemon]) -> None:
    cfg = setup(tmp_path, f"""  g:
    s:
      interval: 5s
      timeout: 0.5s
      monitor: {{name: rec, dir: "{tmp_path}"}}
""", groups="g: [slow1, raise1, h1]")
    d = Daemon(cfg)
    daemons.append(d)
    downs = {}
    for _ in range(2):
        e = d.wait(lambda e: e["event"] == "host.state" and e["state"] == "down" and e["host"] not in downs)
        downs[e["host"]] = e["summary"]
    assert downs == {"slow1": "timeout after 0.5s", "raise1": "probe error: RuntimeError: kaboom"}
    done = d.wait(lambda e: e["event"] == "check.done")
    # rec ignores its timeout: the guard stops it 1 s after (GUARD_GRACE_S), saying the configured one
    assert done["failing"] == ["raise1", "slow1"] and 1.5 <= done["duration_s"] < 2.0
    d.stop()


CALLBACK = '''
import asyncio
from pymon.plugin import monitor, Result

def start(targets, params, done):
    mode = params["mode"]
    if mode == "raise":
        raise RuntimeError("kaboom")
    if mode == "short":
        done([Result(True, "one")])
        return None
    if mode == "twice":
        done([Result(True, "first")] * len(targets))
        done([Result(False, "second")] * len(targets))
        return None
    if mode == "later":
        h = asyncio.get_running_loop().call_later(0.05, done, [Result(t.host != "bad", "later") for t in targets])
        return h.cancel
    return None  # "awaited": this check goes through the async form

async def cb(target, params):
    return Result(False, "awaited")

monitor("cb", start=start)(cb)
'''


def test_a_callback_probe_that_misbehaves_costs_one_failed_check(tmp_path: Path, daemons: list[Daemon]) -> None:
    """`@monitor(start=...)`: the hot path's callback form, with no task or guard around
    it. Raising, answering for too few hosts or answering twice is the plugin's bug: the
    daemon records a clear failure (or the first answer) and keeps every timer going."""
    modes = ("raise", "short", "twice", "later", "awaited")
    cfg = setup(tmp_path, "  g:\n" + "".join(f"    {m}:\n      interval: 1s\n      monitor: {{name: cb, mode: {m}}}\n"
                                              for m in modes), groups="g: [h1, bad]")
    (tmp_path / "monitors" / "cb.py").write_text(CALLBACK)
    d = Daemon(cfg)
    daemons.append(d)
    seen: dict[tuple[str, str], tuple[str, str]] = {}
    while len(seen) < 2 * len(modes):
        e = d.wait(lambda e: e["event"] == "host.state" and (e["service"], e["host"]) not in seen)
        seen[(e["service"], e["host"])] = (e["state"], e["summary"])
    assert seen == {
        ("raise", "h1"): ("down", "probe error: RuntimeError: kaboom"),
        ("raise", "bad"): ("down", "probe error: RuntimeError: kaboom"),
        ("short", "h1"): ("down", "probe error: cb gave 1 results for 2 hosts"),
        ("short", "bad"): ("down", "probe error: cb gave 1 results for 2 hosts"),
        ("twice", "h1"): ("up", "first"), ("twice", "bad"): ("up", "first"),
        ("later", "h1"): ("up", "later"), ("later", "bad"): ("down", "later"),
        ("awaited", "h1"): ("down", "awaited"), ("awaited", "bad"): ("down", "awaited"),
    }
    runs = len([e for e in d.events if e["event"] == "check.done"])
    d.wait(lambda e: e["event"] == "check.done" and e["service"] == "raise", timeout=5)
    assert not [e for e in d.events if e["event"] == "check.crashed"]
    assert d.stop() == 0 and runs >= len(modes)


def test_maxprocs_queues_and_logs(tmp_path: Path, daemons: list[Daemon]) -> None:
    watch = "".join(f"""    s{i}:
      interval: 1s
      timeout: 2s
      monitor: {{name: rec, dir: "{tmp_path}", sleep: 0.3}}
""" for i in range(4))
    cfg = setup(tmp_path, "  g:\n" + watch, groups="g: [slow]", glob=", maxprocs: 1")
    d = Daemon(cfg)
    daemons.append(d)
    d.wait(lambda e: e["event"] == "scheduler.throttled")
    time.sleep(1.5)
    d.stop()
    runs = sorted(float(ln.split()[2]) for ln in (tmp_path / "starts").read_text().splitlines())
    # one at a time: starts at least 0.3 s apart, and every service got to run (none dropped)
    assert all(b - a >= 0.28 for a, b in zip(runs, runs[1:])), runs
    assert {ln.split()[0] for ln in (tmp_path / "starts").read_text().splitlines()} == {"s0", "s1", "s2", "s3"}
    # many checks waited, one line said so (at most one per 10 s)
    assert len([e for e in d.events if e["event"] == "scheduler.throttled"]) == 1 < len(runs) - 1


def test_sighup_reload_keeps_state_and_rejects_bad_config(tmp_path: Path, daemons: list[Daemon]) -> None:
    body = f"""  g:
    s:
      interval: 0.3s
      monitor: {{name: rec, dir: "{tmp_path}"}}
      periods: [{{alert: [log], upalert: [log], alertevery: 1h}}]
"""
    cfg = setup(tmp_path, body)
    (tmp_path / "down-h1").touch()
    d = Daemon(cfg)
    daemons.append(d)
    d.wait(lambda e: e["event"] == "alert.log")
    good = cfg.read_text()
    # garbage: logged, old config keeps running
    cfg.write_text("watch: [this is not\n")
    d.proc.send_signal(signal.SIGHUP)
    bad = d.wait(lambda e: e["event"] == "config.invalid")
    assert bad["problems"][0].startswith(f"{cfg}:") and bad["action"] == "keeping the running config"
    n = len(starts(tmp_path, "s"))
    time.sleep(1.0)
    assert len(starts(tmp_path, "s")) > n, "checks stopped after a bad reload"
    # a valid change: a new service appears; the failing service keeps its state,
    # so no second down alert (alertevery 1h) and the upalert still comes
    cfg.write_text(good + f"""    t:
      interval: 0.3s
      monitor: {{name: rec, dir: "{tmp_path}"}}
""")
    d.proc.send_signal(signal.SIGHUP)
    d.wait(lambda e: e["event"] == "config.reloaded")
    d.wait(lambda e: e["event"] == "check.done" and e["service"] == "t")
    (tmp_path / "down-h1").unlink()
    d.wait(lambda e: e["event"] == "alert.log" and e["type"] == "upalert")
    d.stop()
    alerts = [e for e in d.events if e["event"] == "alert.log"]
    assert [a["type"] for a in alerts] == ["alert", "upalert"]


def test_many_sighups(tmp_path: Path, daemons: list[Daemon]) -> None:
    cfg = setup(tmp_path, f"""  g:
    s:
      interval: 0.2s
      monitor: {{name: rec, dir: "{tmp_path}"}}
""")
    d = Daemon(cfg)
    daemons.append(d)
    d.wait(lambda e: e["event"] == "daemon.started")
    for _ in range(50):
        d.proc.send_signal(signal.SIGHUP)
        time.sleep(0.01)
    time.sleep(1.0)
    n = len(starts(tmp_path, "s"))
    time.sleep(0.6)
    assert len(starts(tmp_path, "s")) > n
    assert d.stop() == 0


def test_broken_dropin_is_a_located_error(tmp_path: Path) -> None:
    cfg = setup(tmp_path, "  g:\n    s: {monitor: rec}\n")
    (tmp_path / "monitors" / "bad.py").write_text("import os\n\nx = 1 +\n")
    (tmp_path / "monitors" / "clash.py").write_text(
        "from pymon.plugin import monitor\n\n@monitor('rec')\nasync def rec(t, p):\n    pass\n")
    (tmp_path / "monitors" / "sig.py").write_text(
        "from pymon.plugin import monitor\n\n@monitor('sig')\ndef sig(t):\n    pass\n")
    (tmp_path / "monitors" / "boom.py").write_text("\n\nraise ImportError('no driver')\n")
    r = subprocess.run([sys.executable, "-m", "pymon", "check-config", "-c", str(cfg)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    err = r.stderr
    assert f"{tmp_path}/monitors/bad.py:3: syntax error" in err
    assert f"{tmp_path}/monitors/boom.py:3: cannot load plugin: ImportError: no driver" in err
    assert "clash.py:3: monitor 'rec' already defined at" in err or "rec.py" in err
    assert f"{tmp_path}/monitors/sig.py:3: monitor 'sig' must be an async function" in err


def test_world_writable_plugin_dir_is_refused(tmp_path: Path) -> None:
    cfg = setup(tmp_path, "  g:\n    s: {monitor: rec}\n")
    (tmp_path / "monitors").chmod(0o777)
    r = subprocess.run([sys.executable, "-m", "pymon", "check-config", "-c", str(cfg)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert "world-writable" in r.stderr


def test_depend_skips_checks_and_startupalert_fires(tmp_path: Path, daemons: list[Daemon]) -> None:
    cfg = setup(tmp_path, f"""  g:
    ping:
      interval: 0.3s
      exclude_hosts: [h2]
      monitor: {{name: rec, dir: "{tmp_path}"}}
    web:
      interval: 0.3s
      exclude_hosts: [h1]
      depend: ["g:ping"]
      monitor: {{name: rec, dir: "{tmp_path}"}}
      periods: [{{startupalert: [log], alert: [log]}}]
    night:
      interval: 0.3s
      exclude_period: "wd {{Sun-Sat}}"
      monitor: {{name: rec, dir: "{tmp_path}"}}
""", groups="g: [h1, h2]")
    d = Daemon(cfg)
    daemons.append(d)
    s = d.wait(lambda e: e["event"] == "alert.log")
    assert s["type"] == "startupalert" and s["service"] == "web"
    d.wait(lambda e: e["event"] == "check.done" and e["service"] == "web")
    (tmp_path / "down-h1").touch()
    d.wait(lambda e: e["event"] == "check.skipped" and e["service"] == "web" and e["reason"] == "dependency failing")
    n = len(starts(tmp_path, "web"))
    time.sleep(1.0)
    assert len(starts(tmp_path, "web")) == n, "web was checked while its dependency failed"
    assert not [e for e in d.events if e["event"] == "alert.log" and e["type"] == "alert"]
    assert starts(tmp_path, "night") == [], "a check ran inside its exclude_period"
    d.stop()
