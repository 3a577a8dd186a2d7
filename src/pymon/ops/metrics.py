"""Prometheus metrics (prometheus-client), served by the control API at `/metrics`.

Events (check durations, results, alerts, scheduler lag) are counted as they happen;
states (host up, IPVS weights, disabled) are read from the daemon at scrape time, so
they can never disagree with `/status`. One registry per daemon, not the global one.

The per-check counts are plain integers, turned into metric families at scrape time:
prometheus-client's Histogram and Counter children hold a lock and a value object per
bucket: long-lived objects per service for every full garbage collection to walk, and
an observation through them costs more than the rest of the check's bookkeeping
(docs/performance.md).
"""

from __future__ import annotations

from bisect import bisect_left
from typing import TYPE_CHECKING, Any, Iterator, Protocol

import platform

from prometheus_client import CollectorRegistry, Counter, PlatformCollector, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from pymon import __version__
from pymon.ipvs.owner import fingerprint
from pymon.model.config import ServiceSpec
from .api import CONTENT_TYPE, rs_label, vs_label  # noqa: F401 (CONTENT_TYPE re-exported)
from pymon.plugin import Result
from .vrrp import metrics as vrrp_metrics
from .director_canaries import metrics as selfcheck_metrics

if TYPE_CHECKING:
    from pymon.engine.rules import ServiceState
    from pymon.ipvs.owner import LvsOwner
    from pymon.ops.control import Control
    from pymon.ops.readiness import Readiness


class Daemon(Protocol):
    """What a scrape reads of the running daemon (the wiring passes it in)."""

    states: "dict[tuple[str, str], ServiceState]"
    lvs: "LvsOwner | None"
    control: "Control"
    readiness: "Readiness"

_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
_LAG_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30)
_OUTCOMES = ("ok", "fail", "timeout", "error")


