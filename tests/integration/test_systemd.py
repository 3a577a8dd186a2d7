"""systemd integration: sd_notify datagrams from a real daemon on a real NOTIFY_SOCKET
(READY after the first full round, STATUS, WATCHDOG, RELOADING/READY around SIGHUP,
STOPPING), and the unit file checked by systemd's own tools."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from daemons import setup

from pymon.ops.notify import Notifier

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "systemd" / "pymon.service"


class NotifySocket:
    def __init__(self, path: Path):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self.msgs: list[tuple[float, str]] = []
        self.closed = False
        self.t = threading.Thread(target=self._read, daemon=True)
        self.t.start()

    def _read(self) -> None:
        while not self.closed:
            try:
                data = self.sock.recv(4096)
            except socket.timeout:
                continue
            except OSError:
                return
            self.msgs.append((time.monotonic(), data.decode()))

    def wait(self, pred, timeout: float = 15, after: int = -1) -> tuple[int, str]:  # type: ignore[no-untyped-def]
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            for i, (_, m) in enumerate(self.msgs):
                if i > after and pred(m):
                    return i, m
            time.sleep(0.02)
        raise AssertionError(f"no matching notify message; got {[m for _, m in self.msgs][-20:]}")

    def close(self) -> None:
        self.closed = True
        self.t.join(2)
        self.sock.close()


def test_sd_notify_from_a_real_daemon(tmp_path: Path) -> None:
    cfg = setup(tmp_path, f"""  g:
    fast:
      interval: 0.2s
      monitor: {{name: rec, dir: "{tmp_path}"}}
      exclude_hosts: [slow1]
    slow:
      interval: 5s
      timeout: 3s
      monitor: {{name: rec, dir: "{tmp_path}", sleep: 0.8}}
      exclude_hosts: [h1]
