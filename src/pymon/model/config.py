"""The YAML config: its JSON Schema, its validation, and the model it becomes.

One schema serves both `pymon schema` (editor completion) and the shape checks, so
the two cannot drift; what a schema cannot say (undefined groups, unknown plugins,
period syntax, durations) is checked afterwards. Every problem is collected and
reported at once as `FILE:LINE:COL: msg`.
"""

from __future__ import annotations

import ipaddress
import os
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Protocol, TypeVar

from pymon.ipvs.policy import MinPooled, parse_min_pooled
from pymon.ipvs.table import SVC_F_ONEPACKET, SVC_F_SCHED1, SVC_F_SCHED2, Dest, Service, ServiceKey
from .period import Period, PeriodError, parse_period
from .routing import SCHEMA as _ROUTING, Options as RoutingOptions, parse_options as parse_routing
from .webconfig import WebConfig, parse_web_config
from pymon.plugin import Target

if TYPE_CHECKING:  # the daemon reads its config in a forked child (forked.py): it need not hold these 4 MiB
    import jsonschema

    from . import yamlsrc

# Linear on any input: the number and the blanks are atomic groups, so a run of digits or
# blanks can be split between repetitions in one way only (with plain groups, 26-41
# characters of "1 1 1 ..." took seconds to minutes to refuse).
DURATION = r"^\s*(?:(?>\d+(?:\.\d+)?)(?>\s*)(?:ms|s|m|h|d|w)?(?>\s*))+$"
MAX_DURATION_CHARS = 100
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "": 1}

_duration = {"anyOf": [{"type": "number", "minimum": 0}, {"type": "string", "pattern": DURATION}],
             "description": "seconds, or a mon-style duration such as 30s, 5m, 1h, 1d"}


def _dur(description: str) -> dict[str, Any]:
    """A duration key with its own description (`_duration` itself stays one object: _message knows it)."""
    return {"allOf": [_duration], "description": description}


