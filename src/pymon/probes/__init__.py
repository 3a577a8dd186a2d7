"""Built-in native probes; importing this package registers them in `pymon.plugin.current`.

    http       http.py       HTTP(S) status/header/body/certificate check, per host
    tcp        tcp.py        connect (+ send/expect banner), per host
    telnet     tcp.py        tcp with port 23, expect 'login:', IAC negotiation refused
    dns        dns.py        group: query each server; optional SOA serial agreement
    fping      icmp.py       group: ICMP echo to all hosts at once
    freespace  freespace.py  local filesystem free space / inodes
    agent      agent.py      the server's own weight and state (HAProxy's agent-check), per host

Param validation contract (for the config loader)
-------------------------------------------------
Every probe module exposes `PARAM_VALIDATORS: dict[str, Callable[[params], list[str]]]`, one
entry per monitor name it registers. A validator returns every problem it finds in the
params as one-line messages (empty list: valid); it never raises. Unknown keys are
errors, so typos in the config surface at load time. `validate_params(name, params)`
below is the single entry point; for a drop-in plugin without PARAM_VALIDATORS it returns [].

Where a probe accepts mon's command-line options (http, tcp, telnet, fping, freespace), the
params may carry `argv: [...]` (the options as mon's monitor script took them, without
host names; the scheduler passes a service's monitor args that way); explicit keys
given next to `argv` override what it sets. dns reports `argv` as an error.
The scheduler also fills in `timeout` from the service's timeout when it is not set.

At run time a probe re-validates and, rather than raising, returns
Result(ok=False, summary="bad params: ...") for every host. Probes never raise; each
takes a `timeout` param (seconds) bounding its own I/O, beside the scheduler's hard
timeout.
"""

from __future__ import annotations

from typing import Callable

from pymon import plugin
from pymon.plugin import Params, Registry, param_problems
from pymon.probes import agent, dns, freespace, http, icmp, tcp

PARAM_VALIDATORS: dict[str, Callable[[Params], list[str]]] = {
    **http.PARAM_VALIDATORS, **tcp.PARAM_VALIDATORS, **dns.PARAM_VALIDATORS, **icmp.PARAM_VALIDATORS, **freespace.PARAM_VALIDATORS,
    **agent.PARAM_VALIDATORS,
}


def validate_params(name: str, params: Params, registry: Registry | None = None) -> list[str]:
    """Problems in `params` for monitor `name`; [] if valid or if it has no validator."""
    found = (registry or plugin.current).monitors.get(name)
    if found is None:
        return PARAM_VALIDATORS[name](params) if name in PARAM_VALIDATORS else []
    return param_problems(found, params, PARAM_VALIDATORS)


__all__ = ["PARAM_VALIDATORS", "validate_params", "agent", "dns", "freespace", "http", "icmp", "tcp"]
