"""Drain through the control API and the CLI, against a real daemon (IPVS dry run):
refused by min_pooled unless forced, weight 0 at once, out at the timeout, kept across a
restart, undrained; the pool's state in /status, `pymon status` and the metrics."""

from __future__ import annotations

import json
import time
from pathlib import Path

from apiclient import A, B, Running
from daemons import Daemon, setup
from httpserver import free_port

VS = "TCP 10.9.9.9:80"


def start(tmp: Path) -> Running:
    port = free_port()
    cfg = setup(tmp, f"""  g:
    s:
      interval: 0.2s
      monitor: {{name: rec, dir: "{tmp}"}}
virtual_services:
  - vip: 10.9.9.9:80
    watch: g:s
    quiescent: true
    min_pooled: 2
    real_servers: [{A}, {B}]
ipvs: {{dry_run: true}}
""", groups=f"g: [{A}, {B}]", glob=f", control_port: {port}")
    return Running(tmp, Daemon(cfg), port)


def rows(p: Running) -> dict[str, dict]:
    code, st = p.call("GET", "/status")
    assert code == 200
    vs = next(v for v in st["ipvs"]["services"] if v["virtual_service"] == VS)
    return {d["host"]: d for d in vs["real_servers"]} | {"": vs}


def test_drain_refused_forced_timed_out_persisted_undrained(tmp_path: Path) -> None:
    p = start(tmp_path)
    try:
        p.d.wait(lambda e: e["event"] == "daemon.started")
        end = time.monotonic() + 15  # both pooled once each one's first check is in (not one round)
        while {rows(p)[h].get("state") for h in (A, B)} != {"pooled"} and time.monotonic() < end:
            time.sleep(0.1)
        r = rows(p)
        assert r[A]["state"] == r[B]["state"] == "pooled" and r[""]["pool"]["need"] == 2
        assert len(r[""]["fingerprint"]) == 8

        code, body = p.call("POST", f"/drain/{A}", {"reason": "disk swap"})
        assert code == 409 and "would leave 1 pooled, min_pooled 2" in body["error"], body
        assert rows(p)[A]["state"] == "pooled" and p.call("GET", "/status")[1]["drains"] == {}
        assert p.call("POST", "/drain/g/nosuch")[0] == 404
        assert p.call("POST", f"/drain/{A}", {"timeout": "soon"})[0] == 400

        code, body = p.call("POST", f"/drain/g/{A}", {"force": True, "timeout": 60})
        assert code == 200 and body["drain"]["group"] == "g"
        r = rows(p)
        assert (r[A]["state"], r[A]["wanted_weight"]) == ("draining", 0)  # weight 0 at once
        out = p.cli("status").stdout
        assert "DRAINING (drained)" in out and "pooled 1, pooled_down 0, need 2" in out, out
        metrics = p.call("GET", "/metrics")[1]
        assert f'pymon_pool_state{{real_server="{A}:80",state="draining",virtual_service="{VS}"}} 1.0' in metrics
        assert f'pymon_pool_pooled{{virtual_service="{VS}"}} 1.0' in metrics
        assert f'pymon_ipvs_fingerprint{{virtual_service="{VS}"}}' in metrics

        # a restart keeps the drain (the dry run's table starts empty: the drained server is not re-added)
        p.d.stop()
        p = Running(tmp_path, Daemon(tmp_path / "pymon.yaml"), p.port)
        assert list(p.call("GET", "/status")[1]["drains"]) == [f"g/{A}"]
        assert rows(p)[A]["wanted_weight"] == 0
        r3 = p.cli("undrain", "g", A, "--json")
        assert json.loads(r3.stdout) == {"name": f"g/{A}", "was_drained": True}
        p.d.wait(lambda e: e["event"] == "pool.repooled" and e["host"] == A)
        assert rows(p)[A]["state"] == "pooled"
        assert "was not drained" in p.cli("undrain", A).stdout
        # the CLI: drain with a short timeout and wait for it to leave the pool (the dry run
        # has no connection counters: only the timeout ends it)
        r2 = p.cli("drain", A, "--force", "--timeout", "1s", "--wait")
        assert r2.returncode == 0 and "draining 127.0.0.1 everywhere: done (quiesced)" in r2.stdout, r2
        e = p.d.wait(lambda e: e["event"] == "pool.drained" and e["host"] == A)
        assert "deadline reached" in e["detail"]
    finally:
        if p.d.proc.poll() is None:
            p.d.stop()
