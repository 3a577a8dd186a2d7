"""mon.cf, the config language of mon 1.3, read as mon reads it and converted to pymon's.

`parse` follows `read_cf` in /usr/sbin/mon line by line (the logical-line reader,
the global `name = value` lines, the record state machine and its checks), so a
file mon rejects is rejected here with mon's reason, as `FILE:LINE: message`.
Where mon silently does something the operator evidently did not mean, pymon says
so as a warning and converts what was meant:

- the blank-line rule: a `watch` line right after a `hostgroup` (no blank line
  between) is read by mon as more hostnames, and so is everything up to the next
  blank line; here it is a watch again;
- a line after a blank line that ended a watch (`service`, `period`, `alert`...):
  mon ignores it silently; here it continues that watch;
- `depend a:x b:y`: mon evaluates it as Perl, a syntax error, so the dependency
  never holds; here it means "both up".

`convert` turns the parsed file into pymon's YAML config shape (a plain dict),
with the source line of every value (`Conversion.lines`, keyed by the YAML path)
and a list of what could not be carried over (`Conversion.notes`); `to_yaml` emits
it with a `# mon.cf:LINE` comment on each item. `load` does all of it in memory for
`pymon run -c /etc/mon/mon.cf`, mapping any problem back to the mon.cf line.

Monitors: `http.monitor`, `tcp.monitor`, `telnet.monitor`, `fping.monitor` and
`freespace.monitor` become the native probes of the same name with the same
options and the script's defaults (`http.monitor` -> `http -p 80`, with the script's
30 s as the service's timeout; the name without `.monitor` is never a script in mon's
mondir, so the native probe is what runs); when the native probe does not accept the
options, or the script in mondir is the site's own (not the bytes mon ships), the
script stays. Every other monitor stays the mon script, looked up in mon's mondir.
Where mon's dirs do not exist here, names are kept and each one not found is a
warning at its line (the YAML is for the director that has them). `lvs.alert`/`ipvs.alert` pairs (alert + upalert
with `-V VIP -R RIP`) become `virtual_services` when that is exact; otherwise they
stay alerts, which pymon's built-in `lvs` alert understands.
"""

from __future__ import annotations

import argparse
import getopt
import hashlib
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pymon.model.config import Config, ConfigError, PluginsFor, parse_config, read_source
from pymon.model.period import PeriodError, parse_period

A = re.ASCII
YPath = tuple[Any, ...]

# mon's compiled-in defaults (init_cf_globals, Debian build)
MON_BASEDIR = "/usr/lib/mon"
MON_MONDIR = "/usr/local/lib/mon/mon.d:mon.d"
MON_ALERTDIR = "/usr/local/lib/mon/alert.d:alert.d"
MON_DEP_BEHAVIOR = "a"

NATIVE_MONITORS = {"http.monitor": "http", "tcp.monitor": "tcp", "telnet.monitor": "telnet",
                   "fping.monitor": "fping", "freespace.monitor": "freespace"}
# the scripts' own defaults where the native probe's differ: the bare form gets them
# written out, so that it means what the script means (`http` alone accepts 200-399 and
# waits 10 s; http.monitor accepts 200, 301, 302, 401 and waits 30 s)
_NATIVE_BARE = {"http": ["-p", "80"], "tcp": ["-p", "23"], "fping": ["-r", "3", "-t", "2000"]}
# the scripts' own timeout (`-t`, seconds), which mon lets them keep even past the interval
_SCRIPT_TIMEOUT = {"http": 30, "tcp": 10, "telnet": 10}
LVS_ALERTS = ("lvs.alert", "ipvs.alert")
# md5 of the scripts Debian's mon 1.3.6 ships (/var/lib/dpkg/info/mon.md5sums): a script of
# that name in mondir with other bytes is the site's own, and runs instead of the native probe
_SHIPPED_MD5 = {"http.monitor": {"e7b28d629e5d3aebb2293f59762a553a"},
                "tcp.monitor": {"7d66a5fc1eee19fb11aa53dbb6d0976e"},
                "telnet.monitor": {"96d4243b114e423d3c75a54626a5bef3"},
                "fping.monitor": {"e7285dd3f1d44923089f37e68839fe23"}}
_DPKG_MD5SUMS = "/var/lib/dpkg/info/mon.md5sums"


def shipped_script(path: Path) -> bool:
    """Whether `path` is byte for byte the mon package's script of that name (1.3.6, or
    the version installed here by dpkg)."""
    try:
        digest = hashlib.md5(path.read_bytes(), usedforsecurity=False).hexdigest()
    except OSError:
        return False
    known = set(_SHIPPED_MD5.get(path.name, ()))
    try:
        for ln in Path(_DPKG_MD5SUMS).read_text().splitlines():
            md5, _, name = ln.partition("  ")
            if name == f"usr/lib/mon/mon.d/{path.name}":
                known.add(md5)
    except OSError:
        pass
    return digest in known

# global variables mon knows and pymon has no use for, with the reason
_GLOBAL_NOTES = {
    "histlength": "pymon keeps the last 1000 alerts (`pymon history`; in <statedir>/state.json, so across "
                  "restarts); the length is fixed",
    "serverport": "pymon has its own control API (globals control_socket/control_port), not mon's protocol",
    "serverbind": "pymon has its own control API (globals control_socket/control_port), not mon's protocol",
    "clientallow": "pymon has its own control API (globals control_socket/control_port), not mon's protocol",
    "cltimeout": "pymon has its own control API (globals control_socket/control_port), not mon's protocol",
    "trapport": "pymon takes traps through its control API (`pymon trap`), not mon's UDP trap port",
    "trapbind": "pymon takes traps through its control API (`pymon trap`), not mon's UDP trap port",
    "pidfile": "pymon writes no pid file (run it under systemd)",
    "authfile": "pymon's control API authenticates with a token file (globals token_file)",
    "authtype": "pymon's control API authenticates with a token file (globals token_file)",
    "pamservice": "pymon's control API authenticates with a token file (globals token_file)",
    "userfile": "pymon's control API authenticates with a token file (globals token_file)",
    "historicfile": "pymon keeps its alert history in <statedir>/state.json (`pymon history`, the last 1000 "
                    "alerts), not in a file of mon's format",
    "historictime": "`pymon history` has the alerts from before a restart (state.json) whatever their age",
    "monerrfile": "pymon writes to stdout/stderr",
    "dtlogfile": "pymon always keeps a downtime log, per host (`pymon downtime`: start, end, duration, summary; "
                 "the last 1000 outages, in <statedir>/state.json), not a file in mon's dtlog format",
    "dtlogging": "pymon always keeps a downtime log, per host (`pymon downtime`: start, end, duration, summary; "
                 "the last 1000 outages, in <statedir>/state.json), not a file in mon's dtlog format",
    "dep_recur_limit": "pymon's dependencies are direct, not recursive expressions",
    "dep_memory": "pymon has no dep_memory",
    "unack_summary": "pymon has no unack_summary (an ack lasts until recovery)",
    "syslog_facility": "pymon logs to stdout (journald), not syslog",
    "startupalerts_on_reset": "pymon sends startupalerts at start only, not on reload",
    "monremote": "pymon has no monremote hook",
    "cfbasedir": "pymon sets MON_CFBASEDIR to the config file's directory",
}
_KNOWN_GLOBALS = set(_GLOBAL_NOTES) | {"alertdir", "mondir", "basedir", "statedir", "logdir", "maxprocs",
                                      "randstart", "dep_behavior", "exclude_period"}
_SERVICE_KEYS = {"interval", "failure_interval", "monitor", "redistribute", "allow_empty_group", "description",
                 "unack_summary", "traptimeout", "trapduration", "randskew", "dep_behavior", "dep_memory", "depend",
                 "alertdepend", "monitordepend", "hostdepend", "exclude_hosts", "exclude_period"}
_PERIOD_KEYS = {"alert", "ackalert", "disablealert", "upalert", "startupalert", "alertevery", "alertafter",
                "upalertafter", "numalerts", "no_comp_alerts", "alerts_dont_count", "alertexitrange"}