_argv = {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": ["string", "number"]}, "minItems": 1}]}
_plugin = {"anyOf": [_argv, {"type": "object", "required": ["name"],
                             "properties": {"name": {"type": "string"},
                                            "keep_caps": {"type": "boolean",
                                                          "description": "a legacy script keeps the daemon's "
                                                          "CAP_NET_ADMIN/CAP_NET_RAW (default false: dropped at "
                                                          "exec)"}}}]}
_alerts = {"type": "array", "items": _plugin}


def _alert_list(description: str) -> dict[str, Any]:
    return {**_alerts, "description": description}


_period = {
    "type": "object",
    "additionalProperties": False,
    "description": "one alert period of a service: when it applies and which alerts it runs (mon's period block)",
    "properties": {
        "period": {"type": "string", "description": "when this period applies: a Time::Period spec such as "
                   "`wd {Mon-Fri} hr {9am-5pm}`; omitted: always"},
        "alert": _alert_list("alerts run when the service fails; an entry may start with `exit=N` or `exit=N-M` "
                             "(mon's `alert exit=2-3 ...`): it then runs only when the monitor's exit status is in range"),
        "upalert": _alert_list("alerts run when the service recovers (only if a down alert was sent in this "
                               "period, unless `no_comp_alerts`)"),
        "startupalert": _alert_list("alerts run once when the daemon starts"),
        "alertevery": {"anyOf": [_duration, {"type": "string"}],
                       "description": "`DURATION [strict|observe_detail|summary]`: repeat an alert only after "
                       "DURATION unless the summary changed (`strict`: even then; `observe_detail`: compare the "
                       "whole output; `summary`: ignore summary changes). Omitted: every failed check alerts"},
        "alertafter": {"anyOf": [{"type": "integer", "minimum": 1}, {"type": "string"}],
                       "description": "`N` (after N consecutive failures), `'N DURATION'` (N failures within "
                       "DURATION) or `'DURATION'` (failing for longer than DURATION)"},
        "numalerts": {"type": "integer", "minimum": 0,
                      "description": "at most this many alerts per outage; 0 = no limit (default 0)"},
        "no_comp_alerts": {"type": "boolean",
                           "description": "send upalerts even when no down alert was sent in this period "
                           "(default false)"},
    },
}
_service = {
    "type": "object",
    "additionalProperties": False,
    "description": "one service of a hostgroup: its check, schedule and alert periods",
    # a trap-only (passive) service has `traptimeout` and no monitor
    "if": {"not": {"required": ["traptimeout"]}}, "then": {"required": ["monitor"]},
    "properties": {
        "interval": _dur("time between checks (default 60s)"),
        "failure_interval": _dur("time between checks while the service fails (default: `interval`)"),
        "timeout": _dur("a check past it fails (`timeout after 5s connecting`): the probe times its own I/O, "
                        "a probe still running 1 s later is stopped, a legacy monitor's process group is killed "
                        "(default: the interval, at least 1s, at most 30s)"),
        "randskew": _dur("each interval ± up to this (default 0)"),
        "monitor": {"allOf": [_plugin],
                    "description": "the probe: a string (`http.monitor -p 80 -u /health`, split like a shell "
                    "would, never run by one), a list `[name, arg, ...]`, or a mapping "
                    "`{name: http, port: 80, ...}` for native plugins"},
        "exclude_hosts": {"type": "array", "items": {"type": "string"},
                          "description": "hosts of the group this service does not check"},
        "exclude_period": {"type": "string", "description": "a Time::Period spec during which no checks run"},
        "depend": {"type": "array", "items": {"type": "string", "pattern": r"^[^:\s]+:[^:\s]+$"},
                   "description": "`group:service` entries that must be up (see `dep_behavior`)"},
        "dep_behavior": {"enum": ["a", "m"],
                         "description": "while a dependency fails: `m` skips the check, `a` runs it and "
                         "suppresses its alerts (default: `globals.dep_behavior`)"},
        "description": {"type": "string", "description": "free text, passed to alerts (`MON_DESCRIPTION`)"},
        "env": {"type": "object", "additionalProperties": {"type": ["string", "number"]},
                "description": "extra environment for legacy monitors and alerts"},
        "fall": {"type": "integer", "minimum": 1,
                 "description": "consecutive failures before a host is down (default 1)"},
        "rise": {"type": "integer", "minimum": 1,
                 "description": "consecutive successes before a host is up again (default 1)"},
        "traptimeout": _dur("instead of `monitor`: a trap-only service; no trap for this long fails every host, "
                            "again every time it passes while silent"),
        "periods": {"type": "array", "items": _period,
                    "description": "alert periods (default: one period, always, with no alerts)"},
    },
}
_SCHEDULERS = ["rr", "wrr", "lc", "wlc", "lblc", "lblcr", "dh", "sh", "sed", "nq", "fo", "ovf", "mh"]
_forwarding = {"enum": ["dr", "nat", "tun", "gate", "masq", "ipip", "g", "m", "i"]}


def _fwd(description: str) -> dict[str, Any]:
    return {**_forwarding, "description": description}


_real_server = {"anyOf": [
    {"type": "string", "description": "ADDRESS[:PORT]"},
    {"type": "object", "additionalProperties": False, "required": ["address"],
     "description": "a real server with its own settings", "properties": {
        "address": {"type": "string", "description": "ADDRESS[:PORT]; the port defaults to the VIP's"},
        "port": {"type": "integer", "minimum": 0, "maximum": 65535, "description": "the port, if not in `address`"},
        "weight": {"type": "integer", "minimum": 0,
                   "description": "its weight while healthy (default: the virtual service's `weight`)"},
        "forwarding": _fwd("its forwarding method (default: the virtual service's)"),
        "host": {"type": "string", "description": "the host's name in the watched hostgroup (default: address)"},
    }},
]}
# the pool policy's keys (ipvs/policy.py, docs/pool-policy.md), per virtual service and as `ipvs:` defaults
_MIN_POOLED = r"^\s*\d+(\.\d+)?\s*%\s*$"
_pool_keys: dict[str, Any] = {
    "min_pooled": {"anyOf": [{"type": "integer", "minimum": 0}, {"type": "string", "pattern": _MIN_POOLED}],
                   "description": "depool threshold: a failed (or operator-drained) real server leaves the pool "
                                  "only while at least this many stay in it: a count (3) or a share of all "
                                  "configured real servers (\"50%\"); default off"},
    "drain_timeout": {**_duration, "description": "a failed real server goes to weight 0 first and is removed "
                                                  "when it has no active connections or after this long; "
                                                  "default 0 (removed at once)"},
    "slowstart": {**_duration, "description": "a real server back in the pool ramps from weight 1 to its "
                                              "weight over this long (at most 10 steps); default 0 (off)"},
}
_SCHED_FLAGS = {"sh-fallback": SVC_F_SCHED1, "sh-port": SVC_F_SCHED2, "mh-fallback": SVC_F_SCHED1,
                "mh-port": SVC_F_SCHED2, "ops": SVC_F_ONEPACKET}
_virtual_service = {
    "type": "object",
    "additionalProperties": False,
    "description": "an IPVS virtual service pymon owns, driven by one watched service's per-host health",
    "required": ["watch", "real_servers"],
    "properties": {
        "name": {"type": "string", "description": "label for logs and alerts (default `TCP VIP:PORT`)"},
        "vip": {"type": "string", "description": "VIP:PORT, [IPv6]:PORT"},
        "fwmark": {"type": "integer", "minimum": 1, "description": "a firewall-mark service instead of `vip`"},
        "family": {"enum": [4, 6], "description": "address family of a `fwmark` service (default 4)"},
        "protocol": {"enum": ["tcp", "udp", "sctp"], "description": "default tcp"},
        "scheduler": {"enum": _SCHEDULERS, "description": "IPVS scheduler (default wlc)"},
        "scheduler_flags": {"type": "array", "uniqueItems": True, "items": {"enum": list(_SCHED_FLAGS)},
                            "description": "ipvsadm's -b for `mh`/`sh` (and -o): `-fallback` skips a weight-0 "
                            "or overloaded server, `-port` hashes the source port too, `ops` is one-packet "
                            "scheduling (UDP); repaired like any attribute. Active-active directors need `mh` "
                            "with both, so every director hashes a flow the same way"},
        "persistent": _dur("persistence timeout (default 0: none)"),
        "netmask": {"type": ["integer", "string"], "description": "persistence netmask: prefix length or dotted"},
        "forwarding": _fwd("dr, nat or tun (also gate/masq/ipip, g/m/i as ipvsadm's -g/-m/-i; default dr)"),
        "weight": {"type": "integer", "minimum": 0, "description": "default real-server weight (default 1)"},
        "watch": {"type": "string", "pattern": r"^[^:\s]+:[^:\s]+$", "description": "GROUP:SERVICE driving health"},
        "quiescent": {"type": "boolean", "description": "a failed real server keeps its slot at weight 0 "
                                                        "(default: true under sh and mh, false otherwise)"},
        **_pool_keys,
        "sorry_server": {"type": "string", "description": "ADDRESS[:PORT] used while no real server is healthy"},
        "quorum": {"type": "integer", "minimum": 0,
                   "description": "minimum healthy weight; below it the quorum is lost (default 0)"},
        "hysteresis": {"type": "integer", "minimum": 0,
                       "description": "quorum lost below quorum-hysteresis, regained at quorum+hysteresis "
                       "(default 0)"},
        "quorum_alert": _alert_list("alerts run when the quorum is lost or regained"),
        "real_servers": {"type": "array", "items": _real_server,
                         "description": "the real servers: `ADDRESS[:PORT]` strings or mappings"},
    },
}
_ipvs = {
    "type": "object",
    "additionalProperties": False,
    "description": "how pymon applies the IPVS table",
    "properties": {
        "dry_run": {"type": "boolean", "description": "log the changes, never touch the kernel "
                    "(also: `pymon run --dry-run`; default false)"},
        "fallback": {"enum": ["error", "dry-run"],
                     "description": "what to do when IPVS is unavailable: `dry-run` logs instead of failing "
                     "(default error)"},
        "cleanstop": {"type": "boolean", "description": "remove the virtual services on stop (default false)"},
        "resync": _dur("re-read the kernel this often and repair drift (default 30s)"),
        **{k: {**v, "description": "default for every virtual service: " + v["description"]}
           for k, v in _pool_keys.items()},
    },
}
_VRRP: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "description": "the VRRP role keepalived reports through etc/ha/pymon-vrrp-notify",
    "properties": {
        "alert": {"type": "array", "description": "alerts run on every role change (group vrrp, "
                  "service = instance): FAULT/STOP as alert, MASTER/BACKUP as upalert"},
    },
}
_SELF_CHECK: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "description": "is it me or them: when a large share of the real servers fail within one round, probe the "
                   "director's own canaries; if one fails, the director is at fault: the IPVS table is frozen "
                   "(no depools), `director` alerts run, the track file says so (docs/self-check.md)",
    "properties": {
        "enabled": {"type": "boolean", "description": "default false (mon never did this); etc/ha/pymon.yaml "
                                                      "turns it on"},
        "share": {"type": "number", "exclusiveMinimum": 0, "maximum": 1,
                  "description": "fraction of the known hosts (group x service x host) that must go down within "
                                 "`window` to suspect the director; default 0.5"},
        "min_hosts": {"type": "integer", "minimum": 1,
                      "description": "no verdict with fewer known hosts (one of two down is already half); "
                                     "default 4"},
        "window": {**_duration, "description": "one round: default the longest time a service takes to mark a "
                                                "host down (interval + fall x timeout + (fall-1) x "
                                                "failure_interval); also how long the table stays frozen after "
                                                "the canaries recover, so the checks see the servers again"},
        "canaries": {"type": "array", "items": {"type": "string"},
                     "description": "addresses that always answer ICMP echo while the director's network is "
                                    "fine (a switch, the peer director); not the real servers"},
        "gateway": {"type": "boolean", "description": "ping the default gateway(s) too; default true"},
        "links": {"type": "boolean", "description": "check the carrier (IFF_LOWER_UP) of the interfaces of "
                                                    "the routes to the real servers; default true"},
        "canary_timeout": {**_duration, "description": "wait for each canary's echo; default 1s"},
        "recheck": {**_duration, "description": "probe the canaries this often while at fault; default 2s"},
        "alert": {**_alerts, "description": "alerts run when the director is found at fault (alert, group "
                                            "director, service self_check) and when it recovers (upalert)"},
        "track_file": {"type": "string", "description": "file for keepalived's track_file: 0 while healthy, "
                                                        "`track_weight` while at fault; relative to statedir"},
        "track_weight": {"type": "integer", "minimum": -2147483647, "maximum": 2147483647,
                         "description": "what the track file holds while at fault; default -254 (with "
                                        "keepalived's default weight 1: the instance goes to FAULT); e.g. -60 "
                                        "lowers its priority instead"},
    },
}

