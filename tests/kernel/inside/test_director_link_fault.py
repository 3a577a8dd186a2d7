"""The director's self-check on the real kernel (inside the VM), asserted with
`ipvsadm -Ln` in the director's namespace:

    director ns "scdir" (eth0 10.30.0.1, default via 10.30.0.254, pymon + its IPVS table)
        └── veth ──  "switch" ns "scsw" (10.30.0.254, real servers 10.30.0.11-14, busybox httpd)

The director's own link goes down (`ip link set eth0 down` in its namespace): every
check fails, but the gateway and the link carrier say it is the director: the table
stays as it was, the `director` alert runs, the track file holds -254. The link comes
back: the freeze clears, and two real servers that really fail are depooled again.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import pytest
from ipvsadm_reader import sh

PY = os.environ.get("PYMON_PYTHON", sys.executable)
DIR, SW = "scdir", "scsw"
GW = "10.30.0.254"
VIP = "10.30.0.100"
REALS = [f"10.30.0.{i}" for i in (11, 12, 13, 14)]


def dests() -> dict[str, str]:
    """{real server: weight} of our VIP, read with ipvsadm -Ln in the director's namespace."""
    out: dict[str, str] = {}
    for line in sh(f"ip netns exec {DIR} ipvsadm -Ln").splitlines()[3:]:
        if line.startswith("  ->"):
            f = line.split()
            out[f[1].rsplit(":", 1)[0]] = f[3]
    return out


def wait_until(pred: Any, timeout: float) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return
        time.sleep(0.1)
    raise AssertionError(f"not within {timeout}s; ipvsadm -Ln:\n{sh(f'ip netns exec {DIR} ipvsadm -Ln')}")


class Pymon:
    def __init__(self, cfg: Path):
        self.events: list[dict[str, Any]] = []
        self.proc = subprocess.Popen(["ip", "netns", "exec", DIR, PY, "-m", "pymon", "run", "-c", str(cfg)],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                self.events.append(json.loads(line))
            except ValueError:
                self.events.append({"event": "raw", "line": line})

    def wait(self, pred: Any, timeout: float, since: int = 0) -> dict[str, Any]:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            for e in self.events[since:]:
                if pred(e):
                    return e
            if self.proc.poll() is not None:
                raise AssertionError(f"pymon exited {self.proc.returncode}: {self.events[-10:]}")
            time.sleep(0.1)
        raise AssertionError(f"no matching event within {timeout}s: {[e.get('event') for e in self.events[-20:]]}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(120)


@pytest.fixture
def switch(tmp_path: Path) -> Iterator[dict[str, subprocess.Popen[bytes]]]:
    sh("modprobe ip_vs")
    sh(f"ip netns add {DIR} && ip netns add {SW}")
    sh(f"ip -n {DIR} link set lo up && ip -n {SW} link set lo up")
    sh(f"ip -n {DIR} link add eth0 type veth peer name port1 netns {SW}")
    sh(f"ip -n {DIR} addr add 10.30.0.1/24 dev eth0 && ip -n {DIR} link set eth0 up")
    sh(f"ip -n {DIR} route add default via {GW}")
    sh(f"ip -n {SW} addr add {GW}/24 dev port1 && ip -n {SW} link set port1 up")
    www = tmp_path / "www"
    www.mkdir()
    (www / "index.html").write_text("ok\n")
    httpd = {}
    for a in REALS:
        sh(f"ip -n {SW} addr add {a}/24 dev port1")
        # busybox httpd: a Python interpreter takes tens of seconds to start under TCG
        httpd[a] = subprocess.Popen(["ip", "netns", "exec", SW, "busybox", "httpd", "-f", "-p", f"{a}:80",
                                     "-h", str(www)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    yield httpd
    for p in httpd.values():
        p.kill()
        p.wait()
    sh(f"ip netns del {DIR}; ip netns del {SW}", check=False)


def test_director_link_down_freezes_the_table_then_real_failures_depool(
        switch: dict[str, subprocess.Popen[bytes]], tmp_path: Path) -> None:
    cfg = tmp_path / "pymon.yaml"
    cfg.write_text(f"""globals: {{statedir: {tmp_path}, mondir: {tmp_path}, alertdir: {tmp_path}}}
hostgroups: {{web: [{', '.join(REALS)}]}}
watch:
  web:
    http: {{monitor: {{name: http, port: 80}}, interval: 1s, timeout: 1s}}
virtual_services:
  - {{vip: "{VIP}:80", forwarding: nat, watch: "web:http", real_servers: [{', '.join(REALS)}]}}
ipvs: {{resync: 1s}}
self_check:
  enabled: true
  window: 3s
  canary_timeout: 0.5s
  recheck: 1s
  alert: [log]
  track_file: director-fault
""")
    track = tmp_path / "director-fault"
    t0 = time.monotonic()
    p = Pymon(cfg)
    try:
        p.wait(lambda e: e.get("event") == "daemon.started", 300)
        print(f"pymon started after {time.monotonic() - t0:.1f}s")
        full = {a: "1" for a in REALS}
        wait_until(lambda: dests() == full, 60)
        assert track.read_text() == "0\n"

        # the director's own link goes down: every check fails, nothing is depooled
        mark = len(p.events)
        sh(f"ip -n {DIR} link set eth0 down")
        fault = p.wait(lambda e: e.get("event") == "director.fault", 60, mark)
        assert "link eth0" in fault["failing"] and f"gateway {GW}" in fault["failing"], fault
        alert = p.wait(lambda e: e.get("event") == "alert.log" and e.get("group") == "director", 30, mark)
        assert alert["type"] == "alert" and alert["summary"].startswith("director fault:")
        p.wait(lambda e: sum(1 for x in p.events[mark:] if x.get("event") == "host.state"
                             and x.get("state") == "down") >= 4, 30, mark)
        time.sleep(3)  # resyncs and health reconciles while frozen
        assert dests() == full
        assert track.read_text() == "-254\n"

        # the link comes back (and the default route with it): upalert, track file 0, unfrozen
        mark = len(p.events)
        sh(f"ip -n {DIR} link set eth0 up && ip -n {DIR} route replace default via {GW}")
        p.wait(lambda e: e.get("event") == "director.recovered", 60, mark)
        p.wait(lambda e: e.get("event") == "alert.log" and e.get("group") == "director"
               and e.get("type") == "upalert", 30, mark)
        assert track.read_text() == "0\n"
        p.wait(lambda e: e.get("event") == "director.unfrozen", 60, mark)
        wait_until(lambda: dests() == full, 30)

        # real failures with the director fine: half the servers die, they depool
        mark = len(p.events)
        for a in REALS[:2]:
            switch[a].kill()
            switch[a].wait()
        wait_until(lambda: dests() == {a: "1" for a in REALS[2:]}, 60)
        p.wait(lambda e: e.get("event") == "director.them", 30, mark)
        assert not any(e.get("event") == "director.fault" for e in p.events[mark:])
        assert track.read_text() == "0\n"
        print(f"scenario done after {time.monotonic() - t0:.1f}s")
    finally:
        p.stop()
        print("\n".join(json.dumps(e) for e in p.events if str(e.get("event", "")).startswith(
            ("director", "ipvs", "raw", "alert"))))
