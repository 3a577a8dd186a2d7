"""Built-in alerts; each module registers itself on import.

    log       log.py      a structured log event (alert.log)
    lvs       lvs.py      lvs.alert's options, applied through the IPVS owner
    mail      mail.py     e-mail over SMTP (STARTTLS/TLS, AUTH); mail.alert's argv
    webhook   webhook.py  JSON POST with bounded retries and backoff
    file      file.py     append mon file.alert records

Param validation is the probes' contract (see pymon/probes/__init__.py): a module
exposes `CHECKS: {alert name: fn(params) -> [problem, ...]}`, and a drop-in alert may
do the same in its own file. `check_params` is the single entry point the config
loader uses (through Plugins.problems).
"""

from __future__ import annotations

from typing import Callable

from pymon import plugin
from pymon.plugin import Params, Registry, param_problems

from . import file, log, lvs, mail, webhook  # noqa: F401


CHECKS: dict[str, Callable[[Params], list[str]]] = {
    **mail.CHECKS, **webhook.CHECKS, **file.CHECKS, "lvs": lvs.validate,
}


def check_params(name: str, params: Params, registry: Registry | None = None) -> list[str]:
    """Problems in `params` for alert `name`; [] if valid or if it has no checker."""
    found = (registry or plugin.current).alerts.get(name)
    if found is None:
        return CHECKS[name](params) if name in CHECKS else []
    return param_problems(found, params, CHECKS)