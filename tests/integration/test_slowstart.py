"""`slowstart` against a real daemon (IPVS dry run): no ramp at start; a server that
failed and came back starts at weight 1 and climbs in coarse steps to its weight over the
configured time, sampled through /status and the daemon's change log."""

from __future__ import annotations

import time
from pathlib import Path

from apiclient import A, B, Running
from daemons import Daemon, setup
from httpserver import free_port

VS = "TCP 10.9.9.9:80"
WEIGHT, RAMP = 10, 4.0  # min(10, floor(4 s / 1 s), 10 - 1) = 4 steps (docs/pool-policy.md)


def weight_of(p: Running, host: str) -> int | None:
    code, st = p.call("GET", "/status")
    assert code == 200
    vs = next(v for v in st["ipvs"]["services"] if v["virtual_service"] == VS)
    return next(d["wanted_weight"] for d in vs["real_servers"] if d["host"] == host)


def test_a_recovered_server_ramps_from_1_to_its_weight(tmp_path: Path) -> None:
    port = free_port()
    cfg = setup(tmp_path, f"""  g:
    s:
      interval: 0.2s
      monitor: {{name: rec, dir: "{tmp_path}"}}
virtual_services:
  - vip: 10.9.9.9:80
    watch: g:s
    weight: {WEIGHT}
    slowstart: {RAMP}s
    real_servers: [{A}, {B}]
ipvs: {{dry_run: true}}
""", groups=f"g: [{A}, {B}]", glob=f", control_port: {port}")
    p = Running(tmp_path, Daemon(cfg), port)
    try:
        p.d.wait(lambda e: e["event"] == "daemon.ready")
        assert weight_of(p, B) == WEIGHT  # no ramp at daemon start
        (tmp_path / f"down-{B}").touch()
        p.d.wait(lambda e: e["event"] == "host.state" and e["host"] == B and e["state"] == "down")
        p.d.wait(lambda e: e["event"] == "ipvs.would_change" and e["op"].startswith("del dest") and B in e["op"])
        (tmp_path / f"down-{B}").unlink()
        def ups() -> list[int]:
            return [i for i, e in enumerate(p.d.events)
                    if e["event"] == "host.state" and e["host"] == B and e["state"] == "up"]

        p.d.wait(lambda e: len(ups()) == 2)  # the first was at start
        samples: list[tuple[float, int | None]] = []
        t0 = time.monotonic()
        while time.monotonic() - t0 < RAMP + 3:
            samples.append((time.monotonic() - t0, weight_of(p, B)))
            if samples[-1][1] == WEIGHT:
                break
            time.sleep(0.1)
        print(f"\nslowstart {RAMP}s to weight {WEIGHT}, (s after up, weight): "
              f"{[(round(t, 1), w) for t, w in samples if w is not None][:60]}")
        weights = [w for _, w in samples if w is not None]
        assert weights[0] <= 2, samples  # back at weight 1 (a step may have passed before the first sample)
        assert weights == sorted(weights) and weights[-1] == WEIGHT, samples  # rises, and gets there
        steps = sorted(set(weights))
        assert 3 <= len(steps) <= 5, steps  # coarse: a handful of steps, not one per check
        reached = next(t for t, w in samples if w == WEIGHT)
        assert RAMP * 0.6 <= reached <= RAMP + 2, (reached, samples)
        after_up = p.d.events[ups()[1]:]
        edits = [e["op"] for e in after_up if e["event"] == "ipvs.would_change" and B in e["op"]]
        assert edits[0].startswith("add dest") and edits[0].endswith("weight 1"), edits
        assert len(edits) == len(steps), (edits, steps)  # one table change per step, not per check
    finally:
        p.d.stop()
