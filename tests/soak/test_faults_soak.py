"""Short CI variants of `bench/soak.py` (the full runs: 2,000 servers for 10 minutes, and
10 minutes of flap; figures in bench/RESULTS.md).

- soak: 200 real HTTP servers on loopback, 5 % going down and up on a random but
  recorded schedule for 60 s: every transition alerted exactly once, in order, in
  time; RSS growth < 5 % and no fd growth after warm-up;
- flap: healthy backends answering at 80 % of the timeout while every core is busy
  with a CPU burner, 30 s: no host down, no alert, no IPVS removal.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # minutes of load (pyproject: deselect with -m 'not slow')

BENCH = Path(__file__).resolve().parents[2] / "bench" / "soak.py"
_spec = importlib.util.spec_from_file_location("pymon_bench_soak", BENCH)
assert _spec is not None and _spec.loader is not None
soak = importlib.util.module_from_spec(_spec)
sys.modules["pymon_bench_soak"] = soak
_spec.loader.exec_module(soak)


async def test_soak_200_servers_60s(tmp_path: Path) -> None:
    rep = await soak.soak(n=200, duration=60.0, frac=0.05, interval=2.0, timeout=2.0, seed=20261125,
                          out=tmp_path, log=lambda *a: None)
    assert rep.ok, (rep.problems, rep.figures)
    assert (tmp_path / "schedule.json").exists()  # the recorded schedule
    assert rep.figures["alerts"] == rep.figures["transitions"] > 0


async def test_no_flapping_when_slow_and_loaded(tmp_path: Path) -> None:
    rep = await soak.flap(duration=30.0, hosts=20, interval=1.0, timeout=2.0, frac=0.8, out=tmp_path,
                          log=lambda *a: None)
    assert rep.ok, (rep.problems, rep.figures)
    assert rep.figures["requests_served"] > 20 * 12  # the checks kept running (1.6 s each, back to back)