def dhmstos(s: str) -> float | None:
    """mon's timeval: one number and a unit d/h/m/s (no bare numbers, no `1h30m`)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)([dhms])\s*", s.lower(), A)
    if not m:
        return None
    return float(m.group(1)) * {"d": 86400, "h": 3600, "m": 60, "s": 1}[m.group(2)]


def _timeval(s: str) -> str:
    """A mon timeval as pymon writes it (`5M` -> `5m`)."""
    return s.strip().lower()


# -- the parsed file -----------------------------------------------------------


@dataclass
class Period:
    label: str
    spec: str
    line: int
    alerts: dict[str, list[tuple[str, int]]] = field(
        default_factory=lambda: {"alert": [], "upalert": [], "startupalert": [], "ackalert": [], "disablealert": []})
    opts: dict[str, tuple[str, int]] = field(default_factory=dict)


@dataclass
class Service:
    name: str
    line: int
    dep_behavior: str  # the global dep_behavior in force when the service was defined
    opts: dict[str, tuple[str, int]] = field(default_factory=dict)
    env: dict[str, tuple[str, int]] = field(default_factory=dict)
    periods: list[Period] = field(default_factory=list)


@dataclass
class Watch:
    group: str
    line: int
    services: dict[str, Service] = field(default_factory=dict)


@dataclass
class MonCf:
    file: str
    globals: dict[str, tuple[str, int]] = field(default_factory=dict)
    hostgroups: dict[str, tuple[list[str], int]] = field(default_factory=dict)
    implicit_groups: dict[str, int] = field(default_factory=dict)  # watch without hostgroup: mon makes one
    watches: dict[str, Watch] = field(default_factory=dict)
    other: list[tuple[int, str]] = field(default_factory=list)  # alias/view records (client display only)
    warnings: list[tuple[int, str]] = field(default_factory=list)


# -- reading: m4, comments, continuations ---------------------------------------


def wants_m4(file: str, text: str) -> bool:
    """mon runs m4 on `*.m4` files (or with -M); a file starting with `dnl` is one too."""
    if file.endswith(".m4"):
        return True
    first = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    return first == "dnl" or first.startswith(("dnl ", "dnl\t", "define("))


# m4's builtins that run commands or write files: a config is data, and even
# `import-mon --check` runs m4 on it. The prelude (read first, from stdin) undefines
# them, `builtin` first among them (it reaches a builtin by name after its undefine);
# a file that names one is refused before m4 runs, with its line.
M4_REFUSED = ("builtin", "indir", "syscmd", "esyscmd", "sysval", "maketemp", "mkstemp", "debugfile")
M4_PRELUDE = "".join(f"undefine(`{name}')" for name in reversed(M4_REFUSED)) + "dnl\n"
_M4_REFUSED_RE = re.compile(r"\b(" + "|".join(M4_REFUSED) + r")\b")


def m4_refused(file: str, text: str) -> None:
    """A ConfigError for each line that names a builtin m4 must not run."""
    problems = [f"{file}:{no}: m4: {m[1]} is refused (it would run a command or write a file; "
                f"pymon runs m4 with {', '.join(M4_REFUSED)} undefined)"
                for no, line in enumerate(text.split("\n"), 1) for m in [_M4_REFUSED_RE.search(line)] if m]
    if problems:
        raise ConfigError(problems)


def run_m4(file: str) -> str:
    """`m4 -s - FILE`, the prelude on stdin: the `#line N` sync lines map the output back
    to source lines."""
    m4 = shutil.which("m4")
    if m4 is None:
        raise ConfigError([f"{file}:1: this file needs m4 (mon runs m4 on it) but m4 is not installed "
                           f"(apt-get install m4)"])
    p = Path(file)
    r = subprocess.run([m4, "-s", "-", p.name], cwd=p.parent if str(p.parent) else None, capture_output=True,
                       text=True, timeout=60, input=M4_PRELUDE)
    if r.returncode != 0:
        problems = []
        for ln in r.stderr.splitlines():
            m = re.match(r"^(?:\S*/)?m4:([^:]*):(\d+): (?:ERROR: )?(.*)$", ln)
            problems.append(f"{file}:{m.group(2)}: m4: {m.group(3)}" if m else f"{file}:1: {ln}")
        raise ConfigError(problems or [f"{file}:1: m4 failed with exit status {r.returncode}"])
    return r.stdout


def logical_lines(text: str, synclines: bool = False) -> tuple[list[tuple[int, str]], list[tuple[int, str]]]:
    """read_cf's reader: `#` lines are skipped (even inside a continuation), a line
    ending in `\\` continues with the next one's leading whitespace removed, and
    every line is stripped. Returns (line number where it started, text) and warnings."""
    out: list[tuple[int, str]] = []
    warnings: list[tuple[int, str]] = []
    acc, start, incomplete = "", 0, False
    no = 0
    for raw in text.split("\n"):
        no += 1
        if synclines and (m := re.match(r"^#line (\d+)", raw)):
            no = int(m.group(1)) - 1
            continue
        part = raw.rstrip("\r")
        if re.match(r"^\s*#", part, A):
            continue
        if incomplete:
            part = part.lstrip(" \t\f\v")
        else:
            start = no
        if m := re.match(r"^(.*)\\\s*$", part, A):
            incomplete = True
            acc += m.group(1)
            continue
        line = (acc + part).strip(" \t\r\n\f\v")
        acc, incomplete = "", False
        out.append((start, line))
    if text.endswith("\n") and out and out[-1][1] == "" and not incomplete:
        out.pop()  # the empty "line" after the final newline
    if incomplete:
        warnings.append((start, "the file ends inside a \\ continuation; mon drops this line"))
    return out, warnings


# -- parsing (read_cf) -----------------------------------------------------------


def parse(text: str, file: str, *, m4: bool | None = None) -> MonCf:
    """The whole mon.cf language, with mon's checks; ConfigError lists every error."""
    use_m4 = wants_m4(file, text) if m4 is None else m4
    if use_m4:
        m4_refused(file, text)
        text = run_m4(file)
    lines, warnings = logical_lines(text, synclines=use_m4)
    return _Parser(file).run(lines, warnings)


