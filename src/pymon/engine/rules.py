"""The pure state machine: per host × service health, and mon's alert decisions.

No I/O and no clock: every call takes `now`, so the rules can be tested
exhaustively. Per host, `fall`/`rise` debounce changes (keepalived-style); per
service, mon 1.3's rules decide alerts (`do_alert`/`proc_err` in /usr/sbin/mon),
including its quirks, because operators' alert habits depend on them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from pymon.model.config import PeriodSpec, PluginSpec, ServiceSpec
from pymon.plugin import AgentReport, Result

Status = Literal["untested", "ok", "fail"]
AlertKind = Literal["alert", "upalert", "startupalert"]


@dataclass(slots=True)  # one per host per service: no per-instance dict
class HostState:
    up: bool | None = None  # None until the first decisive result
    consec_fail: int = 0
    consec_ok: int = 0
    since: float = 0.0
    last: Result | None = None
    last_bad: Result | None = None  # why it is down, even after a first good result
    last_check: float = 0.0
    agent: AgentReport | None = None  # the server's last word on its weight (probes/agent.py), kept

    def report(self, new: AgentReport) -> bool:
        """Merge an agent's report into the last one (what it leaves out holds); True if
        that changed anything."""
        old = self.agent
        if old is not None:
            new = AgentReport(old.weight if new.weight is None else new.weight, new.state or old.state)
        if new == old:
            return False
        self.agent = new
        return True

    def observe(self, ok: bool, now: float, fall: int, rise: int) -> bool:
        """Count one result; True when the host changed state."""
        if ok:
            self.consec_ok += 1
            self.consec_fail = 0
            flip = self.up is not True and (self.up is None or self.consec_ok >= rise)
        else:
            self.consec_fail += 1
            self.consec_ok = 0
            flip = self.up is not False and self.consec_fail >= fall
        if flip:
            self.up = ok
            self.since = now
        return flip


@dataclass(slots=True)
class PeriodState:
    last_alert: float = 0.0
    alert_sent: int = 0
    first_fail_time: float = 0.0
    fail_count: int = 0
    no_comp_upalert_sent: int = 0


@dataclass(frozen=True)
class Fire:
    """One alert plugin to call, as decided by the rules."""

    kind: AlertKind
    alert: PluginSpec
    period: str
    output: str
    retval: int
    # mon's MON_* state variables as they were when mon would have called this alert
    # (None: unset); empty for alerts decided outside the state machine (quorum, vrrp)
    env: dict[str, str | None] = field(default_factory=dict, compare=False)

    @property
    def summary(self) -> str:
        return summary_of(self.output)


@dataclass(frozen=True)
class HostChange:
    host: str
    up: bool
    result: Result
    was_up: bool | None = None  # before the change, and since when
    since: float = 0.0


@dataclass(slots=True)  # one per check: no per-instance dict
class Changes:
    """What one observation changed: host flips, service flip, alerts to fire."""

    hosts: list[HostChange] = field(default_factory=list)
    status_changed: bool = False
    fires: list[Fire] = field(default_factory=list)
    agents: tuple[str, ...] = ()  # hosts whose agent report changed (a tuple: no list per check)


# What an observation that changed nothing returns (most do): one object, not one per check.
# Its readers never change it.
UNCHANGED = Changes()


# mon's values before any check: _last_failure and _last_success start at 0, the rest undefined
MON_FRESH: dict[str, str | None] = {"MON_LAST_SUMMARY": None, "MON_LAST_OUTPUT": None, "MON_LAST_FAILURE": "0",
                                    "MON_FIRST_FAILURE": None, "MON_LAST_SUCCESS": "0"}


def mon_summary(output: str) -> str | None:
    """Perl's `split("\n", $output, 2)`: undefined for an empty output, else the first line."""
    return None if output == "" else output.split("\n", 1)[0]


NO_SUMMARY = "(NO SUMMARY)"


def summary_of(output: str) -> str:
    line = output.split("\n", 1)[0]
    return NO_SUMMARY if not line.strip() else line