""", groups="g: [h1, slow1]")
    ns = NotifySocket(tmp_path / "notify.sock")
    env = dict(os.environ, NOTIFY_SOCKET=str(tmp_path / "notify.sock"), WATCHDOG_USEC="1000000")
    started = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "pymon", "run", "-c", str(cfg), "--log-level", "debug"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")), daemon=True)  # type: ignore[union-attr]
    reader.start()
    try:
        i, ready = ns.wait(lambda m: m.startswith("READY=1"))
        t_ready = ns.msgs[i][0]
        # not before the slow service's first check (0.8 s) has finished
        assert t_ready - started > 0.8
        assert "STATUS=2 services: 2 ok, 0 failing, 0 untested" in ready
        def events() -> list[dict]:
            return [json.loads(ln) for ln in list(lines) if ln.startswith("{")]

        deadline = time.monotonic() + 10  # the log reader thread may trail the notify socket
        while not any(e["event"] == "daemon.ready" for e in events()) and time.monotonic() < deadline:
            time.sleep(0.05)
        seen = events()
        ready_at = next(i for i, e in enumerate(seen) if e["event"] == "daemon.ready")
        slow_first = next(i for i, e in enumerate(seen) if e["event"] == "check.done" and e["service"] == "slow")
        assert ready_at > slow_first, "READY before every service had its first check"
        # the watchdog pings at half WATCHDOG_USEC
        time.sleep(2.0)
        pings = [t for t, m in ns.msgs if m == "WATCHDOG=1"]
        assert len(pings) >= 4, pings
        assert max(b - a for a, b in zip(pings, pings[1:])) < 1.0  # systemd's deadline: WATCHDOG_USEC
        # SIGHUP: RELOADING=1 with MONOTONIC_USEC, then READY=1 again
        n = len(ns.msgs)
        before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        proc.send_signal(signal.SIGHUP)
        j, reloading = ns.wait(lambda m: m.startswith("RELOADING=1"), after=n - 1)
        usec = int(re.search(r"MONOTONIC_USEC=(\d+)", reloading).group(1))  # type: ignore[union-attr]
        assert before <= usec <= time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        ns.wait(lambda m: m.startswith("READY=1"), after=j)
        # STATUS follows state: a host goes down
        (tmp_path / "down-h1").touch()
        ns.wait(lambda m: m.startswith("STATUS=2 services: 1 ok, 1 failing"))
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
        ns.wait(lambda m: m == "STOPPING=1")
        stop_i = next(i for i, (_, m) in enumerate(ns.msgs) if m == "STOPPING=1")
        assert "READY=1" not in "".join(m for _, m in ns.msgs[stop_i + 1:])
    finally:
        if proc.poll() is None:
            proc.kill()
        ns.close()


def test_notifier_abstract_socket_and_watchdog_pid() -> None:
    name = f"pymon-test-{os.getpid()}"
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    srv.bind("\0" + name)
    srv.settimeout(2)
    try:
        n = Notifier.from_env(env={"NOTIFY_SOCKET": "@" + name, "WATCHDOG_USEC": "3000000",
                                   "WATCHDOG_PID": str(os.getpid())})
        assert n.send("READY=1", "STATUS=x")
        assert srv.recv(100) == b"READY=1\nSTATUS=x"
        assert n.watchdog_interval() == 1.5
        other = Notifier.from_env(env={"NOTIFY_SOCKET": "@" + name, "WATCHDOG_USEC": "3000000",
                                       "WATCHDOG_PID": "1"})
        assert other.watchdog_interval() is None  # the watchdog is someone else's
        assert Notifier.from_env(env={}).send("READY=1") is False  # not under systemd: a no-op
    finally:
        srv.close()


def test_notifier_never_raises() -> None:
    class Log:
        def __init__(self) -> None:
            self.n = 0

        def warning(self, *a: object, **k: object) -> None:
            self.n += 1

    log = Log()
    n = Notifier("/nonexistent/notify.sock", log)
    assert not n.send("READY=1") and not n.send("WATCHDOG=1")
    assert log.n == 1


# -- the unit file -------------------------------------------------------------------------


def _analyze() -> str:
    exe = shutil.which("systemd-analyze")
    if exe is None:
        pytest.skip("systemd-analyze not installed (Debian package systemd, in .ci/apt-packages)")
    return exe


def test_unit_verifies(tmp_path: Path) -> None:
    exe = _analyze()
    text = UNIT.read_text()
    # verify insists the ExecStart binaries exist: where pymon is not installed at the unit's
    # path (/usr/local/bin, pip's place for root), check the same unit with the pymon that is
    installed = shutil.which("pymon")
    assert installed, "pymon is not on PATH (pip install -e .)"
    if not Path("/usr/local/bin/pymon").exists():
        text = text.replace("/usr/local/bin/pymon", installed)
    unit = tmp_path / "pymon.service"
    unit.write_text(text)
    r = subprocess.run([exe, "verify", str(unit)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "pymon.service" not in r.stdout + r.stderr, r.stdout + r.stderr  # no warning about it either


def test_unit_settings() -> None:
    text = UNIT.read_text()
    kv = [ln.split("=", 1) for ln in text.splitlines() if "=" in ln and not ln.startswith("#")]
    settings: dict[str, list[str]] = {}
    for k, v in kv:
        settings.setdefault(k, []).append(v)
    one = {k: v[-1] for k, v in settings.items()}
    assert one["Type"] == "notify" and one["WatchdogSec"] and one["ExecReload"].endswith("kill -HUP $MAINPID")
    assert one["User"] == "pymon" and one["DynamicUser"] == "no"
    assert one["AmbientCapabilities"] == one["CapabilityBoundingSet"] == "CAP_NET_ADMIN CAP_NET_RAW"
    assert one["NoNewPrivileges"] == "yes" and one["ProtectSystem"] == "strict"
    assert one["StateDirectory"] == one["ConfigurationDirectory"] == "pymon"
    assert one["RestrictAddressFamilies"] == "AF_UNIX AF_INET AF_INET6 AF_NETLINK"
    assert one["SystemCallFilter"] == "@system-service"
    # bounds on what a runaway can take, each with its reason in a comment just above it
    assert int(one["LimitNOFILE"]) >= 16384 and one["MemoryMax"] == "1G" and int(one["TasksMax"]) >= 256
    lines = text.splitlines()
    for key in ("LimitNOFILE", "MemoryMax", "TasksMax"):
        i = next(i for i, ln in enumerate(lines) if ln.startswith(key + "="))
        assert lines[i - 1].startswith("#"), f"{key} needs its reason in a comment above it"


def test_exposure_score_matches_docs() -> None:
    exe = _analyze()
    r = subprocess.run([exe, "security", "--offline=true", "--no-pager", str(UNIT)],
                       capture_output=True, text=True)
    m = re.search(r"Overall exposure level for pymon.service: (\d+\.\d+) (\w+)", r.stdout + r.stderr)
    assert m, r.stdout + r.stderr
    score = m.group(1)
    assert float(score) <= 2.0
    doc = (ROOT / "docs" / "operations.md").read_text()
    assert f"exposure level {score} {m.group(2)}" in doc, f"docs/operations.md should quote {score} {m.group(2)}"
    assert f"rates it {score} {m.group(2)}" in UNIT.read_text()


def test_sysusers_creates_the_user(tmp_path: Path) -> None:
    exe = shutil.which("systemd-sysusers")
    if exe is None:
        pytest.skip("systemd-sysusers not installed")
    (tmp_path / "etc").mkdir()
    subprocess.run([exe, f"--root={tmp_path}", str(ROOT / "systemd" / "pymon.sysusers")], check=True,
                   capture_output=True)
    passwd = (tmp_path / "etc" / "passwd").read_text()
    assert re.search(r"^pymon:x:\d+:\d+:pymon health monitor:/var/lib/pymon:/usr/sbin/nologin$", passwd, re.M)