_dirs = {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]}

SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "pymon configuration",
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "globals": {
            "type": "object",
            "additionalProperties": False,
            "description": "daemon-wide settings",
            "properties": {
                "mondir": {**_dirs, "description": "dir or list of dirs with drop-in `*.py` probes and legacy "
                           "monitor scripts (default `monitors`)"},
                "alertdir": {**_dirs, "description": "dir or list of dirs with drop-in `*.py` alerts and legacy "
                             "alert scripts (default `alerts`)"},
                "statedir": {"type": "string",
                             "description": "state file, control socket and token (default `$STATE_DIRECTORY`, "
                             "else /var/lib/pymon)"},
                "logdir": {"type": "string", "description": "MON_LOGDIR for mon scripts (default "
                           "`$LOGS_DIRECTORY`, else /var/log/pymon)"},
                "maxprocs": {"type": "integer", "minimum": 0,
                             "description": "max concurrent checks, 0 = unlimited; excess waits (logged)"},
                "randstart": _dur("first run of each service after a random delay in [0, randstart] (default 0)"),
                "alert_timeout": _dur("hard timeout for each alert (default 60s)"),
                "block_warning": _dur("log `loop.blocked` when the event loop was blocked this long (default 1s)"),
                "config_timeout": _dur("reading the next config at reload (and importing its plugins) is stopped "
                                       "after this long (default 60s)"),
                "max_alert_procs": {"type": "integer", "minimum": 1,
                                    "description": "alerts delivered at once (scripts and plugins); more wait "
                                    "their turn (default 16)"},
                "probe_workers": {"type": "integer", "minimum": 0, "maximum": 64,
                                  "description": "processes for the network I/O of HTTP(S) checks without "
                                  "keep-alive (exchange.py); 0 = in the daemon (default). Past ~5,000 checks a second: 1. They run at "
                                  "nice +5"},
                "dep_behavior": {"enum": ["a", "m"],
                                 "description": "default for services: `m` = skip the check while a dependency "
                                 "fails, `a` = run it and suppress alerts (default m)"},
                # control API (api.py)
                "control_socket": {"type": "string",
                                   "description": "unix socket of the control API, mode 0660; default "
                                   "`<statedir>/pymon.sock`"},
                "control_hosts": {"type": "array", "items": {"type": "string"},
                                  "description": "Host header names the TCP listener answers besides localhost, "
                                                 "127.0.0.1 and [::1] (a DNS-rebinding guard)"},
                "control_port": {"type": "integer", "minimum": 1, "maximum": 65535,
                                 "description": "also listen on 127.0.0.1:PORT (control API and status page)"},
                "token_file": {"type": "string",
                               "description": "API token; default `<statedir>/token` (created 0600 when missing)"},
                # metrics listener (ops/exporter.py)
                "metrics_listen": {"type": "string", "description": "ADDRESS:PORT for /metrics without the "
                                   "token, as exporters serve it (e.g. 10.0.0.5:9469; bind a private address); "
                                   "default: none, /metrics only on the control API"},
                "web_config": {"type": "string", "description": "Prometheus exporter-style web config for "
                               "metrics_listen: tls_server_config (cert_file, key_file), basic_auth_users "
                               "(bcrypt)"},
            },
        },
        "hostgroups": {
            "type": "object",
            "description": "hostgroup name → list of hosts (names or addresses, IPv4 or IPv6)",
            "additionalProperties": {"type": "array", "items": {"type": "string"}},
        },
        "watch": {
            "type": "object",
            "description": "hostgroup name → service name → service",
            "additionalProperties": {"type": "object", "additionalProperties": _service},
        },
        "virtual_services": {"type": "array", "items": _virtual_service,
                             "description": "IPVS virtual services pymon owns (see docs/ipvs.md)"},
        "ipvs": _ipvs,
        # BGP announcements through BIRD (routing/): its schema with this module's alerts and durations
        "routing": {**_ROUTING, "properties": {
            **_ROUTING["properties"],
            "alert": _alert_list(_ROUTING["properties"]["alert"]["description"]),
            "interval": _dur(_ROUTING["properties"]["interval"]["description"]),
            "graceful_shutdown": _dur(_ROUTING["properties"]["graceful_shutdown"]["description"])}},
        "vrrp": {**_VRRP, "properties": {"alert": _alert_list(_VRRP["properties"]["alert"]["description"])}},  # keepalived's role (vrrp.py)
        "self_check": _SELF_CHECK,  # the director's own fault (engine/director_fault.py)
    },
}


class ConfigError(Exception):
    """All problems of one config; each line is `FILE:LINE:COL: msg`."""

    def __init__(self, problems: list[str]):
        super().__init__("\n".join(problems))
        self.problems = problems

    def __reduce__(self) -> tuple[type[ConfigError], tuple[list[str]]]:
        return ConfigError, (self.problems,)  # it comes back from a forked reader (forked.py)


def parse_duration(v: Any) -> float:
    """mon durations: `30s`, `5m`, `1h30m`, bare numbers are seconds."""
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        out = float(v)
    else:
        s = str(v).strip()
        if len(s) > MAX_DURATION_CHARS or not re.fullmatch(DURATION, s):
            raise ValueError(f"bad duration {str(v)[:40]!r} (use e.g. 30s, 5m, 1h)")
        out = sum(float(n) * _UNITS[u] for n, _, u in re.findall(r"(\d+(\.\d+)?)\s*(ms|s|m|h|d|w)?", s))
    if not 0 <= out < 1e12:  # NaN, infinity and negatives too: they would reach JSON and timers
        raise ValueError(f"bad duration {str(v)[:40]!r} (a number of seconds from 0 to 10^12)")
    return out


def argv_of(v: Any) -> list[str]:
    """A plugin given as a string is split like a shell would, but never run by one."""
    if isinstance(v, str):
        return shlex.split(v)
    return [str(x) for x in v]


