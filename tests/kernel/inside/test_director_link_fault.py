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
import subprocess
import time
from pathlib import Path
from typing import Any, Iterator

import pytest
from ipvsadm_reader import sh, vip_weights
from pymon_process import PymonProcess
from topology import start_httpd
from waiting import wait_until as _wait_until

DIR, SW = "scdir", "scsw"
GW = "10.30.0.254"
VIP = "10.30.0.100"
REALS = [f"10.30.0.{i}" for i in (11, 12, 13, 14)]


def dests() -> dict[str, str]:
    """{real server: weight} of our VIP, read with ipvsadm -Ln in the director's namespace."""
    return vip_weights(VIP, ns=DIR)


def wait_until(pred: Any, timeout: float) -> None:
    _wait_until(pred, timeout, state=lambda: f"ipvsadm -Ln:\n{sh(f'ip netns exec {DIR} ipvsadm -Ln')}")


@pytest.fixture
def switch(tmp_path: Path) -> Iterator[dict[str, subprocess.Popen[bytes]]]:
    sh("modprobe ip_vs")
    sh(f"ip netns add {DIR} && ip netns add {SW}")
    sh(f"ip -n {DIR} link set lo up && ip -n {SW} link set lo up")
    sh(f"ip -n {DIR} link add eth0 type veth peer name port1 netns {SW}")
    sh(f"ip -n {DIR} addr add 10.30.0.1/24 dev eth0 && ip -n {DIR} link set eth0 up")
    sh(f"ip -n {DIR} route add default via {GW}")
    sh(f"ip -n {SW} addr add {GW}/24 dev port1 && ip -n {SW} link set port1 up")
    httpd = {}
    for a in REALS:
        sh(f"ip -n {SW} addr add {a}/24 dev port1")
        httpd[a] = start_httpd(SW, tmp_path / "www", "ok\n", f"{a}:80")
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
    p = PymonProcess(cfg, DIR)
    try:
        p.wait_event("daemon.started", 300)
        print(f"pymon started after {time.monotonic() - t0:.1f}s")
        full = {a: "1" for a in REALS}
        wait_until(lambda: dests() == full, 60)
        assert track.read_text() == "0\n"

        # the director's own link goes down: every check fails, nothing is depooled
        mark = len(p.events)
        sh(f"ip -n {DIR} link set eth0 down")
        fault = p.wait_event("director.fault", 60, mark)
        assert "link eth0" in fault["failing"] and f"gateway {GW}" in fault["failing"], fault
        alert = p.wait_event(lambda e: e.get("event") == "alert.log" and e.get("group") == "director", 30, mark)
        assert alert["type"] == "alert" and alert["summary"].startswith("director fault:")
        p.wait_event(lambda e: sum(1 for x in p.events[mark:] if x.get("event") == "host.state"
                             and x.get("state") == "down") >= 4, 30, mark)
        time.sleep(3)  # resyncs and health reconciles while frozen
        assert dests() == full
        assert track.read_text() == "-254\n"

        # the link comes back (and the default route with it): upalert, track file 0, unfrozen
        mark = len(p.events)
        sh(f"ip -n {DIR} link set eth0 up && ip -n {DIR} route replace default via {GW}")
        p.wait_event("director.recovered", 60, mark)
        p.wait_event(lambda e: e.get("event") == "alert.log" and e.get("group") == "director"
               and e.get("type") == "upalert", 30, mark)
        assert track.read_text() == "0\n"
        p.wait_event("director.unfrozen", 60, mark)
        wait_until(lambda: dests() == full, 30)

        # real failures with the director fine: half the servers die, they depool
        mark = len(p.events)
        for a in REALS[:2]:
            switch[a].kill()
            switch[a].wait()
        wait_until(lambda: dests() == {a: "1" for a in REALS[2:]}, 60)
        p.wait_event("director.them", 30, mark)
        assert not any(e.get("event") == "director.fault" for e in p.events[mark:])
        assert track.read_text() == "0\n"
        print(f"scenario done after {time.monotonic() - t0:.1f}s")
    finally:
        p.stop()
        print("\n".join(json.dumps(e) for e in p.events if str(e.get("event", "")).startswith(
            ("director", "ipvs", "raw", "alert"))))