class _Parser:
    def __init__(self, file: str):
        self.cf = MonCf(file)
        self.errors: list[tuple[int, str]] = []
        self.dep_behavior = MON_DEP_BEHAVIOR

    def error(self, line: int, msg: str) -> None:
        self.errors.append((line, msg))

    def warn(self, line: int, msg: str) -> None:
        self.cf.warnings.append((line, msg))

    def run(self, lines: list[tuple[int, str]], warnings: list[tuple[int, str]]) -> MonCf:
        cf = self.cf
        cf.warnings += warnings
        ingroup: str | None = None       # hostgroup record being read
        inother: int | None = None       # alias/view record being read
        watch: Watch | None = None
        svc: Service | None = None
        period: Period | None = None
        ended: tuple[Watch, Service | None, Period | None, int] | None = None  # what the last blank line ended
        blank_at = 0
        for no, l in lines:
            # global variables (mon checks these first, even inside a hostgroup record)
            if watch is None and (m := re.match(r"^(\w+)\s*=\s*(.*)$", l, A)):
                self.global_var(no, m.group(1), m.group(2).strip())
                continue
            if l == "":
                if watch is not None:
                    ended = (watch, svc, period, no)
                ingroup, inother, watch, svc, period = None, None, None, None, None
                blank_at = no
                continue
            if m := re.match(r"^hostgroup\s+([a-zA-Z0-9_.-]+)\s*(.*)$", l, A):
                ingroup, inother, watch, svc, period, ended = m.group(1), None, None, None, None, None
                if ingroup in cf.hostgroups:
                    self.warn(no, f"hostgroup {ingroup} is defined again (first at line {cf.hostgroups[ingroup][1]}); "
                                  f"mon keeps this definition")
                cf.hostgroups[ingroup] = (m.group(2).split(), no)
                cf.implicit_groups.pop(ingroup, None)
                continue
            swallowing = ingroup is not None or inother is not None
            if swallowing and (m := re.match(r"^watch\s+([a-zA-Z0-9_.-]+)", l, A)):
                what = f"hostgroup {ingroup}" if ingroup is not None else "the record"
                self.warn(no, f"no blank line ends {what} before this line: mon reads 'watch {m.group(1)}' "
                              f"and every line up to the next blank line as more hostnames of {ingroup or 'it'} "
                              f"(and defines no watch {m.group(1)}); converted as the watch it evidently is")
                ingroup = inother = None
            elif ingroup is not None:
                cf.hostgroups[ingroup][0].extend(l.split())
                continue
            elif inother is not None:
                continue
            if re.match(r"^(alias\s+[a-zA-Z0-9_.-]+\s*$|view\s+[a-zA-Z0-9_.-]+\s+)", l, A):
                inother, watch, svc, period, ended = no, None, None, None, None
                cf.other.append((no, l.split()[0]))
                continue
            if m := re.match(r"^watch\s+([a-zA-Z0-9_.-]+)", l, A):
                name = m.group(1)
                ended, svc, period = None, None, None
                if name in cf.watches:
                    self.error(no, f"watch '{name}' already defined (line {cf.watches[name].line})")
                    watch = Watch(name, no)  # keep reading, into a throwaway
                    continue
                if name not in cf.hostgroups:
                    cf.implicit_groups[name] = no
                watch = cf.watches[name] = Watch(name, no)
                continue
            if watch is None:
                if ended is not None and re.match(r"^(service|period|[A-Z_][A-Z0-9_]*=|\w+)\b", l, A) and (
                        l.split()[0] in _SERVICE_KEYS | _PERIOD_KEYS | {"service", "period"}):
                    watch, svc, period, _ = ended
                    self.warn(no, f"mon ignores this line: the blank line at line {blank_at} ended watch "
                                  f"{watch.group}; converted as part of watch {watch.group}")
                    ended = None
                else:
                    self.warn(no, f"mon ignores this line (it is outside any hostgroup or watch record): {l!r}")
                    continue
            svc, period = self.watch_line(no, l, watch, svc, period)
        for name, (_, no) in cf.hostgroups.items():
            if name not in cf.watches:
                self.warn(no, f"hostgroup {name} has no watch (mon warns too)")
        for name, no in cf.implicit_groups.items():
            cf.hostgroups[name] = ([name], no)
            self.warn(no, f"watch {name} has no hostgroup {name}: mon monitors the single host {name!r}")
        if self.errors:
            raise ConfigError([f"{cf.file}:{n}: {msg}" for n, msg in sorted(self.errors)])
        cf.warnings.sort()
        return cf

    def global_var(self, no: int, var: str, val: str) -> None:
        if var not in _KNOWN_GLOBALS:
            self.error(no, f"unknown variable '{var}'")
            return
        if var == "randstart" and dhmstos(val) is None:
            self.error(no, f"bad value '{val}' for randstart option (syntax: randstart = timeval, e.g. 60s)")
            return
        if var == "dep_behavior":
            if val not in ("m", "a", "hm"):
                self.error(no, f"unknown dependency behavior '{val}' (m, a or hm)")
                return
            self.dep_behavior = val
        if var == "exclude_period":
            if (e := _period_error(val)) is not None:
                self.error(no, f"malformed exclude_period '{val}': {e}")
                return
        if var in ("historictime", "cltimeout", "dep_memory") and dhmstos(val) is None:
            self.error(no, f"bad value '{val}' for {var} (syntax: {var} = timeval, e.g. 60s)")
            return
        if var == "unack_summary" and not re.search(r"y(es)?|n(o)?|^[01]$", val, re.I):
            self.error(no, f"invalid unack_summary value '{val}' (syntax: unack_summary [0|1|y|yes|n|no])")
            return
        self.cf.globals[var] = (val, no)

    def watch_line(self, no: int, l: str, watch: Watch, svc: Service | None,
                   period: Period | None) -> tuple[Service | None, Period | None]:
        if m := re.match(r"^([A-Z_][A-Z0-9_]*)=(.*)$", l, A):
            if svc is None:
                self.error(no, "environment variable defined without a service")
            else:
                svc.env[m.group(1)] = (m.group(2), no)
            return svc, period
        m = re.match(r"^(\w+)\s*(.*)$", l, A)
        if not m:
            self.error(no, f"unknown syntax [{l}]")
            return svc, period
        var, args = m.group(1), m.group(2)
        if var == "service":
            if not re.fullmatch(r"[a-zA-Z0-9_.-]+", args, A):
                self.error(no, f"invalid service tag '{args}'")
                return None, None
            if args in watch.services:
                self.error(no, f"service {args} already defined for watch group {watch.group} "
                               f"(line {watch.services[args].line})")
                return Service(args, no, self.dep_behavior), None
            svc = watch.services[args] = Service(args, no, self.dep_behavior)
            return svc, None
        if svc is None:
            self.error(no, "need to specify service in watch record")
            return svc, period
        if var == "period":
            label, spec = args, args
            if pm := re.match(r"^([a-z_]\w*)\s*:\s*(.*)$", args, re.I | A):
                label, spec = pm.group(1), pm.group(2)
            if any(p.label == label for p in svc.periods):
                self.error(no, f"period '{label}' already defined for watch group {watch.group} service {svc.name}")
            if (e := _period_error(spec)) is not None:
                self.error(no, f"malformed period '{spec}': {e}")
            period = Period(label, spec, no)
            svc.periods.append(period)
            return svc, period
        if period is not None:
            self.period_var(no, l, var, args, svc, period)
        elif var in _PERIOD_KEYS:
            self.error(no, f"'{var}' belongs in a period (add a 'period' line before it)")
        else:
            self.service_var(no, l, var, args, svc)
        return svc, period

    def period_var(self, no: int, l: str, var: str, args: str, svc: Service, p: Period) -> None:
        if var in p.alerts:
            p.alerts[var].append((args, no))
            return
        if var == "alertevery":
            # mon's cascade, unanchored at the start; `summary` alone is a no-op kept for old configs
            val, flag = args, ""
            for f, rx in (("observe_detail", r"(\S+)\s+observe_detail\s*$"),
                          ("ignore_summary", r"(\S+)\s+ignore_summary\s*$"),
                          ("summary", r"(\S+)\s+summary"), ("strict", r"(\S+)\s+strict\s*$")):
                if am := re.search(rx, args, re.I | A):
                    val, flag = am.group(1), f
                    break
            if not dhmstos(val):
                self.error(no, f"invalid time interval '{val}' (syntax: alertevery {{positive number}}{{smhd}} "
                               f"[ strict | observe_detail | ignore_summary ])")
                return
            p.opts[var] = (f"{val} {flag}".strip(), no)
            return
        elif var == "alertafter":
            if re.fullmatch(r"\d+", args, A):
                pass
            elif re.fullmatch(r"\d+[hms]", args, A):
                if not dhmstos(args):
                    self.error(no, f"invalid time interval '{args}' (syntax: alertafter [N] [timeval])")
                    return
            elif am := re.search(r"(\d+)\s+(\d+[hms])$", args, A):
                ival = dhmstos(svc.opts["interval"][0]) if "interval" in svc.opts else 0
                if (int(am.group(1)) - 1) * (ival or 0) >= (dhmstos(am.group(2)) or 0):
                    self.error(no, f"interval & alertafter not sensible: {am.group(1)} failures at an interval of "
                                   f"{svc.opts['interval'][0]} never happen within {am.group(2)}, "
                                   f"so no alert can be generated")
                    return
            else:
                self.error(no, f"invalid interval specification '{args}' (syntax: alertafter N, "
                               f"alertafter N timeval or alertafter timeval)")
                return
        elif var == "upalertafter":
            if not dhmstos(args):
                self.error(no, f"invalid upalertafter specification '{args}' (syntax: upalertafter timeval)")
                return
        elif var == "numalerts":
            if not re.fullmatch(r"\d+", args, A):
                self.error(no, f"non-numeric arg '{args}' (syntax: numalerts {{positive integer}})")
                return
        elif var == "alertexitrange":
            if not re.fullmatch(r"\s*(\d+|\d+-\d+)\s*", args, A):
                self.error(no, f"invalid exit code range '{args}'")
                return
        elif var in ("no_comp_alerts", "alerts_dont_count"):
            pass
        elif var in _SERVICE_KEYS:
            self.error(no, f"'{var}' is a service keyword: it must come before the first period of service "
                           f"{svc.name} (mon: unknown syntax [{l}])")
            return
        else:
            self.error(no, f"unknown syntax [{l}]")
            return
        p.opts[var] = (args, no)

    def service_var(self, no: int, l: str, var: str, args: str, svc: Service) -> None:
        if var in ("interval", "failure_interval", "traptimeout", "trapduration", "randskew", "dep_memory"):
            if not dhmstos(args):
                self.error(no, f"invalid {var} '{args}' (syntax: {var} {{positive number}}{{smhd}}, e.g. 30s)")
                return
        elif var == "dep_behavior":
            if args not in ("m", "a", "hm"):
                self.error(no, f"unknown dependency behavior '{args}' (syntax: dep_behavior {{m|a|hm}})")
                return
        elif var == "exclude_period":
            if (e := _period_error(args)) is not None:
                self.error(no, f"malformed exclude_period '{args}': {e}")
                return
        elif var == "unack_summary":
            v = args
            if re.search(r"y(es)?", v, re.I):
                v = "1"
            elif re.search(r"n(o)?", v, re.I):
                v = "0"
            if v not in ("0", "1"):
                self.error(no, f"invalid unack_summary value '{args}' (syntax: unack_summary [0|1|y|yes|n|no])")
                return
        elif var == "monitor":
            if not args:
                self.error(no, "monitor: no monitor name")
                return
        elif var not in _SERVICE_KEYS:
            self.error(no, f"unknown syntax [{l}]")
            return
        if var in svc.opts and var not in ("depend", "alertdepend", "monitordepend", "hostdepend"):
            self.warn(no, f"{var} is set again for service {svc.name} (first at line {svc.opts[var][1]}); "
                          f"mon keeps this one")
        svc.opts[var] = (args, no)