# Specs are slotted: unpickled from the forked reader (forked.py), an instance with a
# __dict__ gets a materialised dict each (+0.5 KiB per service at 10,000 services).
@dataclass(frozen=True, slots=True)
class PluginSpec:
    """A monitor or alert reference: `name` plus argv (legacy) or params (native)."""

    name: str
    args: tuple[str, ...] = ()
    params: dict[str, Any] = field(default_factory=dict, hash=False, compare=True)
    exit_range: tuple[int, int] | None = None
    keep_caps: bool = False  # a legacy script keeps the daemon's capabilities (else they are dropped at exec)


@dataclass(slots=True)
class PeriodSpec:
    period: Period | None
    label: str
    alert: list[PluginSpec] = field(default_factory=list)
    upalert: list[PluginSpec] = field(default_factory=list)
    startupalert: list[PluginSpec] = field(default_factory=list)
    alertevery: float = 0.0
    alertevery_strict: bool = False
    observe_detail: bool = False
    ignore_summary: bool = False
    alertafter_consec: int | None = None
    alertafter: int | None = None
    alertafterival: float | None = None
    numalerts: int = 0
    no_comp_alerts: bool = False


_SHARED_PARAMS: dict[int, dict[str, Any]] = {}
# The empty exclude_hosts, depend and env of the services that give none: one each for
# all (176 bytes a service otherwise); specs are not changed once built
_NONE_EXCLUDED: list[str] = []
_NO_DEPEND: list[tuple[str, str]] = []
_NO_ENV: dict[str, str] = {}


