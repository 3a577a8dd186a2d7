"""The `routing:` section of the config: its schema, its options, and how they are read.
What the section does is routing/ (announce VIPs over BGP through BIRD).

    routing:
      table: 100                # kernel table BIRD learns (`kernel table 100; learn;`)
      protocol: 252             # route protocol marking pymon's routes (BIRD: krt_source)
      announce: {when: quorum, rise: 2, fall: 1}
      interval: 1s              # one evaluation (rise/fall count these)
      graceful_shutdown: 5s     # clean stop: announce as draining this long, then withdraw
      disabled: withdraw        # operator disable: withdraw, or drain (announce as draining)
      med: {up: 100, draining: 1000}
      alert: [log]              # on every change of a VIP's announcement
"""


from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any, Callable, Literal

When = Literal["quorum", "any_pooled"]


@dataclass(frozen=True)
class Policy:
    when: When = "quorum"
    rise: int = 1
    fall: int = 1
    disabled: Literal["withdraw", "drain"] = "withdraw"

_duration = {"anyOf": [{"type": "number", "minimum": 0}, {"type": "string"}],
             "description": "seconds, or a duration such as 500ms, 5s"}

SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "description": "announce each VIP over BGP (through BIRD) while this director can serve it",
    "properties": {
        "table": {"type": "integer", "minimum": 1, "maximum": 4294967295,
                  "description": "kernel routing table for the announced host routes (BIRD learns it)"},
        "protocol": {"type": "integer", "minimum": 5, "maximum": 255,
                     "description": "route protocol number marking pymon's routes (BIRD's krt_source)"},
        "announce": {"type": "object", "additionalProperties": False,
                     "description": "when a VIP is announced, and the damping of its changes", "properties": {
            "when": {"enum": ["quorum", "any_pooled"],
                     "description": "quorum: every service on the VIP has quorum; any_pooled: one real server pooled"},
            "rise": {"type": "integer", "minimum": 1, "description": "evaluations servable before announcing"},
            "fall": {"type": "integer", "minimum": 1, "description": "evaluations not servable before withdrawing"},
        }},
        "interval": {**_duration, "description": "seconds between evaluations"},
        "graceful_shutdown": {**_duration, "description": "on a clean stop, announce as draining this long "
                              "before withdrawing (0: withdraw at once)"},
        "disabled": {"enum": ["withdraw", "drain"], "description": "what an operator's disable does"},
        "med": {"type": "object", "additionalProperties": False, "properties": {
            "up": {"type": "integer", "minimum": 0, "maximum": 4294967295,
                   "description": "MED while the VIP is announced as up (default 100)"},
            "draining": {"type": "integer", "minimum": 0, "maximum": 4294967295,
                         "description": "MED while draining, above `up`; BIRD also adds GRACEFUL_SHUTDOWN "
                         "(default 1000)"},
        }, "description": "BGP MED per announcement state (BIRD's export filter sets bgp_med from the "
            "route's metric)"},
        "alert": {"type": "array", "description": "alerts run on every change (retval 0 announced, 1 otherwise)"},
    },
}


@dataclass
class Options:
    table: int = 100
    protocol: int = 252
    policy: Policy = field(default_factory=Policy)
    interval: float = 1.0
    graceful_shutdown: float = 5.0
    med_up: int = 100
    med_draining: int = 1000
    alert: list[Any] = field(default_factory=list)  # the config's alert specs, built by the config module

    def med(self, state: str) -> int:
        return self.med_draining if state == "draining" else self.med_up


Err = Callable[[tuple[Any, ...], str], None]


def parse_options(raw: dict[str, Any], err: Err, duration: Callable[[tuple[Any, ...], Any, float], float],
                  alerts: list[Any]) -> Options:
    """The `routing:` section, already shape-checked by SCHEMA. `err(path, msg)` reports a
    problem at a path under `routing` (the config module turns it into FILE:LINE:COL);
    `duration(path, value, default)` parses a duration the config module's way."""
    ann = raw.get("announce") or {}
    med = raw.get("med") or {}
    table = raw.get("table", 100)
    if table in (0, 253, 254, 255):  # unspec, default, main, local: the kernel's own tables
        err(("table",), f"routing.table: {table} is one of the kernel's own tables (0, 253-255); "
            "use a table of its own, e.g. 100")
    opts = Options(
        table=table, protocol=raw.get("protocol", 252),
        policy=Policy(when=ann.get("when", "quorum"), rise=ann.get("rise", 1), fall=ann.get("fall", 1),
                      disabled=raw.get("disabled", "withdraw")),
        interval=duration(("interval",), raw.get("interval"), 1.0),
        graceful_shutdown=duration(("graceful_shutdown",), raw.get("graceful_shutdown"), 5.0),
        med_up=med.get("up", 100), med_draining=med.get("draining", 1000),
        alert=alerts)
    if opts.interval <= 0:
        err(("interval",), "routing.interval must be greater than 0")
    if opts.med_draining <= opts.med_up:
        err(("med", "draining") if "draining" in med else ("med",),
            f"routing.med.draining ({opts.med_draining}) must be above med.up ({opts.med_up}): "
            "a draining director is the less preferred path")
    return opts


def vip_of(address: str | None) -> str | None:
    """The canonical VIP of a virtual service's address (None for a fwmark service)."""
    return None if address is None else str(ipaddress.ip_address(address))