def _period_error(spec: str) -> str | None:
    if not spec.strip():
        return None
    try:
        parse_period(spec)
    except PeriodError as e:
        return str(e)
    return None


# -- conversion ------------------------------------------------------------------


@dataclass
class Conversion:
    """pymon's config as a plain dict, where each value came from, and what did not come."""

    file: str
    data: dict[str, Any]
    lines: dict[YPath, int] = field(default_factory=dict)       # YAML path -> mon.cf line
    comments: dict[YPath, str] = field(default_factory=dict)    # YAML path -> extra comment text
    dropped: dict[YPath, list[str]] = field(default_factory=dict)  # mapping path -> comment lines
    notes: list[tuple[int, str]] = field(default_factory=list)  # not carried over: (line, why)
    warnings: list[tuple[int, str]] = field(default_factory=list)


class Resolver:
    """What pymon would run for a name, given mon's dirs (no drop-in *.py is loaded)."""

    def __init__(self, mondirs: list[str], alertdirs: list[str]):
        from pymon.engine.plugin_loading import Plugins, builtins

        self.mondirs = [Path(d) for d in mondirs]
        self.alertdirs = [Path(d) for d in alertdirs]
        self.plugins = Plugins(builtins(), self.mondirs, self.alertdirs)

    def monitor(self, name: str) -> bool:
        return self.plugins.monitor(name) is not None

    def alert(self, name: str) -> bool:
        return self.plugins.alert(name) is not None

    def native_problems(self, name: str, args: list[str]) -> list[str]:
        return self.plugins.problems("monitor", name, {"argv": args} if args else {})


def _opt_t(args: list[str]) -> float | None:
    """A monitor's `-t SECS` (`-tSECS`), as getopt reads it; None if absent or not a number."""
    try:
        opts, _ = getopt.getopt(args, "ap:r:s:t:u:m:l:oT")
    except getopt.GetoptError:
        return None
    for o, v in opts:
        if o == "-t":
            try:
                return float(v)
            except ValueError:
                return None
    return None


def _dirs(value: str, base: str) -> list[str]:
    return [d if os.path.isabs(d) else os.path.normpath(os.path.join(base, d))
            for d in re.split(r"\s*:\s*", value.strip()) if d]


def convert(cf: MonCf, *, native: bool = True, resolver: Resolver | None = None) -> Conversion:
    return _Converter(cf, native, resolver).run()