def _down(hosts: dict[str, HostState]) -> list[str]:
    """The hosts that are down, sorted. A loop, not a comprehension: every check asks, and
    a comprehension makes a function object each time."""
    down = []
    for h, s in hosts.items():
        if s.up is False:
            down.append(h)
    if len(down) > 1:
        down.sort()
    return down


@dataclass(slots=True)  # one per service: no per-instance dict
class ServiceState:
    spec: ServiceSpec
    hosts: dict[str, HostState] = field(default_factory=dict)
    status: Status = "untested"
    consec_failures: int = 0
    failure_count: int = 0
    first_failure: float = 0.0
    last_failure: float = 0.0
    last_success: float = 0.0
    last_check: float = 0.0
    last_summary: str = ""
    last_detail: str = ""
    last_output: str = ""
    failure_output: str = ""
    acked: str | None = None
    periods: list[PeriodState] = field(default_factory=list)
    # mon's own view for the MON_* variables of scripts (process_event in /usr/sbin/mon):
    # whole-second epochs as strings, None where mon has the value undefined (unset)
    mon: dict[str, str | None] = field(default_factory=lambda: dict(MON_FRESH))

    def __post_init__(self) -> None:
        if not self.periods:
            self.periods = [PeriodState() for _ in self.spec.periods]

    def rebind(self, spec: ServiceSpec) -> None:
        """Keep runtime state across a reload; period counters only if periods are unchanged."""
        if [p.label for p in spec.periods] != [p.label for p in self.spec.periods]:
            self.periods = [PeriodState() for _ in spec.periods]
        self.spec = spec

    @property
    def failing_hosts(self) -> list[str]:
        return _down(self.hosts)

    # -- mon's entry points ------------------------------------------------

    def startup(self, now: float) -> list[Fire]:
        return self._do_alert("startupalert", "", 0, now)

    def observe(self, now: float, results: dict[str, Result], output: str | None = None,
                retval: int | None = None, dep_ok: bool = True) -> Changes:
        """One completed check. `output`/`retval` come from a legacy monitor; native
        probes leave them None and mon's summary (failing hosts) is built here."""
        flips: list[HostChange] = []
        agents: tuple[str, ...] = ()
        fires: list[Fire] = []
        for host, res in results.items():
            hs = self.hosts.get(host)
            if hs is None:
                hs = self.hosts[host] = HostState()
            hs.last, hs.last_check = res, now
            if not res.ok:
                hs.last_bad = res
            if res.agent is not None and hs.report(res.agent):
                agents += (host,)
            was_up, since = hs.up, hs.since
            if hs.observe(res.ok, now, self.spec.fall, self.spec.rise):
                flips.append(HostChange(host, res.ok, res, was_up, since))
        self.last_check = now
        failing = _down(self.hosts)  # not the property: a property is a call through C
        if output is None or (not failing) != (retval == 0):
            output = self._native_output(failing) if failing else ""
        retval = (retval or 1) if failing else 0
        summary = summary_of(output) if output else NO_SUMMARY  # no calls for the usual native ok check
        detail = output.split("\n", 1)[1] if "\n" in output else ""
        self.last_output = output
        old = self.status
        mon = self.mon
        if failing:
            self.failure_count += 1
            self.consec_failures += 1
            self.last_failure = now
            if old != "fail":
                self.first_failure = now
            self.status = "fail"
            self.last_summary, self.last_detail = summary, detail
            # mon: the failure's times and summary are set before its alert, the output after
            mon["MON_LAST_FAILURE"] = str(int(now))
            if old != "fail":
                mon["MON_FIRST_FAILURE"] = str(int(now))
            mon["MON_LAST_SUMMARY"] = summary
            if self.spec.dep_behavior == "a" and self.spec.depend and not dep_ok:
                pass  # mon: alerts suppressed while a dependency fails
            else:
                fires = self._do_alert("alert", output, retval, now)
            self.failure_output = output
            mon["MON_LAST_OUTPUT"] = output
        else:
            self.status = "ok"
            if old == "fail" and self._has_upalert():
                # mon calls the upalert before it forgets the outage: its times, its last
                # output and summary, and the last success from before it
                fires = self._do_alert("upalert", self._upalert_output(), 0, now)
            mon.update(MON_FIRST_FAILURE="0", MON_LAST_FAILURE="0", MON_LAST_SUCCESS=str(int(now)),
                       MON_LAST_OUTPUT=output, MON_LAST_SUMMARY=mon_summary(output))
            self.acked = None
            self.first_failure = self.last_failure = 0.0
            self.consec_failures = 0
            self.failure_output = ""
            self.last_summary, self.last_detail = summary, detail
            for spec, ps in zip(self.spec.periods, self.periods):
                if not spec.alertevery_strict:
                    ps.last_alert = 0.0
                ps.first_fail_time = 0.0
                ps.alert_sent = 0
            self.last_success = now
        changed = old != self.status
        if flips or changed or fires or agents:
            return Changes(flips, changed, fires, agents)
        return UNCHANGED

    def _native_output(self, failing: list[str]) -> str:
        """mon's output of a failing native check: the failing hosts, then why each is down."""
        lines = [" ".join(failing)]
        for h in failing:
            last = self.hosts[h].last_bad
            lines.append(f"{h}: {last.summary if last else 'down'}")
        return "\n".join(lines)

    def _upalert_output(self) -> str:
        return self.failure_output or self.last_output

    def _has_upalert(self) -> bool:
        return any(p.upalert for p in self.spec.periods)

    def _do_alert(self, kind: AlertKind, output: str, retval: int, now: float) -> list[Fire]:
        if kind == "alert" and self.acked is not None:
            return []
        summary = summary_of(output)
        prevsumm = summary_of(self.failure_output)
        fires: list[Fire] = []
        for spec, ps in zip(self.spec.periods, self.periods):
            if spec.period is not None and not spec.period.contains(now):
                continue
            if kind == "upalert" and not spec.no_comp_alerts and not ps.alert_sent:
                continue
            if kind == "upalert" and spec.no_comp_alerts and ps.no_comp_upalert_sent > 0:
                continue
            if kind == "alert" and not self._alert_allowed(spec, ps, output, summary, prevsumm, now):
                continue
            called = 0
            for a in getattr(spec, kind):
                if a.exit_range and not (a.exit_range[0] <= retval <= a.exit_range[1]):
                    continue
                fires.append(Fire(kind, a, spec.label, output, retval, dict(self.mon)))
                called += 1
            if called:
                ps.last_alert = now
                # mon's `($FL_TRAP | $flags)` is always true: any upalert resets the counters
                if kind == "upalert":
                    ps.alert_sent = 0
                    ps.last_alert = 0.0
                else:
                    ps.alert_sent += 1
                    if spec.no_comp_alerts:
                        ps.no_comp_upalert_sent = 0
                if spec.no_comp_alerts and kind == "upalert":
                    ps.no_comp_upalert_sent += 1
        return fires

    def _alert_allowed(self, spec: PeriodSpec, ps: PeriodState, output: str, summary: str,
                       prevsumm: str, now: float) -> bool:
        if spec.numalerts and ps.alert_sent >= spec.numalerts:
            return False
        # mon's clock is whole seconds (`time`): a repeat due 4 intervals later is due even
        # when the float clock says 19.998 s, and never waits for a fifth
        if spec.alertevery and int(now) - int(ps.last_alert) < spec.alertevery and (
            spec.alertevery_strict
            or (spec.observe_detail and self.failure_output == output)
            or (not spec.observe_detail and not spec.ignore_summary and prevsumm == summary)
            or spec.ignore_summary
        ):
            return False
        if spec.alertafter_consec is not None:
            return self.consec_failures >= spec.alertafter_consec
        if spec.alertafter is None and spec.alertafterival is not None:
            if ps.first_fail_time == 0:
                ps.first_fail_time = now
            return now - ps.first_fail_time > spec.alertafterival
        if spec.alertafter is not None and spec.alertafterival is not None:
            ps.fail_count += 1
            if now - ps.first_fail_time <= spec.alertafterival and ps.fail_count < spec.alertafter:
                return False
            if now - ps.first_fail_time > spec.alertafterival:
                ps.fail_count = 1
            if ps.fail_count == 1:
                ps.first_fail_time = now
            return ps.fail_count >= spec.alertafter
        return True
