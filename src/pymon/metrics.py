"""Prometheus metrics (prometheus-client), served by the control API at `/metrics`.

Events (check durations, results, alerts, scheduler lag) are counted as they happen;
states (host up, IPVS weights, disabled) are read from the daemon at scrape time, so
they can never disagree with `/status`. One registry per daemon, not the global one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from .config import ServiceSpec
from .api import CONTENT_TYPE, rs_label, vs_label  # noqa: F401 (CONTENT_TYPE re-exported)
from .plugin import Result
from .vrrp import metrics as vrrp_metrics

if TYPE_CHECKING:
    from .daemon import Daemon

_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


def outcome(r: Result) -> str:
    if r.ok:
        return "ok"
    if r.summary.startswith("timeout after"):
        return "timeout"
    if r.summary.startswith("probe error"):
        return "error"
    return "fail"


class Metrics:
    def __init__(self, daemon: "Daemon"):
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.check_duration = Histogram("pymon_check_duration_seconds", "Duration of one service check",
                                        ["group", "service"], buckets=_BUCKETS, registry=r)
        self.results = Counter("pymon_check_results_total", "Per-host check results by outcome",
                               ["group", "service", "outcome"], registry=r)
        self.alerts = Counter("pymon_alerts_sent_total", "Alerts delivered", ["group", "service", "type"], registry=r)
        self.alerts_failed = Counter("pymon_alerts_failed_total", "Alerts that failed (exit status, timeout, error)",
                                     ["group", "service", "type"], registry=r)
        self.lag = Histogram("pymon_scheduler_lag_seconds", "How late a check started against its schedule",
                             buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30), registry=r)
        r.register(_StateCollector(daemon))
        # per service: its duration histogram and its result counters by outcome (labels() costs
        # more than the observation itself, once per check)
        self._children: dict[tuple[str, str], tuple[Any, dict[str, Any]]] = {}

    def check(self, svc: ServiceSpec, results: dict[str, Result], duration: float, lag: float) -> None:
        ch = self._children.get(svc.key)
        if ch is None:
            ch = self._children[svc.key] = (self.check_duration.labels(svc.group, svc.name), {})
        if duration:
            ch[0].observe(duration)
            self.lag.observe(max(lag, 0.0))
        counters = ch[1]
        for res in results.values():
            kind = outcome(res)
            c = counters.get(kind)
            if c is None:
                c = counters[kind] = self.results.labels(svc.group, svc.name, kind)
            c.inc()

    def alert(self, group: str, service: str, kind: str, ok: bool) -> None:
        (self.alerts if ok else self.alerts_failed).labels(group, service, kind).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _StateCollector(Collector):
    def __init__(self, daemon: "Daemon"):
        self.d = daemon

    def collect(self) -> Iterator[Any]:
        d = self.d
        up = GaugeMetricFamily("pymon_host_up", "1 when the host is up for the service, 0 when down "
                               "(absent until the first decisive result, and while disabled)",
                               labels=["group", "service", "host"])
        svc_ok = GaugeMetricFamily("pymon_service_ok", "1 ok, 0 failing (absent while untested)",
                                   labels=["group", "service"])
        for (g, s), st in sorted(d.states.items()):
            for h, hs in sorted(st.hosts.items()):
                if hs.up is not None:
                    up.add_metric([g, s, h], 1.0 if hs.up else 0.0)
            if st.status != "untested":
                svc_ok.add_metric([g, s], 1.0 if st.status == "ok" else 0.0)
        yield up
        yield svc_ok
        disabled = GaugeMetricFamily("pymon_disabled", "Disabled hosts, services and watches",
                                     labels=["kind", "name"])
        ctl = getattr(d, "control", None)
        if ctl is not None:
            for kind, items in ctl.state.disabled.items():
                for name in sorted(items):
                    disabled.add_metric([kind, name], 1.0)
            yield GaugeMetricFamily("pymon_ready", "1 after the first full round of checks", value=float(ctl.ready))
        yield disabled
        weight = GaugeMetricFamily("pymon_ipvs_weight", "IPVS weight per real server (table: actual = kernel, "
                                   "wanted = config x health)", labels=["virtual_service", "real_server", "table"])
        if d.lvs is not None:
            for table, t in (("actual", d.lvs.last_actual), ("wanted", d.lvs.last_wanted)):
                for skey, (_, dests) in t.items():
                    for dest in dests.values():
                        weight.add_metric([vs_label(skey), rs_label(dest), table], float(dest.weight))
        yield weight
        yield from vrrp_metrics(d)  # pymon_vrrp_state{instance} (vrrp.py)