class _Converter:
    def __init__(self, cf: MonCf, native: bool, resolver: Resolver | None):
        self.cf = cf
        self.native = native
        self.conv = Conversion(cf.file, {}, warnings=list(cf.warnings))
        g = cf.globals
        basedir = g.get("basedir", (MON_BASEDIR, 0))[0]
        if not os.path.isabs(basedir):
            basedir = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(cf.file)), basedir))
        self.basedir = basedir.rstrip("/") or "/"
        self.mondirs = _dirs(g.get("mondir", (MON_MONDIR, 0))[0], self.basedir)
        self.alertdirs = _dirs(g.get("alertdir", (MON_ALERTDIR, 0))[0], self.basedir)
        self.resolver = resolver or Resolver(self.mondirs, self.alertdirs)
        # names are only checked where mon's dirs exist here (converting on another machine: keep all)
        self.check_monitors = any(os.path.isdir(d) for d in self.mondirs)
        self.check_alerts = any(os.path.isdir(d) for d in self.alertdirs)

    def absent(self, no: int, kind: str, name: str) -> None:
        """A script that is not here because its dir is not: kept (mon starts on such a file too
        and the YAML is meant for the director that has the dir), and said at its line."""
        var, dirs = ("mondir", self.mondirs) if kind == "monitor" else ("alertdir", self.alertdirs)
        self.warn(no, f"{kind} {name}: not found, {var} {':'.join(dirs)} does not exist here; kept as it is "
                      f"(check-config checks it on the director; or set {var} to where the scripts are)")

    def note(self, line: int, msg: str) -> None:
        self.conv.notes.append((line, msg))

    def warn(self, line: int, msg: str) -> None:
        self.conv.warnings.append((line, msg))

    def at(self, path: YPath, line: int | None, comment: str = "") -> None:
        if line:
            self.conv.lines[path] = line
        if comment:
            self.conv.comments[path] = comment

    def run(self) -> Conversion:
        cf, conv = self.cf, self.conv
        data = conv.data
        data["globals"] = self.globals()
        data["hostgroups"] = {}
        for name, (hosts, no) in cf.hostgroups.items():
            data["hostgroups"][name] = list(hosts)
            self.at(("hostgroups", name), no, "" if name not in cf.implicit_groups else
                    "mon's implicit group: a watch without a hostgroup")
        self.services = {(w.group, s) for w in cf.watches.values() for s in w.services}
        data["watch"] = {}
        vss: list[dict[str, Any]] = []
        for w in cf.watches.values():
            out: dict[str, Any] = {}
            self.at(("watch", w.group), w.line)
            for s in w.services.values():
                conv_svc = self.service(w, s, vss)
                if conv_svc is not None:
                    out[s.name] = conv_svc
            data["watch"][w.group] = out
        if vss:
            data["virtual_services"] = vss
        for no, kind in cf.other:
            self.note(no, f"{kind} record: mon's client display grouping; pymon has none")
        conv.notes.sort()
        conv.warnings.sort()
        return conv

    def globals(self) -> dict[str, Any]:
        g = self.cf.globals
        out: dict[str, Any] = {}
        P = ("globals",)
        out["mondir"] = self.mondirs
        self.at(P + ("mondir",), g.get("mondir", ("", 0))[1], "" if "mondir" in g else "mon's default")
        out["alertdir"] = self.alertdirs
        self.at(P + ("alertdir",), g.get("alertdir", ("", 0))[1], "" if "alertdir" in g else "mon's default")
        if "statedir" in g:
            v, no = g["statedir"]
            out["statedir"] = v if os.path.isabs(v) else os.path.join(self.basedir, v)
            self.at(P + ("statedir",), no)
        if "logdir" in g:  # MON_LOGDIR for the scripts (pymon itself logs to stdout)
            v, no = g["logdir"]
            out["logdir"] = v if os.path.isabs(v) else os.path.join(self.basedir, v)
            self.at(P + ("logdir",), no)
        if "maxprocs" in g:
            v, no = g["maxprocs"]
            if re.fullmatch(r"\d+", v):
                out["maxprocs"] = int(v)
                self.at(P + ("maxprocs",), no)
            else:
                self.note(no, f"maxprocs = {v}: not a number (mon reads it as 0, unlimited)")
        if "randstart" in g:
            v, no = g["randstart"]
            out["randstart"] = _timeval(v)
            self.at(P + ("randstart",), no)
        dep, no = g.get("dep_behavior", (MON_DEP_BEHAVIOR, 0))
        out["dep_behavior"] = "m" if dep == "hm" else dep
        self.at(P + ("dep_behavior",), no, "" if no else "mon's default (pymon's own default is m)")
        if dep == "hm":
            self.note(no, "dep_behavior = hm (host suppression): pymon has no per-host dependencies; converted as m")
        for var, (v, no) in g.items():
            if var in _GLOBAL_NOTES:
                self.note(no, f"{var} = {v}: {_GLOBAL_NOTES[var]}")
        return out

    # -- one service --------------------------------------------------------------

    def service(self, w: Watch, s: Service, vss: list[dict[str, Any]]) -> dict[str, Any] | None:
        P: YPath = ("watch", w.group, s.name)
        o = s.opts
        trap_only = "monitor" not in o and "traptimeout" in o
        if "monitor" not in o and not trap_only:
            self.drop(P[:-1], s.line, f"service {s.name}: no monitor, so mon never runs it")
            return None
        if "interval" not in o and not trap_only:
            self.drop(P[:-1], s.line, f"service {s.name}: no interval, so mon never runs its monitor "
                                      f"(give it an interval to have it checked)")
            return None
        out: dict[str, Any] = {}
        self.at(P, s.line)
        if "description" in o:
            out["description"], no = o["description"]
            self.at(P + ("description",), no)
        for key in ("interval", "failure_interval", "randskew"):
            if key in o and not trap_only:
                out[key] = _timeval(o[key][0])
                self.at(P + (key,), o[key][1])
        if trap_only:
            out["traptimeout"] = _timeval(o["traptimeout"][0])
            self.at(P + ("traptimeout",), o["traptimeout"][1], "trap-only service")
            self.warn(o["traptimeout"][1], f"{w.group}:{s.name}: a trap-only service: pymon takes its traps "
                                           f"through the control API (`pymon trap`), not on mon's UDP trap port")
        else:
            self.timeout: tuple[float, int] | None = None
            monitor = self.monitor(P, s, o["monitor"])
            if monitor is None:
                self.drop(P[:-1], s.line, f"service {s.name}: monitor {o['monitor'][0].split()[0]!r} not found "
                                          f"in {':'.join(self.mondirs)}")
                return None
            out["monitor"] = monitor
            if self.timeout is not None:
                # mon lets the script run out its own -t, even past the interval (the next check
                # waits for it); the native probe gets the same time, not min(30s, interval)
                secs, no = self.timeout
                out["timeout"] = f"{secs:g}s"
                self.at(P + ("timeout",), no, f"{o['monitor'][0].split()[0]}'s own timeout"
                        f"{'' if _opt_t(o['monitor'][0].split()[1:]) else ' (its default -t)'}")
        hosts = self.cf.hostgroups.get(w.group, ([], 0))[0]
        if "exclude_hosts" in o:
            v, no = o["exclude_hosts"]
            ex = [h for h in v.split() if h in hosts]
            for h in v.split():
                if h not in hosts:
                    self.warn(no, f"exclude_hosts: {h!r} is not in hostgroup {w.group}; ignored (as mon does)")
            if ex:
                out["exclude_hosts"] = ex
                self.at(P + ("exclude_hosts",), no)
        periods = [x for x in (self.cf.globals.get("exclude_period"), o.get("exclude_period")) if x]
        if periods:
            out["exclude_period"] = ", ".join(v for v, _ in periods)
            self.at(P + ("exclude_period",), periods[-1][1],
                    "global exclude_period merged in" if len(periods) > 1 or "exclude_period" not in o else "")
        self.depend(P, w, s, out)
        if s.env:
            out["env"] = {k: v for k, (v, _) in s.env.items()}
            self.at(P + ("env",), min(no for _, no in s.env.values()))
            for k, (_, no) in s.env.items():
                self.at(P + ("env", k), no)
        for key, why in (("redistribute", "pymon has no redistribute (an alert on every result)"),
                         ("unack_summary", "pymon has no unack_summary (an ack lasts until recovery)"),
                         ("traptimeout", "pymon's traptimeout is for trap-only services (this one has a monitor)"),
                         ("trapduration", "pymon has no trapduration"),
                         ("dep_memory", "pymon has no dep_memory"),
                         ("hostdepend", "pymon has no per-host dependencies"),
                         ("allow_empty_group", "pymon cannot disable hosts, so a group is never emptied by it")):
            if key in o and not (key == "traptimeout" and trap_only):
                v, no = o[key]
                self.note(no, f"{w.group}:{s.name}: {key}{' ' + v if v else ''}: {why}")
        out["periods"] = [self.period(P + ("periods", i), w, s, p) for i, p in enumerate(s.periods)]
        if not out["periods"]:
            del out["periods"]
        self.lvs(P, w, s, out, vss)
        return out

    def drop(self, parent: YPath, line: int, msg: str) -> None:
        self.note(line, msg)
        self.conv.dropped.setdefault(parent, []).append(f"{Path(self.cf.file).name}:{line}: {msg}")

    def monitor(self, P: YPath, s: Service, spec: tuple[str, int]) -> str | None:
        text, no = spec
        try:
            argv = shlex.split(text)
        except ValueError as e:
            raise ConfigError([f"{self.cf.file}:{no}: monitor: {e} in {text!r}"]) from None
        name, args = argv[0], argv[1:]
        nohosts = bool(args) and args[-1] == ";;"
        path = P + ("monitor",)
        own = self.resolver.plugins.executable(name, self.resolver.mondirs) if name in NATIVE_MONITORS else None
        if own is not None and not shipped_script(own):
            # the site's own script under a native probe's name: mon runs it, so does pymon
            if self.native:
                self.warn(no, f"monitor {name}: {own} is not the script mon ships: it runs, as in mon "
                              f"(not the native {NATIVE_MONITORS[name]} probe)")
            self.at(path, no, f"{own} is the site's own script")
            return text
        if self.native and name in NATIVE_MONITORS:
            native = NATIVE_MONITORS[name]
            nargs = args[:-1] if nohosts else list(args)
            if native == "tcp" and not any(a.startswith("-p") for a in nargs):
                nargs = ["-p", "23", *nargs]  # tcp.monitor's default port
            elif not nargs:
                nargs = list(_NATIVE_BARE.get(native, []))
            problems = ["mon runs it without the group's hosts (;;)"] if nohosts and native != "freespace" else \
                self.resolver.native_problems(native, nargs)
            if not problems:
                self.at(path, no, f"was: {text}")
                if native in _SCRIPT_TIMEOUT:
                    self.timeout = (_opt_t(nargs) or _SCRIPT_TIMEOUT[native], no)
                return shlex.join([native, *nargs])
            if not self.check_monitors or self.resolver.monitor(name):
                if not self.resolver.monitor(name):
                    self.absent(no, "monitor", name)
                self.at(path, no, f"kept as mon's script: native {native}: {'; '.join(problems)}")
                return text
            self.note(no, f"monitor {text}: no such script and the native {native} probe does not take it: "
                          f"{'; '.join(problems)}")
            return None
        if not self.resolver.monitor(name):
            if self.check_monitors:
                return None
            self.absent(no, "monitor", name)
        self.at(path, no)
        return text

    def depend(self, P: YPath, w: Watch, s: Service, out: dict[str, Any]) -> None:
        o = s.opts
        behavior = o["dep_behavior"][0] if "dep_behavior" in o else s.dep_behavior
        if "depend" in o:
            expr, no = o["depend"]
        elif "monitordepend" in o or "alertdepend" in o:
            key = "monitordepend" if "monitordepend" in o else "alertdepend"
            expr, no = o[key]
            behavior = "m" if key == "monitordepend" else "a"
            if "monitordepend" in o and "alertdepend" in o:
                self.note(o["alertdepend"][1], f"{w.group}:{s.name}: alertdepend next to monitordepend: pymon has "
                                               f"one dependency list per service; only monitordepend carried over")
        else:
            if "dep_behavior" in o:
                self.at(P + ("dep_behavior",), o["dep_behavior"][1])
            return
        expr = expr.replace("SELF:", f"{w.group}:")
        deps = re.findall(r"[a-zA-Z0-9_.-]+:[a-zA-Z0-9_.-]+", expr)
        rest = re.sub(r"[a-zA-Z0-9_.-]+:[a-zA-Z0-9_.-]+", " ", expr)
        if re.search(r"[^\s()]", re.sub(r"&&|\band\b", " ", rest)) or not deps:
            self.note(no, f"{w.group}:{s.name}: depend {expr!r} is a Perl expression beyond 'all of these up'; "
                          f"pymon's depend is a list of services that must all be up")
            return
        if len(deps) > 1 and not re.search(r"&&|\band\b", rest):
            self.warn(no, f"depend {expr!r}: mon evaluates this as a Perl expression ('1 1'), a syntax error, "
                          f"so the dependency never holds (dep_behavior m: the monitor never runs; a: no alert "
                          f"is ever sent); converted as 'all of them up', as evidently meant")
        kept = []
        for d in dict.fromkeys(deps):
            g, sv = d.split(":", 1)
            if (g, sv) not in self.services:
                self.note(no, f"{w.group}:{s.name}: depend on {d}, which is not defined: mon counts it as failing "
                              f"forever")
            elif (g, sv) != (w.group, s.name):
                kept.append(d)
        if kept:
            out["depend"] = kept
            self.at(P + ("depend",), no)
        if behavior == "hm":
            self.note(no, f"{w.group}:{s.name}: dep_behavior hm (host suppression): pymon has no per-host "
                          f"dependencies; converted as m")
            behavior = "m"
        if behavior != self.conv.data["globals"]["dep_behavior"] or "dep_behavior" in o:
            out["dep_behavior"] = behavior
            self.at(P + ("dep_behavior",), o.get("dep_behavior", (None, no))[1])

    def period(self, P: YPath, w: Watch, s: Service, p: Period) -> dict[str, Any]:
        out: dict[str, Any] = {}
        self.at(P, p.line, f"period label {p.label}" if p.label != p.spec else "")
        if p.spec.strip():
            out["period"] = p.spec
            self.at(P + ("period",), p.line)
        exit_range = p.opts.get("alertexitrange")
        for kind in ("alert", "upalert", "startupalert"):
            items: list[str] = []
            for text, no in p.alerts[kind]:
                a = self.alert(text, no, kind, exit_range[0] if exit_range and kind == "alert" else None)
                if a is not None:
                    self.at(P + (kind, len(items)), no, a[1])
                    items.append(a[0])
            if items:
                out[kind] = items
        for kind in ("ackalert", "disablealert"):
            for text, no in p.alerts[kind]:
                self.note(no, f"{w.group}:{s.name}: {kind} {text}: pymon sends no alerts on ack or disable")
        o = p.opts
        if "alertevery" in o:
            v, no = o["alertevery"]
            words = v.split()
            flag = words[1] if len(words) > 1 else ""
            if flag == "summary":
                self.warn(no, f"alertevery ... summary: in mon 1.3 'summary' is a no-op kept for old configs "
                              f"(mon's option to ignore summary changes is 'ignore_summary'); converted without it")
                flag = ""
            pyflag = {"ignore_summary": "summary"}.get(flag, flag)
            out["alertevery"] = f"{_timeval(words[0])} {pyflag}".strip()
            self.at(P + ("alertevery",), no)
        if "alertafter" in o:
            v, no = o["alertafter"]
            if re.fullmatch(r"\d+", v):
                out["alertafter"] = int(v)
            elif m := re.search(r"(\d+)\s+(\d+[hms])$", v):
                out["alertafter"] = f"{m.group(1)} {m.group(2)}"
            else:
                out["alertafter"] = v
            self.at(P + ("alertafter",), no)
        if "numalerts" in o:
            out["numalerts"] = int(o["numalerts"][0])
            self.at(P + ("numalerts",), o["numalerts"][1])
        if "no_comp_alerts" in o:
            out["no_comp_alerts"] = True
            self.at(P + ("no_comp_alerts",), o["no_comp_alerts"][1])
        if "upalertafter" in o:
            v, no = o["upalertafter"]
            self.note(no, f"{w.group}:{s.name}: upalertafter {v}: has no effect in mon 1.3 (read_cf stores it per "
                          f"period, the upalert code reads it per service), and pymon has none")
        if "alerts_dont_count" in o:
            self.note(o["alerts_dont_count"][1], f"{w.group}:{s.name}: alerts_dont_count: pymon has none")
        return out

    def alert(self, text: str, no: int, kind: str, exit_range: str | None) -> tuple[str, str] | None:
        """One alert line as pymon's string (`exit=N-M name args`), and a comment."""
        rng = None
        body = text
        if m := re.match(r"^exit\s*=\s*(\d+-\d+|\d+)\s+(.*)$", text, re.I | A):
            if kind == "alert":
                rng, body = m.group(1), m.group(2)
            else:
                body = m.group(2)  # mon ignores exit= on up/startup alerts... by never matching them
        try:
            argv = shlex.split(body)
        except ValueError as e:
            raise ConfigError([f"{self.cf.file}:{no}: {kind}: {e} in {text!r}"]) from None
        if not argv:
            self.note(no, f"{kind} with no alert name")
            return None
        comment = ""
        if exit_range is not None:
            rng = _intersect(rng, exit_range.strip())
            comment = f"alertexitrange {exit_range.strip()} applied"
            if rng is None:
                self.note(no, f"{kind} {text}: its exit= range and the period's alertexitrange never overlap")
                return None
        name = argv[0]
        if name in LVS_ALERTS and self.resolver.plugins.executable(name, self.resolver.alertdirs) is None:
            # the built-in lvs alert runs it: the LVS-HOWTO's `-P tcp-service` is its `-P tcp`
            for i in range(1, len(argv) - 1):
                if argv[i] == "-P" and argv[i + 1].lower() in _PROTO:
                    argv[i + 1] = _PROTO[argv[i + 1].lower()]
                    body = shlex.join(argv)
        if name not in LVS_ALERTS and not self.resolver.alert(name):
            if self.check_alerts:
                self.note(no, f"{kind} {name}: no such alert in {':'.join(self.alertdirs)} (mon logs 'no alert "
                              f"found' each time)")
                return None
            self.absent(no, kind, name)
        s = shlex.join(argv) if shlex.join(argv) != body.strip() else body.strip()
        return (f"exit={rng} {s}" if rng else s), comment

    # -- lvs.alert -> virtual_services ---------------------------------------------

    def lvs(self, P: YPath, w: Watch, s: Service, out: dict[str, Any], vss: list[dict[str, Any]]) -> None:
        """alert + upalert `lvs.alert -V VIP -R RIP` in always-on periods become a virtual service
        watched by this service, when the real server is a host of the group (or the group's
        only host) and no other watch feeds that VIP. Anything else stays an alert, for the
        built-in lvs alert."""
        watch = f"{w.group}:{s.name}"
        found: dict[tuple[str, str], dict[str, Any]] = {}  # (kind, "VIP RIP") -> parsed args + where
        for i, p in enumerate(out.get("periods", [])):
            for kind in ("alert", "upalert"):
                for j, a in enumerate(p.get(kind, [])):
                    argv = shlex.split(a)
                    parsed = _lvs_args(argv[1:]) if argv[0] in LVS_ALERTS else None
                    if parsed is not None:
                        parsed.update(period=i, index=j, line=self.conv.lines.get(P + ("periods", i, kind, j), 0),
                                      name=argv[0])
                        found[(kind, parsed["V"] + " " + parsed["R"])] = parsed
        hosts = self.cf.hostgroups.get(w.group, ([], 0))[0]
        for (kind, key), down in found.items():
            if kind != "alert":
                continue
            up = found.get(("upalert", key))
            if up is None:
                why = "no matching upalert (mon takes the real server out for good)"
            elif any(not _always(s.periods[x["period"]]) or "alertafter" in out["periods"][x["period"]]
                     or "numalerts" in out["periods"][x["period"]] for x in (down, up) if x is not None):
                why = "its period is not 'always' or has alertafter/numalerts, which a virtual service cannot express"
            elif down["host"] not in hosts and len(hosts) != 1:
                why = f"real server {down['host']} is not a host of hostgroup {w.group}"
            elif len(self.vip_watches.get(down["vipkey"], ())) > 1:
                why = (f"virtual service {down['V']} is fed by several watches "
                       f"({', '.join(sorted(self.vip_watches[down['vipkey']]))}); a virtual_services entry "
                       f"watches one service")
            else:
                why = ""
            if why or up is None:
                script = self.resolver.plugins.executable(down["name"], self.resolver.alertdirs)
                runs = f"{script} runs it, as in mon" if script else "pymon's built-in lvs alert runs it"
                self.warn(down["line"], f"lvs alert -V {down['V']} -R {down['R']}: kept as an alert ({runs}): {why}")
                continue
            vs = next((v for v in vss if v["watch"] == watch and _vs_key(v) == down["vipkey"]), None)
            if vs is None:
                vs = {"fwmark": down["fwmark"]} if down["fwmark"] is not None else {"vip": down["V"]}
                if down["fwmark"] is None and down["proto"] != "tcp":
                    vs["protocol"] = down["proto"]
                vs.update(watch=watch, real_servers=[])
                vss.append(vs)
                self.at(("virtual_services", len(vss) - 1), down["line"], f"from the lvs.alert lines of {watch}")
            rs: dict[str, Any] = {"address": up["R"]}
            if down["host"] not in hosts:
                rs["host"] = hosts[0]
            rs.update(weight=up["W"], forwarding=up["F"])
            if down["X"] == "quiesce":
                vs["quiescent"] = True
            vs["real_servers"].append(rs)
            vi = vss.index(vs)
            self.at(("virtual_services", vi, "real_servers", len(vs["real_servers"]) - 1), up["line"],
                    f"alert line {down['line']}, upalert line {up['line']}")
            for x, k in ((down, "alert"), (up, "upalert")):
                out["periods"][x["period"]][k][x["index"]] = None
        for i, p in enumerate(out.get("periods", [])):
            for kind in ("alert", "upalert"):
                if None not in p.get(kind, []):
                    continue
                base = P + ("periods", i, kind)
                kept = [(a, self.conv.lines.pop(base + (j,), None), self.conv.comments.pop(base + (j,), ""))
                        for j, a in enumerate(p[kind])]
                p[kind] = []
                for a, line, comment in kept:
                    if a is not None:
                        self.at(base + (len(p[kind]),), line, comment)
                        p[kind].append(a)
                if not p[kind]:
                    del p[kind]
                self.conv.dropped.setdefault(P + ("periods", i), []).append(
                    f"{kind} lvs.alert ... : now a real server in virtual_services")

    @property
    def vip_watches(self) -> dict[Any, set[str]]:
        """Which watches send lvs alerts for each virtual service (scanned once)."""
        if not hasattr(self, "_vip_watches"):
            self._vip_watches: dict[Any, set[str]] = {}
            for w in self.cf.watches.values():
                for s in w.services.values():
                    for p in s.periods:
                        for text, _ in p.alerts["alert"] + p.alerts["upalert"]:
                            try:
                                argv = shlex.split(re.sub(r"^exit\s*=\s*\S+\s+", "", text))
                            except ValueError:
                                continue
                            parsed = _lvs_args(argv[1:]) if argv and argv[0] in LVS_ALERTS else None
                            if parsed is not None:
                                self._vip_watches.setdefault(parsed["vipkey"], set()).add(f"{w.group}:{s.name}")
        return self._vip_watches


