"""Delivering the alerts the state machine decided on: legacy scripts with mon's
argv/stdin/env, or native alert plugins, each under a hard timeout and logged."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from . import legacy
from .checks import mon_state_env
from pymon.model.config import Config
from pymon.plugin import AlertEvent
from pymon.engine.plugin_loading import Plugins
from pymon.engine.rules import Fire, ServiceState
from .watchdog import Running, labelled

_MON_TYPE = {"alert": "failure", "upalert": "up", "startupalert": "startup"}
_OPSTATUS = {"fail": "0", "ok": "1", "untested": "7"}


async def deliver(cfg: Config, plugins: Plugins, st: ServiceState, fire: Fire, now: float,
                  log: Any) -> bool:
    svc = st.spec
    name = fire.alert.name
    ev = dict(group=svc.group, service=svc.name, type=fire.kind, alert=name, period=fire.period,
              summary=fire.summary)
    found = plugins.alert(name)
    start = time.monotonic()
    if found is None:
        log.error("alert.failed", **ev, error=f"alert {name!r} not found")
        return False
    if isinstance(found, Path):
        env = legacy.monitor_env(svc.group, svc.name, svc.description, cfg.statedir, cfg.logdir,
                                 Path(cfg.file).parent, svc.env, fire.env or mon_state_env(st))
        # MON_FIRST_SUCCESS: mon exports its never-set _first_success to alerts, as empty
        env.update(MON_ALERTTYPE=_MON_TYPE[fire.kind], MON_RETVAL=str(fire.retval),
                   MON_OPSTATUS=_OPSTATUS[st.status], MON_FIRST_SUCCESS="")
        if st.acked:
            env["MON_ACK"] = st.acked
        argv = legacy.alert_argv(found, fire.kind, svc.group, svc.name, cfg.hostgroups[svc.group], now,
                                 fire.alert.args)
        run = await legacy.run(argv, env, cfg.alert_timeout, stdin=fire.output, keep_caps=fire.alert.keep_caps)
        fields = dict(ev, argv=argv, exit=run.retval, duration_s=round(run.duration_s, 3),
                      output=run.output[-2000:])
        if run.error or run.timed_out or run.retval != 0:
            log.error("alert.failed", **fields,
                      error=run.error or (f"timeout after {cfg.alert_timeout:g}s" if run.timed_out
                                          else legacy.exit_text(run.retval)))
            return False
        log.info("alert.sent", **fields)
        return True
    named = set(fire.summary.split())
    hosts = st.failing_hosts if fire.kind == "alert" else [h for h in cfg.hostgroups[svc.group] if h in named]
    event = AlertEvent(
        type=fire.kind, group=svc.group, service=svc.name, hosts=tuple(hosts),
        summary=fire.summary, detail=fire.output.split("\n", 1)[1] if "\n" in fire.output else "",
        time=now, args=fire.alert.args, description=svc.description, retval=fire.retval,
    )
    params = dict(fire.alert.params)
    if fire.alert.args:
        params.setdefault("argv", list(fire.alert.args))
    try:
        running = Running("alert", found.name, svc.group, svc.name)  # named by the loop watchdog
        await asyncio.wait_for(labelled(found.fn(event, params), running), cfg.alert_timeout)
    except asyncio.TimeoutError:
        log.error("alert.failed", **ev, error=f"timeout after {cfg.alert_timeout:g}s",
                  duration_s=round(time.monotonic() - start, 3))
        return False
    except Exception as e:  # noqa: BLE001 - a broken alert plugin is logged, never fatal
        log.error("alert.failed", **ev, error=f"{type(e).__name__}: {e}",
                  duration_s=round(time.monotonic() - start, 3))
        return False
    log.info("alert.sent", **ev, args=list(fire.alert.args), duration_s=round(time.monotonic() - start, 3))
    return True
