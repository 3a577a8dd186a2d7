"""The status page's pooled-weight timeline: a sample per change, bounded, following
the table's virtual services."""

from __future__ import annotations

from pymon.ipvs.table import Dest, Service, ServiceKey
from pymon.ops.timeline import Timeline

VS1, VS2 = ServiceKey("tcp", "10.0.0.1", 80), ServiceKey("tcp", "10.0.0.2", 80)


def table(**weights: list[int]) -> dict[ServiceKey, tuple[Service, dict[tuple[str, int], Dest]]]:
    out = {}
    for key, ws in ((VS1, weights.get("vs1")), (VS2, weights.get("vs2"))):
        if ws is not None:
            out[key] = (Service(key), {(f"10.1.0.{i}", 80): Dest(f"10.1.0.{i}", 80, weight=w)
                                       for i, w in enumerate(ws, 1)})
    return out


def test_samples_on_change_only_bounded_and_following_the_table() -> None:
    t = Timeline(samples=3)
    t.record(table(vs1=[1, 1], vs2=[0]), 100.0)
    t.record(table(vs1=[1, 1], vs2=[0]), 101.0)  # nothing changed: no sample
    t.record(table(vs1=[1, 0], vs2=[0]), 102.0)  # a real server quiesced
    assert t.json() == {"TCP 10.0.0.1:80": [(100.0, 2), (102.0, 1)], "TCP 10.0.0.2:80": [(100.0, 0)]}
    for i, w in enumerate((2, 1, 2)):
        t.record(table(vs1=[w]), 103.0 + i)
    assert t.json() == {"TCP 10.0.0.1:80": [(103.0, 2), (104.0, 1), (105.0, 2)]}  # the last 3; vs2 removed