@dataclass(slots=True)
class ServiceSpec:
    group: str
    name: str
    monitor: PluginSpec
    interval: float = 60.0
    failure_interval: float | None = None
    timeout: float = 30.0
    randskew: float = 0.0
    exclude_hosts: list[str] = field(default_factory=list)
    exclude_period: Period | None = None
    depend: list[tuple[str, str]] = field(default_factory=list)
    dep_behavior: str = "m"
    description: str = ""
    env: dict[str, str] = field(default_factory=dict)
    fall: int = 1
    rise: int = 1
    traptimeout: float | None = None  # passive results: silence longer than this is a failure
    passive: bool = False  # no monitor: results only come as traps
    periods: list[PeriodSpec] = field(default_factory=list)
    _params: dict[str, Any] | None = field(default=None, init=False, repr=False, compare=False)
    # the probe's targets and the hosts they were built for: two fields, not a pair (one
    # tuple less per service)
    _targets: list[Target] | None = field(default=None, init=False, repr=False, compare=False)
    _target_hosts: tuple[str, ...] = field(default=(), init=False, repr=False, compare=False)
    # (group, name): one tuple for the spec's life, so that the dicts and sets keyed by it
    # after a check (metrics, the save's dirty set) hold it, not a copy each. A field, not a
    # property: every check reads it twice, and a property is a call through C.
    key: tuple[str, str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.key = (self.group, self.name)

    @property
    def probe_params(self) -> dict[str, Any]:
        """What a native probe gets: the monitor's params with `timeout` (and mon's
        `argv`) filled in. One dict for the spec's life, so a probe can cache what it
        parses of it by identity; probes must not change it."""
        if self._params is None:
            self._params = self._shared_params()
        return self._params

    def _shared_params(self) -> dict[str, Any]:
        params = dict(self.monitor.params)
        params["timeout"] = self.timeout  # the check's one budget (`service`): the probe's bound and the guard's
        if self.monitor.args:
            params.setdefault("argv", list(self.monitor.args))
        # a farm's services mostly share their params: one dict for all. Held by the hash of
        # their text, not the text (an int, where each watch with its own path would keep its
        # ~100-byte text), so a hit is checked against the text again
        text = repr(params)
        key = hash(text)
        found = _SHARED_PARAMS.get(key)
        if found is not None:
            return found if repr(found) == text else params
        if len(_SHARED_PARAMS) >= 65536:
            _SHARED_PARAMS.clear()
        _SHARED_PARAMS[key] = params
        return params

    def targets(self, hosts: list[str]) -> list[Target]:
        """The probe's targets for these hosts, built again only when the hosts change
        (every check asks; probes must not change the list)."""
        key = tuple(hosts)
        hit = self._targets
        if hit is None or self._target_hosts != key:
            hit = self._targets = [Target(h, self.group, self.name) for h in hosts]
            self._target_hosts = key
        return hit


@dataclass(frozen=True)
class RealServerSpec:
    host: str  # name in the watched hostgroup whose health drives it
    dest: Dest  # weight here is the weight when healthy


@dataclass
class VirtualServiceSpec:
    name: str
    service: Service
    watch: tuple[str, str]
    reals: list[RealServerSpec]
    quiescent: bool | None = None  # None: the policy's default (quiesce_default: true under sh/mh)
    sorry: Dest | None = None
    quorum: int = 0
    hysteresis: int = 0
    quorum_alert: list[PluginSpec] = field(default_factory=list)
    min_pooled: MinPooled = None  # pool policy (ipvs/policy.py): these three default to the `ipvs:` ones
    drain_timeout: float = 0.0
    slowstart: float = 0.0


@dataclass
class SelfCheckSpec:
    """`self_check:`; the decision is engine/director_fault.py, the probes ops/director_canaries.py."""

    enabled: bool = False
    share: float = 0.5
    min_hosts: int = 4
    window: float = 10.0
    canaries: list[str] = field(default_factory=list)
    gateway: bool = True
    links: bool = True
    canary_timeout: float = 1.0
    recheck: float = 2.0
    alert: list[PluginSpec] = field(default_factory=list)
    track_file: Path | None = None
    track_weight: int = -254


@dataclass
class IpvsOptions:
    dry_run: bool = False
    fallback: str = "error"
    cleanstop: bool = False
    resync: float = 30.0
    min_pooled: MinPooled = None
    drain_timeout: float = 0.0
    slowstart: float = 0.0


_FWD = {"dr": "dr", "gate": "dr", "g": "dr", "nat": "nat", "masq": "nat", "m": "nat",
        "tun": "tun", "ipip": "tun", "i": "tun"}


def split_hostport(text: str, default_port: int | None) -> tuple[str, int]:
    """`1.2.3.4:80`, `[2001:db8::1]:80`, or a bare address taking `default_port`."""
    text = text.strip()
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest.removeprefix(":")
    elif text.count(":") == 1:
        host, port = text.split(":")
    else:
        host, port = text, ""
    if port:
        if not port.isdigit():
            raise ValueError(f"bad port in {text!r}")
        return host, int(port)
    if default_port is None:
        raise ValueError(f"{text!r} needs a port (ADDRESS:PORT)")
    return host, default_port


@dataclass
class Config:
    file: str
    mondir: list[Path]
    alertdir: list[Path]
    statedir: Path
    maxprocs: int
    randstart: float
    alert_timeout: float
    hostgroups: dict[str, list[str]]
    services: dict[tuple[str, str], ServiceSpec]
    virtual_services: list[VirtualServiceSpec] = field(default_factory=list)
    ipvs: IpvsOptions = field(default_factory=IpvsOptions)
    control_socket: Path | None = None  # control API (api.py); the builder fills in the defaults
    control_port: int | None = None
    control_hosts: tuple[str, ...] = ()  # Host header names the TCP listener accepts besides the loopback ones
    token_file: Path | None = None
    block_warning: float = 1.0  # watchdog.py: warn when the event loop is blocked this long
    # MON_LOGDIR for mon's scripts (mon's `logdir`): systemd's LogsDirectory= when it is set
    logdir: Path = field(default_factory=lambda: Path(os.environ.get("LOGS_DIRECTORY") or "/var/log/pymon"))
    config_timeout: float = 60.0  # reading the next config (and importing its plugins) at reload, at most
    max_alert_procs: int = 16  # alerts delivered at once; more wait (never dropped)
    probe_workers: int = 0  # exchange.py: worker processes for HTTP(S) checks without keep-alive
    vrrp_alert: list[PluginSpec] = field(default_factory=list)  # vrrp.py: alerts on a VRRP role change
    routing: RoutingOptions | None = None  # announce VIPs over BGP (routing/); None without a `routing:` section
    metrics_listen: tuple[str, int] | None = None  # exporter.py: /metrics without the token
    web_config: WebConfig | None = None  # exporter.py: TLS and basic auth of metrics_listen
    self_check: SelfCheckSpec = field(default_factory=SelfCheckSpec)  # the director's own fault
    warnings: list[str] = field(default_factory=list)  # `FILE:LINE:COL: msg`: valid, but probably not meant

    def hosts(self, svc: ServiceSpec) -> list[str]:
        group = self.hostgroups[svc.group]
        if not svc.exclude_hosts:  # the usual service, every check: a copy in C, no comprehension's function
            return list(group)
        return [h for h in group if h not in svc.exclude_hosts]


class PluginCheck(Protocol):
    """What the builder asks of the plugins (plugins.Plugins)."""

    def monitor(self, name: str) -> object | None: ...
    def alert(self, name: str) -> object | None: ...
    def problems(self, kind: str, name: str, params: dict[str, Any]) -> list[str]: ...


# Plugins are loaded by the caller, from the dirs the config names, once the builder has
# read them: this module stays free of plugin loading (pure), and the file is parsed once.
PluginsFor = Callable[[list[Path], list[Path]], PluginCheck]


MAX_CONFIG_BYTES = 32 * 1024 * 1024  # a 10,000-watch config is ~2 MiB
# On reload (`settle` below): a file is taken once it has not changed for this long and
# did not change while it was read, so a slow in-place rewrite is not taken half-written.
SETTLE_S = 0.5
settle = False  # set in the daemon's forked reader at reload (daemon.load_all)


def _signature(st: os.stat_result) -> tuple[int, int, int, int]:
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


def read_source(file: str, where: str) -> str:
    """A config file's text, or a ConfigError located at `where` (`FILE:1:1`, `FILE:1`).
    Only a regular file of at most MAX_CONFIG_BYTES: a FIFO or a device would block or
    never end (opened non-blocking, so even the open returns). With `settle`, the read is
    done again until the file was unchanged for SETTLE_S before and during it."""
    import stat
    import time

    while True:
        try:
            fd = os.open(file, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as e:
            raise ConfigError([f"{where}: cannot read config: {e.strerror}"]) from None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise ConfigError([f"{where}: cannot read config: not a regular file (mode "
                                   f"{stat.filemode(st.st_mode)}); refusing"])
            if st.st_size > MAX_CONFIG_BYTES:
                raise ConfigError([f"{where}: config is {st.st_size} bytes, more than the limit of "
                                   f"{MAX_CONFIG_BYTES}; refusing"])
            age = time.time() - st.st_mtime_ns / 1e9
            if settle and 0 <= age < SETTLE_S:  # (an mtime in the future tells nothing: not waited for)
                time.sleep(SETTLE_S - max(age, 0.0))  # being written, maybe: wait until it rests
                continue
            chunks, size = [], 0
            while chunk := os.read(fd, 1024 * 1024):
                chunks.append(chunk)
                size += len(chunk)
                if size > MAX_CONFIG_BYTES:
                    raise ConfigError([f"{where}: config grew past the limit of {MAX_CONFIG_BYTES} bytes "
                                       "while read; refusing"])
        except OSError as e:
            raise ConfigError([f"{where}: cannot read config: {e.strerror}"]) from None
        finally:
            os.close(fd)
        if settle:
            try:
                again = os.stat(file)
            except OSError:
                again = None
            if again is None or _signature(again) != _signature(st) or size != st.st_size:
                continue  # changed (or replaced) while read: read it again once it rests
        try:
            text = b"".join(chunks).decode("utf-8")
        except UnicodeDecodeError:
            raise ConfigError([f"{where}: config is not UTF-8 text"]) from None
        return text.replace("\r\n", "\n").replace("\r", "\n")  # universal newlines, as read_text() had


def parse_config(text: str, file: str, *, plugins: PluginsFor | None = None) -> Config:
    from . import yamlsrc

    try:
        src = yamlsrc.load(text, file)
    except yamlsrc.YamlError as e:
        raise ConfigError([str(e)]) from None
    problems = _schema_problems(src)
    if problems:
        raise ConfigError(problems)
    return _Builder(src, plugins).build()


def _schema_problems(src: yamlsrc.Source) -> list[str]:
    import jsonschema

    out: list[tuple[tuple[int, int], str]] = []
    validator = jsonschema.Draft202012Validator(SCHEMA)
    for err in validator.iter_errors(src.data):
        path = tuple(err.absolute_path)
        if err.validator == "additionalProperties" and isinstance(err.instance, dict):
            allowed = set(err.schema.get("properties", {}))
            for k in err.instance:
                if k not in allowed:
                    where = src.where(path + (k,), key=True)
                    hint = f" (expected one of: {', '.join(sorted(allowed))})" if allowed else ""
                    out.append((_pos(where), f"{where}: unknown key {k!r}{hint}"))
            continue
        where = src.where(path)
        out.append((_pos(where), f"{where}: {_message(err)}"))
    return [m for _, m in sorted(out)]


def _pos(where: str) -> tuple[int, int]:
    _, line, col = where.rsplit(":", 2)
    return int(line), int(col)


def _path_part(p: str | int) -> str:
    """A key as the user would find it; one with a newline or other invisible
    characters quoted, so every problem stays one line."""
    s = str(p)
    return s if s and s.isprintable() and s.strip() == s else repr(s)


def _message(err: jsonschema.ValidationError) -> str:
    name = ".".join(map(_path_part, err.absolute_path)) or "config"
    if err.validator == "anyOf" and err.schema.get("anyOf") is _duration["anyOf"]:  # also a described copy
        return f"{name}: bad duration {err.instance!r} (use e.g. 30s, 5m, 1h)"
    if err.validator == "anyOf":
        return f"{name}: {err.instance!r} is not valid here ({_describe(err.schema)})"
    if err.validator == "type":
        return f"{name}: expected {err.validator_value}, got {type(err.instance).__name__} {err.instance!r}"
    if err.validator == "required":
        return f"{name}: {err.message}"
    if err.validator == "pattern" and err.schema.get("pattern") == DURATION:
        return f"{name}: bad duration {err.instance!r} (use e.g. 30s, 5m, 1h)"
    return f"{name}: {err.message}"


def _describe(schema: dict[str, Any]) -> str:
    if schema is _plugin or schema is _argv:
        return "expected 'name args...', a list [name, args...] or a mapping with 'name'"
    return schema.get("description", "wrong type")


_S = TypeVar("_S", "PluginSpec", "PeriodSpec")


class _Builder:
    def __init__(self, src: yamlsrc.Source, plugins_for: PluginsFor | None):
        self.src = src
        self.specs: dict[str, Any] = {}
        self.plugins_for = plugins_for
        self.found: PluginCheck | None = None
        self.problems: list[tuple[tuple[int, int], str]] = []
        self.warnings: list[str] = []
        self.base = Path(src.file).resolve().parent

    def err(self, path: yamlsrc.Path, msg: str, key: bool = False) -> None:
        where = self.src.where(path, key=key)
        self.problems.append((_pos(where), f"{where}: {msg}"))

    def duration(self, path: yamlsrc.Path, v: Any, default: float) -> float:
        if v is None:
            return default
        try:
            return parse_duration(v)
        except ValueError as e:
            self.err(path, str(e))
            return default

    def period(self, path: yamlsrc.Path, spec: str | None) -> Period | None:
        if spec is None or not str(spec).strip():
            return None
        try:
            return parse_period(str(spec))
        except PeriodError as e:
            self.err(path, f"bad period {spec!r}: {e}")
            return None

    def dirs(self, v: Any, default: str) -> list[Path]:
        items = [v] if isinstance(v, str) else (v or [default])
        return [(self.base / os.path.expanduser(d)).resolve() for d in items]

    def build(self) -> Config:
        data = self.src.data
        g = data.get("globals") or {}
        mondir, alertdir = self.dirs(g.get("mondir"), "monitors"), self.dirs(g.get("alertdir"), "alerts")
        if self.plugins_for is not None:
            self.found = self.plugins_for(mondir, alertdir)
        groups: dict[str, list[str]] = {k: list(v) for k, v in (data.get("hostgroups") or {}).items()}
        services: dict[tuple[str, str], ServiceSpec] = {}
        dep_default = g.get("dep_behavior", "m")
        for group, svcs in (data.get("watch") or {}).items():
            if group not in groups:
                self.err(("watch", group), f"watch {group!r}: no such hostgroup", key=True)
            for name, raw in (svcs or {}).items():
                path = ("watch", group, name)
                services[(group, name)] = self.service(path, group, str(name), raw, dep_default)
        for svc in services.values():
            for i, (dg, ds) in enumerate(svc.depend):
                if (dg, ds) not in services:
                    self.err(("watch", svc.group, svc.name, "depend", i), f"depend: no such service {dg}:{ds}")
            for i, h in enumerate(svc.exclude_hosts):
                if h not in groups.get(svc.group, []):
                    self.err(("watch", svc.group, svc.name, "exclude_hosts", i),
                             f"exclude_hosts: {h!r} is not in hostgroup {svc.group!r}")
        ip = data.get("ipvs") or {}
        ipvs = IpvsOptions(dry_run=ip.get("dry_run", False), fallback=ip.get("fallback", "error"),
                           cleanstop=ip.get("cleanstop", False),
                           resync=self.duration(("ipvs", "resync"), ip.get("resync"), 30.0),
                           min_pooled=self.min_pooled(("ipvs", "min_pooled"), ip.get("min_pooled"), None),
                           drain_timeout=self.duration(("ipvs", "drain_timeout"), ip.get("drain_timeout"), 0.0),
                           slowstart=self.duration(("ipvs", "slowstart"), ip.get("slowstart"), 0.0))
        vss = [self.virtual_service(("virtual_services", i), raw, groups, services, ipvs)
               for i, raw in enumerate(data.get("virtual_services") or [])]
        seen: dict[ServiceKey, int] = {}
        for i, vs in enumerate(vss):
            if vs is not None and vs.service.key in seen:
                self.err(("virtual_services", i), f"virtual service {vs.service.key} already defined "
                         f"at virtual_services[{seen[vs.service.key]}]")
            elif vs is not None:
                seen[vs.service.key] = i
        routing = self.routing(data.get("routing"), vss)
        vrrp_alert = [self.plugin(("vrrp", "alert", j), a, "alert")
                      for j, a in enumerate((data.get("vrrp") or {}).get("alert", []))]
        listener = self.metrics_listener(g)
        statedir = g.get("statedir") or os.environ.get("STATE_DIRECTORY") or "/var/lib/pymon"
        self_check = self.self_check(data.get("self_check") or {}, services, self.base / statedir)
        if self.problems:
            raise ConfigError([m for _, m in sorted(self.problems)])
        return Config(
            file=self.src.file,
            mondir=mondir,
            alertdir=alertdir,
            statedir=(self.base / statedir).resolve(),
            logdir=(self.base / (g.get("logdir") or os.environ.get("LOGS_DIRECTORY") or "/var/log/pymon")).resolve(),
            maxprocs=int(g.get("maxprocs", 0)),
            randstart=self.duration(("globals", "randstart"), g.get("randstart"), 0.0),
            alert_timeout=self.duration(("globals", "alert_timeout"), g.get("alert_timeout"), 60.0),
            block_warning=self.duration(("globals", "block_warning"), g.get("block_warning"), 1.0),
            config_timeout=self.duration(("globals", "config_timeout"), g.get("config_timeout"), 60.0),
            max_alert_procs=int(g.get("max_alert_procs", 16)),
            probe_workers=int(g.get("probe_workers", 0)),
            hostgroups=groups,
            services=services,
            virtual_services=[vs for vs in vss if vs is not None],
            ipvs=ipvs,
            control_socket=(self.base / statedir / g.get("control_socket", "pymon.sock")).resolve(),
            control_port=g.get("control_port"),
            control_hosts=tuple(str(h).lower() for h in g.get("control_hosts", ())),
            token_file=(self.base / statedir / g.get("token_file", "token")).resolve(),
            vrrp_alert=vrrp_alert,
            routing=routing,
            self_check=self_check,
            warnings=self.warnings,
            **listener,
        )

    def routing(self, raw: dict[str, Any] | None, vss: list[VirtualServiceSpec | None]) -> RoutingOptions | None:
        """The `routing:` section (model/routing.py reads it; problems located here)."""
        if raw is None:
            return None
        at = ("routing",)
        alerts = [self.plugin(at + ("alert", j), a, "alert") for j, a in enumerate(raw.get("alert", []))]
        opts = parse_routing(raw, lambda p, m: self.err(at + p, m),
                             lambda p, v, d: self.duration(at + p, v, d), alerts)
        if not any(vs is not None and vs.service.key.address for vs in vss):
            self.err(at, "routing: no virtual service with a VIP to announce (fwmark services are not announced)",
                     key=True)
        return opts

    def metrics_listener(self, g: dict[str, Any]) -> dict[str, Any]:
        """metrics_listen and web_config (ops/exporter.py); problems go with the config's."""
        out: dict[str, Any] = {}
        if g.get("metrics_listen") is not None:
            try:
                host, port = split_hostport(g["metrics_listen"], None)
                ipaddress.ip_address(host)
                if not 0 < port < 65536:
                    raise ValueError(f"port {port} out of range")
                out["metrics_listen"] = (host, port)
            except ValueError as e:
                self.err(("globals", "metrics_listen"), f"metrics_listen: {e} (ADDRESS:PORT, e.g. 10.0.0.5:9469)")
        if g.get("web_config") is not None:
            if "metrics_listen" not in g:
                self.err(("globals", "web_config"), "web_config applies to metrics_listen, which is not set")
            web, problems = parse_web_config(self.base / g["web_config"])
            for p in problems:
                self.problems.append(((0, 0), p))
            out["web_config"] = web
        return out

    def self_check(self, raw: dict[str, Any], services: dict[tuple[str, str], ServiceSpec],
                   statedir: Path) -> SelfCheckSpec:
        path: yamlsrc.Path = ("self_check",)
        active = [s for s in services.values() if not s.passive]
        # the slowest service's time to mark a host down once it stops answering
        slowest = max((s.interval + s.fall * s.timeout + (s.fall - 1) * (s.failure_interval or s.interval)
                       for s in active), default=10.0)
        canaries = [str(c) for c in raw.get("canaries", [])]
        for i, c in enumerate(canaries):
            try:
                ipaddress.ip_address(c)
            except ValueError:
                self.err(path + ("canaries", i), f"canaries: {c!r} is not an IP address")
        track = raw.get("track_file")
        return SelfCheckSpec(
            enabled=raw.get("enabled", False), share=float(raw.get("share", 0.5)),
            min_hosts=raw.get("min_hosts", 4),
            window=self.duration(path + ("window",), raw.get("window"), slowest),
            canaries=canaries, gateway=raw.get("gateway", True), links=raw.get("links", True),
            canary_timeout=self.duration(path + ("canary_timeout",), raw.get("canary_timeout"), 1.0),
            recheck=self.duration(path + ("recheck",), raw.get("recheck"), 2.0),
            alert=[self.plugin(path + ("alert", j), a, "alert") for j, a in enumerate(raw.get("alert", []))],
            track_file=None if track is None else (statedir / os.path.expanduser(track)).resolve(),
            track_weight=raw.get("track_weight", -254))

    def min_pooled(self, path: yamlsrc.Path, v: Any, default: MinPooled) -> MinPooled:
        if v is None:
            return default
        try:
            return parse_min_pooled(v)
        except (ValueError, ZeroDivisionError) as e:
            self.err(path, f"min_pooled: {e}")
            return default

    def scheduler_flags(self, path: yamlsrc.Path, raw: dict[str, Any], key: ServiceKey, sched: str) -> int:
        """ipvsadm -b's words (and -o) as the kernel's IP_VS_SVC_F_* bits; a flag of the other
        hashing scheduler is an error (the kernel would take the bit with another meaning)."""
        flags = 0
        names = raw.get("scheduler_flags", [])
        for j, f in enumerate(names):
            if f == "ops":
                if key.protocol not in ("udp", None):
                    self.err(path + ("scheduler_flags", j), f"scheduler_flags: ops (one-packet scheduling) "
                             f"is for UDP services, not {key.protocol}")
            elif not f.startswith(sched + "-"):
                self.err(path + ("scheduler_flags", j),
                         f"scheduler_flags: {f} is for the {f.split('-')[0]} scheduler, not {sched}")
                continue
            flags |= _SCHED_FLAGS[f]
        if sched in ("sh", "mh") and f"{sched}-fallback" not in names:
            self.warnings.append(f"{self.src.where(path)}: scheduler {sched} without scheduler_flags "
                                 f"[{sched}-fallback]: a flow hashed to a failed, quiesced (weight 0) real "
                                 f"server is dropped instead of going to the next one")
        return flags

    def virtual_service(self, path: yamlsrc.Path, raw: dict[str, Any], groups: dict[str, list[str]],
                        services: dict[tuple[str, str], ServiceSpec], ipvs: IpvsOptions) -> VirtualServiceSpec | None:
        """ipvsadm's -A/-a as data; the ipvs_table constructors do the range checks."""
        try:
            if ("vip" in raw) == ("fwmark" in raw):
                raise ValueError("give exactly one of vip (VIP:PORT) or fwmark")
            if "vip" in raw:
                addr, port = split_hostport(raw["vip"], None)
                key = ServiceKey(raw.get("protocol", "tcp"), addr, port)
            else:
                key = ServiceKey(fwmark=raw["fwmark"], family=raw.get("family", 4))
            netmask = raw.get("netmask")
            if isinstance(netmask, str):
                import ipaddress

                netmask = ipaddress.ip_network(f"0.0.0.0/{netmask}" if "." in netmask else f"::/{netmask}").prefixlen
            persistent = int(self.duration(path + ("persistent",), raw.get("persistent"), 0))
            sched = raw.get("scheduler", "wlc")
            svc = Service(key, sched, persistent, netmask, self.scheduler_flags(path, raw, key, sched))
        except ValueError as e:
            self.err(path, f"virtual service: {e}")
            return None
        group, _, sname = raw["watch"].partition(":")
        if (group, sname) not in services:
            self.err(path + ("watch",), f"watch: no such service {raw['watch']}")
            return None
        fwd = _FWD[raw.get("forwarding", "dr")]
        weight = raw.get("weight", 1)
        reals = []
        for j, r in enumerate(raw["real_servers"]):
            r = {"address": r} if isinstance(r, str) else r
            try:
                addr, port = split_hostport(r["address"], r.get("port", key.port or 0))
                dest = Dest(addr, port, _FWD[r.get("forwarding", fwd)], r.get("weight", weight))
            except ValueError as e:
                self.err(path + ("real_servers", j), f"real server: {e}")
                continue
            host = r.get("host", addr)
            if host not in groups.get(group, []):
                self.err(path + ("real_servers", j), f"real server {host!r} is not a host of hostgroup {group!r} "
                         f"(set host: to its name there)")
            reals.append(RealServerSpec(host, dest))
        sorry = None
        if "sorry_server" in raw:
            try:
                addr, port = split_hostport(raw["sorry_server"], key.port or 0)
                sorry = Dest(addr, port, fwd, 1)
            except ValueError as e:
                self.err(path + ("sorry_server",), f"sorry_server: {e}")
        return VirtualServiceSpec(
            name=raw.get("name", str(key)), service=svc, watch=(group, sname), reals=reals,
            quiescent=raw.get("quiescent"), sorry=sorry, quorum=raw.get("quorum", 0),
            hysteresis=raw.get("hysteresis", 0),
            quorum_alert=[self.plugin(path + ("quorum_alert", j), a, "alert")
                          for j, a in enumerate(raw.get("quorum_alert", []))],
            min_pooled=self.min_pooled(path + ("min_pooled",), raw.get("min_pooled"), ipvs.min_pooled),
            drain_timeout=self.duration(path + ("drain_timeout",), raw.get("drain_timeout"), ipvs.drain_timeout),
            slowstart=self.duration(path + ("slowstart",), raw.get("slowstart"), ipvs.slowstart))

    def plugin(self, path: yamlsrc.Path, v: Any, kind: str) -> PluginSpec:
        exit_range = None
        keep_caps = False
        if isinstance(v, dict):
            params = {k: x for k, x in v.items() if k not in ("name", "exit", "keep_caps")}
            name = str(v["name"])
            keep_caps = v.get("keep_caps", False)
            if not isinstance(keep_caps, bool):
                self.err(path + ("keep_caps",), f"keep_caps: expected true or false, got {keep_caps!r}")
                keep_caps = False
            args: list[str] = []
            if "exit" in v:
                exit_range = self.exit_range(path, str(v["exit"]))
        else:
            argv = argv_of(v)
            if not argv:
                self.err(path, f"{kind}: empty")
                return PluginSpec("?")
            m = re.fullmatch(r"exit\s*=\s*(.+)", argv[0], re.I)
            if m and kind == "alert":
                exit_range = self.exit_range(path, m.group(1))
                argv = argv[1:]
                if not argv:
                    self.err(path, "alert: exit=N-M needs an alert name after it")
                    return PluginSpec("?")
            name, args, params = argv[0], argv[1:], {}
        found = self.found
        if found is not None and (found.monitor(name) if kind == "monitor" else found.alert(name)) is None:
            self.err(path, f"unknown {kind} {name!r} (not built in and not found in the {kind} dirs)")
        elif found is not None:
            checked = dict(params, argv=args) if args else params
            for problem in found.problems(kind, name, checked):
                self.err(path, f"{kind} {name}: {problem}")
        return PluginSpec(name, tuple(args), params, exit_range, keep_caps)

    def exit_range(self, path: yamlsrc.Path, s: str) -> tuple[int, int] | None:
        m = re.fullmatch(r"(\d+)(?:-(\d+))?", s.strip())
        if not m:
            self.err(path, f"bad exit range {s!r} (use N or N-M)")
            return None
        lo = int(m.group(1))
        return (lo, int(m.group(2) or lo))

    def service(self, path: yamlsrc.Path, group: str, name: str, raw: dict[str, Any], dep_default: str) -> ServiceSpec:
        interval = self.duration(path + ("interval",), raw.get("interval"), 60.0)
        timeout = self.duration(path + ("timeout",), raw.get("timeout"), min(30.0, max(interval, 1.0)))
        fi = raw.get("failure_interval")
        depend = [tuple(d.split(":", 1)) for d in raw.get("depend", [])]
        monitor = (self.shared(self.plugin(path + ("monitor",), raw["monitor"], "monitor")) if "monitor" in raw
                   else PluginSpec("trap"))
        own = monitor.params.get("timeout")  # a monitor's own timeout is the nearer word: it is the budget
        if isinstance(own, (int, float)) and not isinstance(own, bool) and own > 0:
            timeout = float(own)
        svc = ServiceSpec(
            group=group, name=name,
            monitor=monitor,
            interval=interval,
            failure_interval=None if fi is None else self.duration(path + ("failure_interval",), fi, interval),
            timeout=timeout,
            randskew=self.duration(path + ("randskew",), raw.get("randskew"), 0.0),
            exclude_hosts=list(raw.get("exclude_hosts", [])) or _NONE_EXCLUDED,
            exclude_period=self.period(path + ("exclude_period",), raw.get("exclude_period")),
            depend=[(g, s) for g, s in depend] or _NO_DEPEND,
            dep_behavior=raw.get("dep_behavior", dep_default),
            description=raw.get("description", ""),
            env={str(k): str(v) for k, v in (raw.get("env") or {}).items()} or _NO_ENV,
            fall=raw.get("fall", 1), rise=raw.get("rise", 1),
            traptimeout=(self.duration(path + ("traptimeout",), raw["traptimeout"], 0.0)
                         if "traptimeout" in raw else None),
            passive="monitor" not in raw,
        )
        if interval <= 0:
            self.err(path + ("interval",), "interval must be greater than 0")
        if "traptimeout" in raw and "monitor" in raw:
            self.err(path + ("traptimeout",), "traptimeout is for trap-only services (drop monitor); "
                     "a monitored service takes traps as extra results without it")
        for i, p in enumerate(raw.get("periods") or [{}]):
            svc.periods.append(self.shared(self.period_spec(path + ("periods", i), p, i)))
        return svc

    def shared(self, spec: _S) -> _S:
        """One object for equal specs: a farm's services mostly have the same monitor and
        periods, and 10,000 copies held 11 MiB. Specs are not changed once built."""
        hit = self.specs.setdefault(repr(spec), spec)
        return hit if hit == spec else spec

    def period_spec(self, path: yamlsrc.Path, p: dict[str, Any], i: int) -> PeriodSpec:
        label = str(p.get("period") or f"period{i}")
        ps = PeriodSpec(period=self.period(path + ("period",), p.get("period")), label=label)
        for kind in ("alert", "upalert", "startupalert"):
            setattr(ps, kind, [self.plugin(path + (kind, j), a, "alert") for j, a in enumerate(p.get(kind, []))])
        if "alertevery" in p:
            words = str(p["alertevery"]).split()
            ps.alertevery = self.duration(path + ("alertevery",), words[0], 0.0)
            for w in words[1:]:
                if w == "strict":
                    ps.alertevery_strict = True
                elif w == "observe_detail":
                    ps.observe_detail = True
                elif w == "summary":
                    ps.ignore_summary = True
                else:
                    self.err(path + ("alertevery",), f"alertevery: unknown option {w!r} (strict, observe_detail, summary)")
        if "alertafter" in p:
            self.alertafter(path + ("alertafter",), p["alertafter"], ps)
        ps.numalerts = p.get("numalerts", 0)
        ps.no_comp_alerts = p.get("no_comp_alerts", False)
        return ps

    def alertafter(self, path: yamlsrc.Path, v: Any, ps: PeriodSpec) -> None:
        """mon's three forms: `N` consecutive, `N T` within T, `T` failing for T."""
        words = str(v).split()
        if len(words) == 1 and words[0].isdigit():
            ps.alertafter_consec = int(words[0])
        elif len(words) == 2 and words[0].isdigit():
            ps.alertafter = int(words[0])
            ps.alertafterival = self.duration(path, words[1], 0.0)
        elif len(words) == 1:
            ps.alertafterival = self.duration(path, words[0], 0.0)
        else:
            self.err(path, f"alertafter: expected N, 'N DURATION' or 'DURATION', got {v!r}")
