"""bench/throughput.py's ratios against the C client: each pymon run is divided by the C
client of its own round, and the median is over rounds (`--repeat`)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

BENCH = Path(__file__).resolve().parents[2] / "bench"


def _throughput() -> ModuleType:
    sys.path.insert(0, str(BENCH))  # it imports bench/results.py as the scripts do
    try:
        spec = importlib.util.spec_from_file_location("bench_throughput", BENCH / "throughput.py")
        assert spec is not None and spec.loader is not None
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return mod
    finally:
        sys.path.remove(str(BENCH))


def _row(n: int, who: str, rnd: int, ms: float, handshakes: str = "") -> tuple[int, str, dict[str, object]]:
    return n, who, {"cpu_per_1000": ms, "round": rnd, "handshakes": handshakes}


def test_each_round_is_divided_by_its_own_c_client_and_the_median_is_over_rounds() -> None:
    t = _throughput()
    rows = [
        _row(1000, "C client", 0, 0.050), _row(1000, "pymon (asyncio)", 0, 0.070),
        _row(1000, "C client", 1, 0.100), _row(1000, "pymon (asyncio)", 1, 0.120),  # a slow round for both
        _row(1000, "C client", 2, 0.050), _row(1000, "pymon (asyncio)", 2, 0.080),
    ]
    (line,) = t.floor_summary(rows).splitlines()[2:]
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells[:2] == ["1,000", "pymon (asyncio)"]
    assert cells[4] == "1.40×, 1.20×, 1.60×"  # not 0.120 / 0.050: the slow round's C client is its anchor
    assert cells[5] == "**1.40×**" and cells[6] == "**0.080**"


def test_tls_rows_are_held_against_the_c_client_with_the_same_handshakes() -> None:
    t = _throughput()
    rows = [
        _row(100, "C client, resumed", 0, 0.2, "resumed"), _row(100, "C client, full handshakes", 0, 0.5, "full"),
        _row(100, "pymon (asyncio, full handshakes)", 0, 0.75, "full"),
    ]
    (line,) = t.floor_summary(rows).splitlines()[2:]
    assert "| 1.50× |" in line