class _Hist:
    """Counts per bucket (not cumulative) and the sum; `le` bounds as Prometheus's."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]):
        self.bounds, self.counts, self.sum = bounds, [0] * (len(bounds) + 1), 0.0

    def observe(self, v: float) -> None:
        self.counts[bisect_left(self.bounds, v)] += 1
        self.sum += v

    def family_buckets(self) -> list[tuple[str, float]]:
        out, total = [], 0
        for le, n in zip([*map(_le, self.bounds), "+Inf"], self.counts):
            total += n
            out.append((le, float(total)))
        return out


def _le(b: float) -> str:
    return repr(float(b))


_RESULTS = len(_BUCKETS) + 1  # where a service's results by outcome start in its counts


class _ServiceCounts(_Hist):
    """A service's check durations (the histogram itself, not an object holding one) and,
    after its bins in the same list, its per-host results by outcome: one object and one
    list per service (~350 bytes at 10,000 services with three objects and two lists)."""

    __slots__ = ()

    def __init__(self) -> None:
        super().__init__(_BUCKETS)
        self.counts += [0] * len(_OUTCOMES)


def outcome(r: Result) -> int:
    """Index into _OUTCOMES."""
    if r.ok:
        return 0
    if r.summary.startswith("timeout after"):
        return 2
    if r.summary.startswith("probe error"):
        return 3
    return 1


class Metrics:
    def __init__(self, daemon: "Daemon"):
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.alerts = Counter("pymon_alerts_sent_total", "Alerts delivered", ["group", "service", "type"], registry=r)
        self.alerts_failed = Counter("pymon_alerts_failed_total", "Alerts that failed (exit status, timeout, error)",
                                     ["group", "service", "type"], registry=r)
        self.services: dict[tuple[str, str], _ServiceCounts] = {}
        self.lag = _Hist(_LAG_BUCKETS)
        r.register(_StateCollector(daemon))
        r.register(_CountsCollector(self))
        ProcessCollector(registry=r)  # process_cpu_seconds_total, process_resident_memory_bytes, fds, start time
        PlatformCollector(registry=r)  # python_info

    def check(self, svc: ServiceSpec, results: dict[str, Result], duration: float, lag: float) -> None:
        c = self.services.get(svc.key)
        if c is None:
            c = self.services[svc.key] = _ServiceCounts()
        if duration:
            c.observe(duration)
            self.lag.observe(lag if lag > 0.0 else 0.0)
        counts = c.counts
        for res in results.values():
            counts[_RESULTS if res.ok else _RESULTS + outcome(res)] += 1  # the usual ok without a call

    def alert(self, group: str, service: str, kind: str, ok: bool) -> None:
        (self.alerts if ok else self.alerts_failed).labels(group, service, kind).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _CountsCollector(Collector):
    def __init__(self, m: Metrics):
        self.m = m

    def collect(self) -> Iterator[Any]:
        duration = HistogramMetricFamily("pymon_check_duration_seconds", "Duration of one service check",
                                         labels=["group", "service"])
        results = CounterMetricFamily("pymon_check_results", "Per-host check results by outcome",
                                      labels=["group", "service", "outcome"])
        for (g, s), c in sorted(self.m.services.items()):
            duration.add_metric([g, s], c.family_buckets(), c.sum)
            for name, n in zip(_OUTCOMES, c.counts[_RESULTS:]):
                if n:
                    results.add_metric([g, s, name], float(n))
        yield duration
        yield results
        lag = HistogramMetricFamily("pymon_scheduler_lag_seconds", "How late a check started against its schedule")
        lag.add_metric([], self.m.lag.family_buckets(), self.m.lag.sum)
        yield lag


_STATES = ("pooled", "pooled_down", "unknown", "draining", "quiesced", "removed")


def _pool_metrics(lvs: "LvsOwner | None") -> Iterator[Any]:
    """The pool policy's gauges (ipvs/policy.py) and each service's kernel-table fingerprint."""
    pooled = GaugeMetricFamily("pymon_pool_pooled", "Real servers pooled and up (or slow-starting)",
                               labels=["virtual_service"])
    down = GaugeMetricFamily("pymon_pool_pooled_down", "Failed real servers kept pooled by min_pooled "
                             "(or a director self-fault freeze)", labels=["virtual_service"])
    need = GaugeMetricFamily("pymon_pool_need", "Real servers min_pooled keeps in the pool",
                             labels=["virtual_service"])
    refusals = CounterMetricFamily("pymon_pool_depool_refusals", "Depools refused by min_pooled or a freeze "
                                   "(a failed server kept, an operator disable held)", labels=["virtual_service"])
    state = GaugeMetricFamily("pymon_pool_state", "1 for each real server's pool state",
                              labels=["virtual_service", "real_server", "state"])
    fp = GaugeMetricFamily("pymon_ipvs_fingerprint", "32-bit digest of the kernel's entry for a virtual service "
                           "(real servers in kernel order, weights, flags): directors that should agree "
                           "have equal values", labels=["virtual_service"])
    if lvs is not None:
        for skey, r in lvs.results.items():
            vs = vs_label(skey)
            c = r.counts
            pooled.add_metric([vs], float(c.pooled))
            down.add_metric([vs], float(c.pooled_down))
            need.add_metric([vs], float(c.need))
            refusals.add_metric([vs], float(lvs.refusals.get(skey, 0)))
            for (addr, port), dec in r.decisions.items():
                rs = f"[{addr}]:{port}" if ":" in addr else f"{addr}:{port}"
                state.add_metric([vs, rs, dec.state], 1.0)
        for skey in lvs.owned:
            have = lvs.last_actual.get(skey)
            if have is not None:
                fp.add_metric([vs_label(skey)], float(fingerprint(*have)))
    yield from (pooled, down, need, refusals, state, fp)


_DEST_COUNTERS = (  # (metric, Stats field, help)
    ("pymon_ipvs_dest_connections", "connections", "Connections scheduled to the real server"),
    ("pymon_ipvs_dest_packets_in", "packets_in", "Packets from clients to the real server"),
    ("pymon_ipvs_dest_packets_out", "packets_out", "Packets from the real server to clients"),
    ("pymon_ipvs_dest_bytes_in", "bytes_in", "Bytes from clients to the real server"),
    ("pymon_ipvs_dest_bytes_out", "bytes_out", "Bytes from the real server to clients"),
)


def ipvs_counter_metrics(d: "Daemon") -> Iterator[Any]:
    """The kernel's per-real-server counters, as of the owner's last read of the table
    (the resync's dump carries them: no extra netlink work per scrape)."""
    labels = ["virtual_service", "real_server"]
    active = GaugeMetricFamily("pymon_ipvs_dest_active_connections",
                               "Active connections (ESTABLISHED) to the real server, from the kernel", labels=labels)
    inactive = GaugeMetricFamily("pymon_ipvs_dest_inactive_connections",
                                 "Inactive connections (other states) to the real server, from the kernel",
                                 labels=labels)
    counters = [CounterMetricFamily(name, f"{text}, from the kernel (since the entry was made)", labels=labels)
                for name, _, text in _DEST_COUNTERS]
    if d.lvs is not None:
        for skey, (_, dests) in d.lvs.last_actual.items():
            for dest in dests.values():
                st = dest.stats
                if st is None:
                    continue
                lv = [vs_label(skey), rs_label(dest)]
                active.add_metric(lv, float(st.active))
                inactive.add_metric(lv, float(st.inactive))
                for fam, (_, attr, _) in zip(counters, _DEST_COUNTERS):
                    fam.add_metric(lv, float(getattr(st, attr)))
    yield active
    yield inactive
    yield from counters


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
            yield GaugeMetricFamily("pymon_ready", "1 after the first full round of checks", value=float(d.readiness.ready))
        yield disabled
        weight = GaugeMetricFamily("pymon_ipvs_weight", "IPVS weight per real server (table: actual = kernel, "
                                   "wanted = config x health)", labels=["virtual_service", "real_server", "table"])
        if d.lvs is not None:
            for table, t in (("actual", d.lvs.last_actual), ("wanted", d.lvs.last_wanted)):
                for skey, (_, dests) in t.items():
                    for dest in dests.values():
                        weight.add_metric([vs_label(skey), rs_label(dest), table], float(dest.weight))
        yield weight
        if d.lvs is not None:
            yield CounterMetricFamily("pymon_ipvs_errors", "IPVS reads and changes that failed "
                                      "(the last ones are in /status ipvs.errors)", value=float(d.lvs.error_count))
        if ctl is not None:
            yield GaugeMetricFamily("pymon_config_last_reload_success", "1 when the last config load "
                                    "(start or reload) succeeded; 0: the old config keeps running",
                                    value=float(ctl.reload_ok))
            yield GaugeMetricFamily("pymon_config_last_reload_success_timestamp_seconds",
                                    "When a config load last succeeded", value=ctl.reload_success_at)
        build = GaugeMetricFamily("pymon_build_info", "pymon's version and the Python running it (always 1)",
                                  labels=["version", "python"])
        build.add_metric([__version__, platform.python_version()], 1.0)
        yield build
        yield from _pool_metrics(d.lvs)
        yield from ipvs_counter_metrics(d)
        yield from vrrp_metrics(d)  # pymon_vrrp_state{instance} (vrrp.py)
        routes = getattr(d, "routes", None)  # BGP announcements (routing/)
        if routes is not None:
            announced = GaugeMetricFamily("pymon_route_announced", "1 while this director announces the VIP "
                                          "(up or draining), 0 while withdrawn", labels=["vip"])
            for vip, a in sorted(routes.ann.items()):
                announced.add_metric([vip], 1.0 if a.announced else 0.0)
            yield announced
        yield from selfcheck_metrics(getattr(d, "selfcheck", None))  # pymon_director_fault (director_canaries.py)
        runner = getattr(d, "runner", None)  # the schedule (engine/scheduler.py): what slips when it cannot keep up
        if runner is not None:
            skipped = CounterMetricFamily("pymon_checks_skipped", "Check slots skipped: late = not started "
                                          "within the interval (the daemon could not keep up), running = the "
                                          "service's previous check still running", labels=["reason"])
            for reason, n in runner.sched.skipped.items():
                skipped.add_metric([reason], float(n))
            yield skipped
            yield GaugeMetricFamily("pymon_scheduler_behind_seconds", "How late the most overdue check is at "
                                    "this scrape (0: none is due)", value=runner.sched.behind())
