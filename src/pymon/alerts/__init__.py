"""Built-in alerts; each module registers itself on import.

    log       log.py      a structured log event (alert.log)
    lvs       lvs.py      lvs.alert's options, applied through the IPVS owner
    mail      mail.py     e-mail over SMTP (STARTTLS/TLS, AUTH); mail.alert's argv
    webhook   webhook.py  JSON POST with bounded retries and backoff
    file      file.py     append mon file.alert records

Param validation is the probes' contract (see pymon/probes/__init__.py): a module
exposes `PARAM_VALIDATORS: {alert name: fn(params) -> [problem, ...]}`, and a drop-in alert may
do the same in its own file. `validate_params` is the single entry point the config
loader uses (through Plugins.problems).
"""

from __future__ import annotations

from typing import Callable

from pymon import plugin
from pymon.plugin import Params, Registry, param_problems

from . import file, log, lvs, mail, webhook  # noqa: F401


PARAM_VALIDATORS: dict[str, Callable[[Params], list[str]]] = {
    **mail.PARAM_VALIDATORS, **webhook.PARAM_VALIDATORS, **file.PARAM_VALIDATORS, "lvs": lvs.validate,
}


def validate_params(name: str, params: Params, registry: Registry | None = None) -> list[str]:
    """Problems in `params` for alert `name`; [] if valid or if it has no validator."""
    found = (registry or plugin.current).alerts.get(name)
    if found is None:
        return PARAM_VALIDATORS[name](params) if name in PARAM_VALIDATORS else []
    return param_problems(found, params, PARAM_VALIDATORS)