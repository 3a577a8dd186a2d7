"""The VRRP role keepalived reports (vrrp.py), against a real daemon: keepalived's
notify hook (etc/ha/pymon-vrrp-notify, run as keepalived runs it) and the CLI set it;
/status, `pymon status`, /metrics show it; role changes run vrrp.alert (a legacy
script with mon's argv, and the native log alert); reports arriving out of order are
dropped; a restarted daemon restores the roles without alerting again."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from apiclient import call, wait_socket
from daemons import Daemon, setup

REPO = Path(__file__).resolve().parents[2]
NOTIFY = REPO / "etc" / "ha" / "pymon-vrrp-notify"
ALERT = """#!/bin/sh
echo "$*" >> "$(dirname "$0")/alerts.log"
cat >> "$(dirname "$0")/alerts.log"
"""


def config(tmp: Path, alerts: str = '["rec.alert", log]') -> Path:
    script = tmp / "rec.alert"
    script.write_text(ALERT)
    script.chmod(0o755)
    cfg = setup(tmp, f"""  g:
    s:
      interval: 1s
      monitor: {{name: rec, dir: "{tmp}"}}
vrrp:
  alert: {alerts}
""", groups="g: [h1]")
    return cfg


class Pymon:
    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.d = Daemon(tmp / "pymon.yaml")
        self.sock = tmp / "pymon.sock"
        wait_socket(self.sock)
        self.token = (tmp / "token").read_text().strip()

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        return call(self.sock, method, path, self.token, body)

    def notify(self, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        """As keepalived runs its notify script: the script path plus TYPE NAME STATE PRIORITY."""
        return subprocess.run([str(NOTIFY), "--statedir", str(self.tmp), *args], capture_output=True, text=True,
                              timeout=30, env={**os.environ, **(env or {})})

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "pymon", *args, "-c", str(self.tmp / "pymon.yaml")],
                              capture_output=True, text=True, timeout=60)

    def alerts(self) -> list[str]:
        f = self.tmp / "alerts.log"
        return [ln for ln in f.read_text().splitlines() if ln.startswith("-s")] if f.exists() else []


@pytest.fixture
def pymon(tmp_path: Path):  # type: ignore[no-untyped-def]
    config(tmp_path)
    p = Pymon(tmp_path)
    try:
        yield p
    finally:
        if p.d.proc.poll() is None:
            p.d.proc.kill()
            p.d.proc.wait()


def wait_for(pred, timeout: float = 10) -> None:  # type: ignore[no-untyped-def]
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return
        time.sleep(0.05)
    raise AssertionError("condition not met")


def test_notify_hook_sets_role_in_status_metrics_and_alerts(pymon: Pymon) -> None:
    code, st = pymon.call("GET", "/status")
    assert code == 200 and st["vrrp"] == {"role": None, "instances": {}}

    r = pymon.notify("INSTANCE", "VI_1", "BACKUP", "100")
    assert r.returncode == 0, r.stderr
    code, st = pymon.call("GET", "/status")
    vi = st["vrrp"]["instances"]["VI_1"]
    assert st["vrrp"]["role"] == "BACKUP"
    assert (vi["state"], vi["priority"], vi["type"], vi["previous"], vi["changes"]) == ("BACKUP", 100, "INSTANCE",
                                                                                        None, 1)
    assert "uid" in vi["by"]  # the unix peer, as for every change through the API

    assert pymon.notify("INSTANCE", "VI_1", "MASTER", "150").returncode == 0
    code, v = pymon.call("GET", "/vrrp")
    assert v["role"] == "MASTER" and v["instances"]["VI_1"]["previous"] == "BACKUP"
    assert v["instances"]["VI_1"]["priority"] == 150

    code, text = pymon.call("GET", "/metrics")
    assert 'pymon_vrrp_state{instance="VI_1"} 2.0' in text
    assert 'pymon_vrrp_transitions_total{instance="VI_1"} 2.0' in text

    # the legacy alert: mon's argv (-u for MASTER/BACKUP), group vrrp, the instance as host
    wait_for(lambda: len(pymon.alerts()) == 2)
    first, second = pymon.alerts()
    assert first.startswith("-s VI_1 -g vrrp -h VI_1 -t ") and first.endswith(" -u")
    assert second.startswith("-s VI_1 -g vrrp -h VI_1 -t ") and second.endswith(" -u")
    wait_for(lambda: "VRRP VI_1: BACKUP -> MASTER (priority 150)" in (pymon.tmp / "alerts.log").read_text())
    pymon.d.wait(lambda e: e["event"] == "alert.sent" and e["alert"] == "log" and "-> MASTER" in e["summary"])

    # the same state again (keepalived re-notifies on reload): no change, no alert
    assert pymon.notify("INSTANCE", "VI_1", "MASTER", "150").returncode == 0
    # FAULT through the CLI: a failure alert (no -u)
    r = pymon.cli("vrrp", "FAULT", "--instance", "VI_1")
    assert r.returncode == 0 and "vrrp VI_1: FAULT" in r.stdout, r.stderr
    wait_for(lambda: len(pymon.alerts()) == 3)
    assert not pymon.alerts()[2].endswith(" -u")
    assert 'pymon_vrrp_state{instance="VI_1"} 3.0' in pymon.call("GET", "/metrics")[1]

    r = pymon.cli("status")
    assert r.returncode == 0 and "VRRP: FAULT" in r.stdout and "VI_1: FAULT" in r.stdout, r.stdout
    code, hist = pymon.call("GET", "/history")
    assert [h["type"] for h in hist["history"] if h["group"] == "vrrp" and h["alert"] == "log"] == \
        ["upalert", "upalert", "alert"]


def test_out_of_order_reports_and_bad_input(pymon: Pymon) -> None:
    now = time.time()
    assert pymon.call("POST", "/vrrp/VI_1", {"state": "MASTER", "time": now})[0] == 200
    code, r = pymon.call("POST", "/vrrp/VI_1", {"state": "BACKUP", "time": now - 1})  # an older hook, late
    assert code == 200 and r["changed"] is False and r["state"] == "MASTER"
    code, r = pymon.call("POST", "/vrrp/VI_1", {"state": "bogus"})
    assert code == 400 and "MASTER" in r["error"]
    code, r = pymon.call("POST", "/vrrp/VI_1", {"state": "BACKUP", "priority": "high"})
    assert code == 400
    # without the token only root, pymon's user and group get in: test_socket_access.py
    # two instances disagreeing: the director's role is "mixed"
    assert pymon.call("POST", "/vrrp/VI_2", {"state": "BACKUP"})[0] == 200
    assert pymon.call("GET", "/vrrp")[1]["role"] == "mixed"
    # the hook never fails keepalived: pymon unreachable is exit 0 plus a message
    r = subprocess.run([str(NOTIFY), "--socket", str(pymon.tmp / "nowhere.sock"), "--token-file",
                        str(pymon.tmp / "token"), "INSTANCE", "VI_1", "MASTER", "1"],
                       capture_output=True, text=True, timeout=30, env={**os.environ, "PYMON_NOTIFY_TRIES": "1"})
    assert r.returncode == 0
    assert "/vrrp" in pymon.call("GET", "/openapi.json")[1]["paths"]


def test_restart_restores_roles_without_alerting_again(tmp_path: Path) -> None:
    config(tmp_path)
    p = Pymon(tmp_path)
    try:
        assert p.notify("INSTANCE", "VI_1", "MASTER", "150").returncode == 0
        wait_for(lambda: len(p.alerts()) == 1)
        assert p.d.stop() == 0
        p = Pymon(tmp_path)
        v = p.call("GET", "/vrrp")[1]["instances"]["VI_1"]
        assert v["state"] == "MASTER" and v["restored"] is True
        assert p.notify("INSTANCE", "VI_1", "MASTER", "150").returncode == 0
        v = p.call("GET", "/vrrp")[1]["instances"]["VI_1"]
        assert v["restored"] is False and v["changes"] == 1
        time.sleep(0.5)
        assert len(p.alerts()) == 1
    finally:
        if p.d.proc.poll() is None:
            p.d.proc.kill()
            p.d.proc.wait()


def test_unknown_vrrp_alert_is_a_config_error(tmp_path: Path) -> None:
    cfg = config(tmp_path, alerts='["no-such.alert"]')
    r = subprocess.run([sys.executable, "-m", "pymon", "check-config", "-c", str(cfg)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "unknown alert 'no-such.alert'" in r.stderr and "pymon.yaml:" in r.stderr, r.stderr


def test_example_ha_configs_are_valid() -> None:
    for name in ("pymon.yaml",):
        f = REPO / "etc" / "ha" / name
        if f.exists():
            r = subprocess.run([sys.executable, "-m", "pymon", "check-config", "-c", str(f)],
                               capture_output=True, text=True, timeout=60)
            assert r.returncode == 0, r.stderr
