"""The kernel's per-real-server counters where users read them: /metrics and /status."""

from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace

from pymon.ipvs.table import Dest, Service, ServiceKey, Stats, make_table
from pymon.ops.api import ipvs_json
from pymon.ops.metrics import ipvs_counter_metrics

WEB = Service(ServiceKey("tcp", "10.0.0.1", 80), "wrr")
COUNTED = Stats(connections=7, packets_in=70, packets_out=60, bytes_in=7000, bytes_out=2**40, active=2, inactive=5)
ACTUAL = make_table([(WEB, [replace(Dest("10.0.0.2", 80), stats=COUNTED), Dest("10.0.0.3", 80)])])


def owner() -> SimpleNamespace:
    return SimpleNamespace(last_actual=ACTUAL, last_wanted=make_table([(WEB, [Dest("10.0.0.2", 80)])]),
                           owned={WEB.key}, dry_run=False, last_errors=[], quorum={}, healthy={}, vss=[],
                           results={}, refusals={}, frozen=lambda: False, read_error=None)


def test_metrics_per_real_server() -> None:
    samples = {(s.name, s.labels["real_server"]): s.value
               for fam in ipvs_counter_metrics(SimpleNamespace(lvs=owner())) for s in fam.samples}
    assert samples == {
        ("pymon_ipvs_dest_active_connections", "10.0.0.2:80"): 2.0,
        ("pymon_ipvs_dest_inactive_connections", "10.0.0.2:80"): 5.0,
        ("pymon_ipvs_dest_connections_total", "10.0.0.2:80"): 7.0,
        ("pymon_ipvs_dest_packets_in_total", "10.0.0.2:80"): 70.0,
        ("pymon_ipvs_dest_packets_out_total", "10.0.0.2:80"): 60.0,
        ("pymon_ipvs_dest_bytes_in_total", "10.0.0.2:80"): 7000.0,
        ("pymon_ipvs_dest_bytes_out_total", "10.0.0.2:80"): float(2**40),
    }  # 10.0.0.3 has no counters (never read from a kernel): no samples rather than zeros


def test_metrics_without_an_owner_are_empty_families() -> None:
    assert all(not fam.samples for fam in ipvs_counter_metrics(SimpleNamespace(lvs=None)))


def test_status_json_carries_counters_per_real_server() -> None:
    d = SimpleNamespace(lvs=owner(), pool=SimpleNamespace(marks=dict), states={})
    rows = ipvs_json(d)["services"][0]["real_servers"]  # type: ignore[index,arg-type]
    by = {r["real_server"]: r["counters"] for r in rows}
    assert by["10.0.0.3:80"] is None
    assert by["10.0.0.2:80"]["active"] == 2 and by["10.0.0.2:80"]["bytes_out"] == 2**40