def _vs_key(vs: dict[str, Any]) -> tuple[str, str]:
    if "fwmark" in vs:
        return ("fwmark", str(vs["fwmark"]))
    return (vs.get("protocol", "tcp"), vs["vip"])


def _intersect(a: str | None, b: str) -> str | None:
    def rng(x: str) -> tuple[int, int]:
        lo, _, hi = x.partition("-")
        return int(lo), int(hi or lo)

    if a is None:
        return b
    (a1, a2), (b1, b2) = rng(a), rng(b)
    lo, hi = max(a1, b1), min(a2, b2)
    if lo > hi:
        return None
    return str(lo) if lo == hi else f"{lo}-{hi}"


_PROTO = {"tcp": "tcp", "tcp-service": "tcp", "t": "tcp", "-t": "tcp", "udp": "udp", "udp-service": "udp",
          "u": "udp", "-u": "udp", "sctp": "sctp", "sctp-service": "sctp", "fwmark": "fwmark",
          "fwmark-service": "fwmark", "fwm": "fwmark", "f": "fwmark", "-f": "fwmark"}


def _lvs_args(argv: list[str]) -> dict[str, Any] | None:
    """The classic lvs.alert options (`-P tcp-service -V VIP:PORT -R RIP -W 5 -F dr`)."""
    try:
        opts, rest = getopt.getopt(argv, "P:V:R:W:F:X:")
    except getopt.GetoptError:
        return None
    o = dict(opts)
    proto = _PROTO.get(o.get("-P", "tcp").lower())
    if rest or "-V" not in o or "-R" not in o or proto is None:
        return None
    fwd = {"dr": "dr", "gate": "dr", "g": "dr", "nat": "nat", "masq": "nat", "m": "nat",
           "tun": "tun", "ipip": "tun", "i": "tun"}.get(o.get("-F", "dr").lower())
    weight = o.get("-W", "1")
    if fwd is None or not weight.isdigit() or o.get("-X", "down") not in ("down", "quiesce"):
        return None
    fwmark = int(o["-V"]) if proto == "fwmark" and o["-V"].isdigit() else None
    if proto == "fwmark" and fwmark is None:
        return None
    rip = o["-R"]
    host = rip[1:].partition("]")[0] if rip.startswith("[") else (rip.split(":")[0] if rip.count(":") == 1 else rip)
    return {"V": o["-V"], "R": rip, "W": int(weight), "F": fwd, "X": o.get("-X", "down"), "proto": proto,
            "fwmark": fwmark, "host": host, "vipkey": (proto, o["-V"])}


