"""The VRRP role this director has, as keepalived reports it.

Director failover belongs to keepalived (VRRP-only mode: it owns the VIP, pymon owns
the IPVS table on every director). keepalived's notify hook (`etc/ha/pymon-vrrp-notify`,
called with `TYPE NAME STATE PRIORITY`) tells pymon through the control API:

    POST /vrrp/{instance}  {"state": "MASTER", "priority": 150, "type": "INSTANCE", "time": 1700000000.5}
    GET  /vrrp

pymon shows the role in `/status` (`vrrp`), `pymon status`, the status page and the
metric `pymon_vrrp_state{instance}` (keepalived's numbering: 0 init/stop, 1 backup,
2 master, 3 fault), and runs `vrrp.alert` on every role change: entering FAULT or
STOP is an `alert` (retval 1), entering MASTER or BACKUP an `upalert` (retval 0); the
group is `vrrp`, the service and the host the instance name.

keepalived runs notify scripts concurrently, so two quick transitions may arrive out
of order: a report carrying an older `time` than the one held is ignored. The roles
are kept in `<statedir>/vrrp.json` so a restarted pymon still knows them (marked
`restored` until keepalived speaks again: keepalived notifies only on transitions).
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Protocol

from pymon.ops.persist import move_aside

if TYPE_CHECKING:
    from aiohttp import web

    from pymon.engine.plugin_loading import Plugins
    from pymon.engine.rules import Fire, ServiceState
    from pymon.model.config import Config


class AlertDone(Protocol):
    def alert_done(self, st: "ServiceState", fire: "Fire", now: float, task: "asyncio.Task[bool]") -> None: ...


class Daemon(Protocol):
    """What the VRRP role needs of the running daemon (the wiring passes it in)."""

    cfg: "Config | None"
    plugins: "Plugins | None"
    log: Any
    alert_tasks: "set[asyncio.Task[Any]]"
    control: AlertDone

MAX_AHEAD_S = 300.0  # a report's `time` may be this far ahead of our clock (keepalived on a peer, skew)
STATES = ("MASTER", "BACKUP", "FAULT", "STOP", "INIT", "DELETED")
# keepalived's vrrpInstanceState numbering (SNMP): init 0, backup 1, master 2, fault 3
METRIC_VALUE = {"INIT": 0, "STOP": 0, "DELETED": 0, "BACKUP": 1, "MASTER": 2, "FAULT": 3}
_ALERT_KIND = {"FAULT": "alert", "STOP": "alert", "DELETED": "alert", "INIT": "alert",
               "MASTER": "upalert", "BACKUP": "upalert"}


@dataclass
class Role:
    state: str
    priority: int | None = None
    type: str = "INSTANCE"  # keepalived's INSTANCE or GROUP (a sync group)
    since: float = 0.0  # when this state began (as far as pymon heard)
    reported: float = 0.0  # the reporter's time of the last report (orders concurrent hooks)
    previous: str | None = None
    changes: int = 0
    by: str = ""
    restored: bool = False


def parse_state(text: str) -> str:
    s = str(text).strip().upper()
    if s not in STATES:
        raise ValueError(f"state must be one of {', '.join(STATES)} (keepalived's), got {text!r}")
    return s


@dataclass
class Vrrp:
    """The roles by instance name; owned by Control, saved beside state.json."""

    d: "Daemon"
    roles: dict[str, Role] = field(default_factory=dict)
    path: Path | None = None

    def load(self) -> None:
        assert self.d.cfg is not None
        self.path = self.d.cfg.statedir / "vrrp.json"
        try:
            data = json.loads(self.path.read_text())
            now = time.time()
            self.roles = {k: replace(Role(**{f: v[f] for f in Role.__dataclass_fields__ if f in v}), restored=True)
                          for k, v in data.get("instances", {}).items()}
            for r in self.roles.values():  # a clock that was ahead must not freeze a role
                if not isinstance(r.reported, (int, float)) or not r.reported <= now + MAX_AHEAD_S:
                    r.reported = now
        except FileNotFoundError:
            pass
        except OSError as e:
            self.d.log.warning("vrrp.state_unreadable", file=str(self.path), error=str(e))
        except (ValueError, TypeError, AttributeError, RecursionError) as e:  # not a file we wrote: moved aside
            self.roles = {}
            self.d.log.warning("vrrp.state_corrupt", file=str(self.path), error=f"{type(e).__name__}: {e}"[:300],
                               moved_to=move_aside(self.path), action="starting without roles")
        if self.roles:
            self.d.log.info("vrrp.restored", roles={k: r.state for k, r in self.roles.items()})

    def save(self) -> None:
        if self.path is None:
            return
        tmp = self.path.with_suffix(".json.tmp")
        try:
            tmp.write_text(json.dumps({"instances": {k: asdict(r) for k, r in self.roles.items()}}))
            os.replace(tmp, self.path)
        except OSError as e:
            self.d.log.warning("vrrp.write_failed", file=str(self.path), error=str(e))

    def report(self, instance: str, state: str, priority: int | None = None, kind: str = "INSTANCE",
               at: float | None = None, by: str = "") -> tuple[Role, bool]:
        """One notify from keepalived; returns the role held after it and whether it changed.
        A report older than the one held (`at`, the hook's clock) is ignored."""
        now = time.time()
        at = now if at is None else at
        if not math.isfinite(at) or at > now + MAX_AHEAD_S:
            # a report from the far future would make every later one "stale": the role would freeze
            raise ValueError(f"time {at!r} is not a time within {MAX_AHEAD_S:g}s of this host's clock "
                             f"({now:.0f}); leave it out to use the time of arrival")
        state = parse_state(state)
        old = self.roles.get(instance)
        if old is not None and at < old.reported:
            self.d.log.info("vrrp.stale", instance=instance, state=state, reported=at, held=old.state)
            return old, False
        changed = old is None or old.state != state
        if old is not None and not changed:
            old.reported, old.restored, old.by = at, False, by
            if priority is not None:
                old.priority = priority
            self.save()
            return old, False
        role = Role(state=state, priority=priority if priority is not None else (old.priority if old else None),
                    type=kind.upper(), since=now, reported=at, previous=old.state if old else None,
                    changes=(old.changes + 1) if old else 1, by=by)
        self.roles[instance] = role
        self.d.log.warning("vrrp.role", instance=instance, state=state, previous=role.previous,
                           priority=role.priority, by=by)
        self.save()
        if old is None or old.state != state:
            self.alert(instance, role)
        return role, True

    def role(self) -> str | None:
        """This director's role across instances: MASTER, BACKUP, FAULT, mixed, or None."""
        states = {r.state for r in self.roles.values() if r.state != "DELETED"}
        if not states:
            return None
        return states.pop() if len(states) == 1 else "mixed"

    def json(self) -> dict[str, Any]:
        return {"role": self.role(), "instances": {k: asdict(r) for k, r in sorted(self.roles.items())}}

    # -- alert on role change ---------------------------------------------------------

    def alert(self, instance: str, role: Role) -> None:
        cfg = self.d.cfg
        if cfg is None or not cfg.vrrp_alert or self.d.plugins is None:
            return
        from pymon.engine import alerting
        from pymon.model.config import ServiceSpec, PluginSpec
        from pymon.engine.rules import Fire, ServiceState

        kind = _ALERT_KIND[role.state]
        prio = f" (priority {role.priority})" if role.priority is not None else ""
        summary = f"VRRP {instance}: {role.previous or 'unknown'} -> {role.state}{prio}"
        output = f"{summary}\nreported by {role.by or 'keepalived'}\n"
        spec = ServiceSpec("vrrp", instance, PluginSpec("vrrp"), description=f"keepalived VRRP instance {instance}",
                           passive=True)
        st = ServiceState(spec)
        # the pseudo group "vrrp" with the instance as its one host (mon's -h for legacy scripts)
        acfg = replace(cfg, hostgroups={**cfg.hostgroups, "vrrp": [instance]})
        now = time.time()
        for spec_a in cfg.vrrp_alert:
            fire = Fire(kind, spec_a, "vrrp", output, 0 if kind == "upalert" else 1)  # type: ignore[arg-type]
            task = asyncio.get_running_loop().create_task(
                alerting.deliver(acfg, self.d.plugins, st, fire, now, self.d.log))
            self.d.alert_tasks.add(task)
            task.add_done_callback(self.d.alert_tasks.discard)
            task.add_done_callback(lambda t, fire=fire: self.d.control.alert_done(st, fire, now, t))


# -- API, metrics (api.py and metrics.py call these) --------------------------------------


def routes(router: "web.UrlDispatcher", api: Any) -> None:
    from aiohttp import web

    from pymon.ops.web_request import body as _body, err as _err, peer as _peer

    async def get(request: web.Request) -> web.Response:
        return web.json_response(api.d.control.vrrp.json())

    async def post(request: web.Request) -> web.Response:
        body = await _body(request)
        try:
            prio = body.get("priority")
            prio = None if prio in (None, "") else int(prio)
            at = body.get("time")
            at = None if at in (None, "") else float(at)
            role, changed = api.d.control.vrrp.report(request.match_info["instance"], str(body.get("state", "")),
                                                      prio, str(body.get("type") or "INSTANCE"), at, _peer(request))
        except (ValueError, TypeError) as e:
            return _err(400, str(e))
        return web.json_response({"instance": request.match_info["instance"], "changed": changed, **asdict(role)})

    router.add_get("/vrrp", get)
    router.add_post("/vrrp/{instance}", post)


OPENAPI_PATHS: dict[str, Any] = {
    "/vrrp": {"get": {"summary": "the VRRP roles keepalived reported (role: MASTER, BACKUP, FAULT, mixed)",
                      "responses": {"200": {"description": "OK"}, "401": {"description": "missing or wrong token"}}}},
    "/vrrp/{instance}": {"post": {
        "summary": "keepalived's notify: this director's state for a VRRP instance (etc/ha/pymon-vrrp-notify)",
        "parameters": [{"name": "instance", "in": "path", "required": True, "schema": {"type": "string"}}],
        "requestBody": {"required": True, "content": {"application/json": {"schema": {
            "type": "object", "required": ["state"], "properties": {
                "state": {"enum": list(STATES)}, "priority": {"type": "integer"},
                "type": {"enum": ["INSTANCE", "GROUP"]},
                "time": {"type": "number", "description": "the hook's clock; an older report than the held one "
                                                          "is ignored (hooks run concurrently)"}}}}}},
        "responses": {"200": {"description": "OK"}, "400": {"description": "bad state"},
                      "401": {"description": "missing or wrong token"}}}},
}


def metrics(d: "Daemon") -> Iterator[Any]:
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

    ctl = getattr(d, "control", None)
    v = getattr(ctl, "vrrp", None)
    state = GaugeMetricFamily("pymon_vrrp_state", "VRRP state keepalived reported: 0 init/stop, 1 backup, "
                              "2 master, 3 fault", labels=["instance"])
    changes = CounterMetricFamily("pymon_vrrp_transitions", "VRRP state changes reported to this pymon",
                                  labels=["instance"])
    if v is not None:
        for name, r in sorted(v.roles.items()):
            state.add_metric([name], float(METRIC_VALUE[r.state]))
            changes.add_metric([name], float(r.changes))
    yield state
    yield changes


def format_status(st: dict[str, Any]) -> list[str]:
    """`pymon status` lines for the VRRP roles (none when keepalived never reported)."""
    v = st.get("vrrp") or {}
    if not v.get("instances"):
        return []
    out = ["", f"VRRP: {v['role']}"]
    for name, r in v["instances"].items():
        prio = f" priority {r['priority']}" if r.get("priority") is not None else ""
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r["since"])) if r.get("since") else "-"
        out.append(f"  {name}: {r['state']}{prio} since {since}" + (" (restored)" if r.get("restored") else "")
                   + (f", was {r['previous']}" if r.get("previous") else ""))
    return out