def _always(p: Period) -> bool:
    """A period that holds at every minute of a week (e.g. `wd {Sun-Sat}`, or none)."""
    if not p.spec.strip():
        return True
    period = parse_period(p.spec)
    base = 1704067200  # 2024-01-01 00:00 UTC, a Monday
    return all(period.contains(base + i * 1800) for i in range(7 * 48))


# -- YAML with source comments ---------------------------------------------------


def _y(v: Any) -> str:
    s = yaml.safe_dump(v, default_flow_style=True, width=1 << 30, allow_unicode=True)
    return s.removesuffix("\n").removesuffix("\n...").removesuffix("\n")


def to_yaml(conv: Conversion, header: bool = True) -> tuple[str, dict[int, int]]:
    """The config as YAML, each item with `# mon.cf:LINE`; and YAML line -> mon.cf line."""
    src = Path(conv.file).name
    out: list[str] = []
    lmap: dict[int, int] = {}

    def put(text: str, path: YPath, src_line: int) -> None:
        line = conv.lines.get(path)
        parts = [f"{src}:{line}"] if line else []
        if path in conv.comments:
            parts.append(conv.comments[path])
        out.append(text + (f"  # {'; '.join(parts)}" if parts else ""))
        lmap[len(out)] = line or src_line

    def nearest(path: YPath) -> int:
        while path and path not in conv.lines:
            path = path[:-1]
        return conv.lines.get(path, 1)

    def block_list(v: Any, path: YPath) -> bool:
        return isinstance(v, list) and bool(v) and (
            any(isinstance(x, (dict, list)) for x in v) or any(path + (i,) in conv.lines for i in range(len(v))))

    def entry(prefix: str, ind: int, key: Any, v: Any, path: YPath) -> None:
        head = f"{prefix}{_y(key)}:"
        if isinstance(v, dict) and v:
            put(head, path, nearest(path))
            mapping(v, path, ind + 2)
        elif block_list(v, path):
            put(head, path, nearest(path))
            for i, x in enumerate(v):
                item(ind + 2, x, path + (i,))
        else:
            put(f"{head} {_y(v)}", path, nearest(path))
        for c in conv.dropped.get(path, []) if not (isinstance(v, dict) and v) else []:
            out.append(f"{' ' * (ind + 2)}# {c}")

    def mapping(d: dict[str, Any], path: YPath, ind: int) -> None:
        for k, x in d.items():
            entry(" " * ind, ind, k, x, path + (k,))
        for c in conv.dropped.get(path, []):
            out.append(f"{' ' * ind}# {c}")

    def item(ind: int, x: Any, path: YPath) -> None:
        if isinstance(x, dict) and x:
            keys = list(x)
            # the item's own source line goes on its first line
            first_path = path + (keys[0],)
            saved_line, saved_c = conv.lines.get(first_path), conv.comments.get(first_path)
            if path in conv.lines and first_path not in conv.lines:
                conv.lines[first_path] = conv.lines[path]
            if path in conv.comments:
                conv.comments[first_path] = "; ".join(c for c in (conv.comments[path], saved_c) if c)
            entry(" " * ind + "- ", ind + 2, keys[0], x[keys[0]], first_path)
            for k in keys[1:]:
                entry(" " * (ind + 2), ind + 2, k, x[k], path + (k,))
            for c in conv.dropped.get(path, []):
                out.append(f"{' ' * (ind + 2)}# {c}")
            if saved_line is None:
                conv.lines.pop(first_path, None)
            else:
                conv.lines[first_path] = saved_line
            if saved_c is None:
                conv.comments.pop(first_path, None)
            else:
                conv.comments[first_path] = saved_c
        else:
            put(f"{' ' * ind}- {_y(x)}", path, nearest(path))

    if header:
        out.append(f"# pymon config converted from {conv.file} by `pymon import-mon`")
        out.append(f"# each item names its source line as {src}:LINE")
        if conv.notes or conv.warnings:
            out.append("#")
        for no, msg in conv.warnings:
            out.append(f"# warning: {src}:{no}: {msg}")
        for no, msg in conv.notes:
            out.append(f"# not carried over: {src}:{no}: {msg}" if no else f"# note: {msg}")
        for i in range(len(out)):
            lmap[i + 1] = 1
    for key in ("globals", "hostgroups", "watch", "virtual_services"):
        if key in conv.data:
            v = conv.data[key]
            if not v:
                put(f"{key}: {_y(v)}", (key,), 1)
            else:
                entry("", 0, key, v, (key,))
    return "\n".join(out) + "\n", lmap


# -- entry points ----------------------------------------------------------------


def is_moncf(file: str, text: str) -> bool:
    """A mon.cf by name (`*.cf`, `*.m4`) or by content: its first significant line is a
    mon record, a `name = value` global, or m4."""
    if file.endswith((".cf", ".m4")):
        return True
    for ln in text.splitlines():
        s = ln.strip()
        if not s or s.startswith("#"):
            continue
        return bool(re.match(r"^(hostgroup|watch)\s+[a-zA-Z0-9_.-]+|^\w+\s*=|^dnl\b|^define\(", s, A))
    return False


def import_text(text: str, file: str, *, m4: bool | None = None, native: bool = True) -> Conversion:
    return convert(parse(text, file, m4=m4), native=native)


def check_yaml(conv: Conversion, yaml_text: str, lmap: dict[int, int], plugins: PluginsFor | None = None) -> Config:
    """Validate the converted config; problems are mapped back to the mon.cf line."""
    try:
        return parse_config(yaml_text, conv.file, plugins=plugins)
    except ConfigError as e:
        raise ConfigError(translate(e.problems, conv.file, lmap)) from None


def translate(problems: list[str], file: str, lmap: dict[int, int]) -> list[str]:
    out = []
    for p in problems:
        if p.startswith(file + ":") and (m := re.match(r"^(\d+):(\d+): (.*)$", p[len(file) + 1:], re.S)):
            out.append(f"{file}:{lmap.get(int(m.group(1)), 1)}: {m.group(3)}")
        else:
            out.append(p)
    return out


_reported: set[str] = set()


def load(text: str, file: str, *, plugins: PluginsFor | None = None) -> Config:
    """`pymon run -c mon.cf`: convert in memory; warnings and notes go to stderr once
    per file content (a reload reads the same file again)."""
    conv = import_text(text, file)
    yaml_text, lmap = to_yaml(conv, header=False)
    try:
        cfg = check_yaml(conv, yaml_text, lmap, plugins)
    except ConfigError as e:
        raise ConfigError([_where_to_look(conv, p) for p in e.problems]) from None
    key = hashlib.sha256(f"{file}\0{text}".encode()).hexdigest()
    if key not in _reported:
        _reported.add(key)
        for line in report_lines(conv):
            print(line, file=sys.stderr)
    return cfg


def _where_to_look(conv: Conversion, problem: str) -> str:
    """An unknown script name, with the dirs searched and how to point mon's dir elsewhere."""
    m = re.match(r"^(.*?: )unknown (alert|monitor) ('[^']*') \(not built in and not found in the \w+ dirs\)$",
                 problem, re.S)
    if not m:
        return problem
    var = "alertdir" if m.group(2) == "alert" else "mondir"
    dirs = [str(d) for d in conv.data["globals"][var]]
    gone = [d for d in dirs if not os.path.isdir(d)]
    line = conv.lines.get(("globals", var))
    return (f"{m.group(1)}unknown {m.group(2)} {m.group(3)}: not built in and not in {var} {':'.join(dirs)}"
            f"{' (' + ', '.join(gone) + ' does not exist here)' if gone else ''}; point {var} "
            f"({f'{conv.file}:{line}' if line else 'unset: mon default'}) at the directory that holds it, "
            f"or convert with `pymon import-mon` and edit the YAML's globals.{var}")


class _Lenient:
    """import-mon's plugin check: names not found are the converter's warnings (the YAML is
    written all the same); everything else is checked as `check-config` would."""

    def __init__(self, inner: Any):
        self.inner = inner

    def monitor(self, name: str) -> object:
        return self.inner.monitor(name) or name

    def alert(self, name: str) -> object:
        return self.inner.alert(name) or name

    def problems(self, kind: str, name: str, params: dict[str, Any]) -> list[str]:
        return list(self.inner.problems(kind, name, params))


def report_lines(conv: Conversion) -> list[str]:
    items = [(no, f"{conv.file}:{no}: warning: {msg}") for no, msg in conv.warnings]
    items += [(no, f"{conv.file}:{no}: not carried over: {msg}") for no, msg in conv.notes]
    return [text for _, text in sorted(items, key=lambda t: t[0])]


def cli(a: argparse.Namespace) -> int:
    """`pymon import-mon [--check] [--m4] [--legacy-monitors] MON.CF`."""
    file = a.file
    text = read_source(file, f"{file}:1")
    conv = import_text(text, file, m4=True if a.m4 else None, native=not a.legacy_monitors)
    yaml_text, lmap = to_yaml(conv)
    from pymon.engine.plugin_loading import Loading

    loading = Loading()
    check_yaml(conv, yaml_text, lmap, lambda mondirs, alertdirs: _Lenient(loading(mondirs, alertdirs)))
    lines = report_lines(conv)
    if a.check:
        for line in lines:
            print(line)
        if not lines:
            print(f"{file}: everything carried over")
        return 1 if lines else 0
    for line in lines:
        print(line, file=sys.stderr)
    sys.stdout.write(yaml_text)
    return 0
