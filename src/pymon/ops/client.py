"""The CLI commands that talk to a running daemon through its control API (api.py):
`pymon status`, `disable`, `enable`, `drain`, `undrain`, `ack`, `history`, `downtime`,
`trap`, `test-now`, `reload`, `web-url`, `pool`, `overrides`, `route`. cli.py registers
them with `add_commands`.

Where the daemon is: `--socket PATH` (or `--url http://127.0.0.1:PORT`), else the
config's `control_socket` (`-c FILE`, default /etc/pymon/pymon.yaml when it exists),
else `$STATE_DIRECTORY` or /var/lib/pymon + `/pymon.sock`. The token: `--token-file`,
else `$PYMON_TOKEN`, else the config's `token_file` (`<statedir>/token`); on the socket
it is sent when readable and not needed for root, the daemon's user and its group's
members (the daemon reads their credentials from the socket, api.py).
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import grp
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable

import aiohttp

from .vrrp import format_status as vrrp_status
from pymon.routing.owner import format_status as routes_status  # BGP announcements (routing/)
from .director_canaries import format_status as selfcheck_status

DEFAULT_CONFIG = "/etc/pymon/pymon.yaml"


class ApiError(Exception):
    def __init__(self, status: int, msg: str):
        super().__init__(msg)
        self.status = status


class Where:
    def __init__(self, a: argparse.Namespace):
        cfg = None
        path = a.config or (DEFAULT_CONFIG if Path(DEFAULT_CONFIG).is_file() else None)
        if path and not (a.socket and (a.token_file or os.environ.get("PYMON_TOKEN"))):
            from pymon.loader import load_config

            cfg = load_config(path)
        statedir = Path(os.environ.get("STATE_DIRECTORY") or "/var/lib/pymon")
        self.socket = Path(a.socket) if a.socket else (cfg.control_socket if cfg else statedir / "pymon.sock")
        self.url: str | None = a.url
        self.port = cfg.control_port if cfg else None
        tf = a.token_file or (None if os.environ.get("PYMON_TOKEN") else
                              str(cfg.token_file) if cfg else str(statedir / "token"))
        self.token_file = tf
        self._token: str | None = os.environ.get("PYMON_TOKEN") if not a.token_file else None

    def token(self) -> str:
        if self._token is None:
            assert self.token_file is not None
            try:
                self._token = Path(self.token_file).read_text().strip()
            except OSError as e:
                raise ApiError(0, f"cannot read the token file {self.token_file}: {e.strerror} "
                                  "(run as root or the pymon user, or pass --token-file / $PYMON_TOKEN)") from None
        return self._token

    def _socket_token(self) -> str | None:
        """On the socket the daemon knows root, its user and its group's members by their
        credentials (api.py): the token is sent when readable, not needed otherwise."""
        try:
            return self.token()
        except ApiError:
            return None

    async def call(self, method: str, path: str, body: dict[str, Any] | None = None,
                   query: dict[str, str] | None = None) -> Any:
        if self.url:
            token: str | None = self.token()
            connector: aiohttp.BaseConnector = aiohttp.TCPConnector()
            base = self.url.rstrip("/")
        else:
            self._check_socket()
            token = self._socket_token()
            connector = aiohttp.UnixConnector(path=str(self.socket))
            base = "http://pymon"
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        try:
            async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=120)) as s:
                async with s.request(method, base + path, json=body, params=query, headers=headers) as r:
                    text = await r.text()
                    try:
                        data = json.loads(text)
                    except ValueError:
                        data = text
                    if r.status >= 400:
                        msg = data.get("error", text) if isinstance(data, dict) else text
                        raise ApiError(r.status, f"{msg} (HTTP {r.status})")
                    return data
        except aiohttp.ClientConnectionError as e:
            if self.url:
                raise ApiError(0, f"cannot reach pymon at {self.url}: {e} (is it running?)") from None
            raise ApiError(0, self._socket_problem(e)) from None

    def _check_socket(self) -> None:
        try:
            self.socket.stat()
        except (FileNotFoundError, NotADirectoryError):
            raise ApiError(0, f"pymon is not running: no socket at {self.socket} (-c FILE or --socket PATH "
                              "if it runs with another config)") from None
        except PermissionError as e:
            raise ApiError(0, self._socket_problem(e)) from None

    def _socket_problem(self, e: Exception) -> str:
        """One line for why the socket did not answer: not running, or not allowed in."""
        cause = getattr(e, "os_error", None) or e.__cause__ or e
        err = getattr(cause, "errno", None)
        if err == errno.ECONNREFUSED:
            return f"pymon is not running: nothing listens on {self.socket} (left by a daemon that stopped)"
        if err == errno.ENOENT:
            return f"pymon is not running: no socket at {self.socket}"
        if err == errno.EACCES:
            try:
                group = grp.getgrgid(self.socket.parent.stat().st_gid).gr_name
            except (KeyError, OSError):
                group = "the daemon's group"
            return (f"permission denied on {self.socket}: run as root, the daemon's user, "
                    f"or a member of the group {group}")
        return f"cannot reach pymon at {self.socket}: {e}"


# -- formatting --------------------------------------------------------------------------------


def ago(t: float | None, now: float) -> str:
    if not t:
        return "never"
    d = max(0.0, now - t)
    for unit, n in (("d", 86400), ("h", 3600), ("m", 60)):
        if d >= n:
            return f"{d / n:.0f}{unit} ago"
    return f"{d:.0f}s ago"


def when(t: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t)) if t else "-"


def _dis(d: dict[str, Any]) -> str:
    parts = [d.get("reason") or "no reason given"]
    parts.append(f"until {when(d['until'])}" if d.get("until") else "until enabled")
    if d.get("by"):
        parts.append(f"by {d['by']}")
    return ", ".join(parts)


def format_status(st: dict[str, Any], width: int = 100) -> str:
    now = st["time"]
    out = [f"pymon {st['version']} · {'ready' if st['ready'] else 'starting'} · {st['status_line']}", ""]
    rows = [("SERVICE", "STATUS", "CHECKED", "HOSTS", "SUMMARY")]
    notes: dict[int, list[str]] = {}
    for s in st["services"]:
        status = {"ok": "ok", "fail": "FAIL", "untested": "-"}[s["status"]]
        if s["disabled"] or (st["groups"].get(s["group"]) or {}).get("disabled"):
            status += " (disabled)"
        hosts = " ".join(f"{h['host']}:{ {'up': 'up', 'down': 'DOWN', 'unknown': '?', 'disabled': 'off'}[h['state']]}"
                         for h in s["hosts"])
        summary = s["summary"] if s["status"] == "fail" else ""
        rows.append((f"{s['group']}:{s['service']}", status, ago(s["last_check"], now), hosts, summary))
        if s["acked"]:
            ack = s.get("ack") or {}
            notes[len(rows) - 1] = [f"acked: {s['acked']}" + (f" ({ack['by']}, {when(ack['time'])})" if ack.get("by") else "")]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for i, r in enumerate(rows):
        out.append("  ".join(c.ljust(w) for c, w in zip(r[:4], widths)) + "  " + r[4])
        for n in notes.get(i, []):
            out.append(" " * (widths[0] + 2) + n)
    dis = st["disabled"]
    if any(dis.values()):
        out += ["", "DISABLED"]
        for kind in ("host", "service", "watch"):
            for name, d in sorted(dis[kind].items()):
                out.append(f"  {kind} {name}: {_dis(d)}")
    ipvs = st.get("ipvs")
    if ipvs:
        actual = {"kernel": "kernel", "simulation": "simulated"}.get(ipvs.get("actual_source") or "", "actual (unread)")
        out += ["", "IPVS" + (" (dry run)" if ipvs["dry_run"] else "") + (" FROZEN (director fault)"
                if ipvs.get("frozen") else "") + f": virtual service / real server  wanted  {actual}  pool state"]
        for vs in ipvs["services"]:
            pool = vs.get("pool")
            line = f"  {vs['virtual_service']} {vs['scheduler'] or ''}"
            if pool:
                line += (f"  pooled {pool['pooled']}, pooled_down {pool['pooled_down']}, need {pool['need']}"
                         + (f", {pool['refusals']} refused" if pool["refusals"] else ""))
            if vs.get("fingerprint"):
                line += f"  fingerprint {vs['fingerprint']}"
            out.append(line)
            for d in vs["real_servers"]:
                w = "-" if d["wanted_weight"] is None else str(d["wanted_weight"])
                a = "-" if d["actual_weight"] is None else str(d["actual_weight"])
                mark = "" if w == a else "≠"
                state = d.get("state", "")
                state = state.upper() if state in ("pooled_down", "draining") else state
                if d.get("cause") and d.get("state") != "pooled":
                    state += f" ({d['cause']})"
                if d.get("override"):
                    state += f" [{d['override']}]"
                out.append(f"    -> {d['real_server']:<28} {w:>6}  {a:>6} {mark:1} {state}".rstrip())
        for e in ipvs["errors"]:
            out.append(f"  error: {e}")
    if st.get("pool_overrides"):
        out += ["", "POOL OVERRIDES (of the config; `pymon overrides --clear` drops them)"]
        out += format_overrides(st["pool_overrides"])
    out += vrrp_status(st)  # keepalived's role, when it reported one (vrrp.py)
    out += routes_status(st)  # BGP announcements, with a routing: section (routing/)
    out += selfcheck_status(st)  # the director's own fault, when self_check is on (director_canaries.py)
    return "\n".join(out)


def format_overrides(items: list[dict[str, Any]]) -> list[str]:
    return [f"  {o['vs']}  {o['address']:<24} {o['mark']}  by {o['by'] or '?'} at {when(o['at'])}" for o in items]


def format_history(items: list[dict[str, Any]]) -> str:
    lines = ["TIME                 SERVICE              TYPE         ALERT        RESULT  SUMMARY"]
    for h in items:
        lines.append(f"{when(h['time']):<20} {h['group'] + ':' + h['service']:<20} {h['type']:<12} "
                     f"{h['alert']:<12} {'sent' if h['ok'] else 'FAILED':<7} {h['summary']}")
    return "\n".join(lines)


def format_downtime(data: dict[str, Any]) -> str:
    lines = ["START                END                  DURATION  SERVICE              HOST             SUMMARY"]
    for o in data["downtime"] + data["open"]:
        end = when(o["end"]) if o["end"] else "(still down)"
        lines.append(f"{when(o['start']):<20} {end:<20} {o['duration_s']:>8.0f}s {o['group'] + ':' + o['service']:<20} "
                     f"{o['host'] or '(service)':<16} {o['summary']}")
    return "\n".join(lines)


# -- commands ----------------------------------------------------------------------------------------


def _target_path(kind: str, names: list[str]) -> str:
    need = {"host": 1, "service": 2, "watch": 1}[kind]
    if len(names) == 1 and kind == "service" and ":" in names[0]:
        names = names[0].split(":", 1)
    if len(names) != need:
        raise ApiError(0, {"host": "disable/enable host HOST", "service": "disable/enable service GROUP SERVICE",
                           "watch": "disable/enable watch GROUP"}[kind])
    return f"/{kind}/" + "/".join(names)


def _print(a: argparse.Namespace, data: Any, text: Callable[[Any], str]) -> None:
    print(json.dumps(data, indent=2) if a.json else text(data))


async def _status(a: argparse.Namespace, w: Where) -> int:
    st = await w.call("GET", "/status")
    _print(a, st, format_status)
    return 0


async def _disable(a: argparse.Namespace, w: Where) -> int:
    body: dict[str, Any] = {"reason": a.reason or ""}
    if a.for_:
        body["for"] = a.for_
    r = await w.call("POST", "/disable" + _target_path(a.kind, a.names), body)
    _print(a, r, lambda r: f"disabled {r['kind']} {r['name']}: {_dis(r['disabled'])}")
    return 0


async def _enable(a: argparse.Namespace, w: Where) -> int:
    r = await w.call("POST", "/enable" + _target_path(a.kind, a.names))
    _print(a, r, lambda r: f"enabled {r['kind']} {r['name']}" + ("" if r["was_disabled"] else " (was not disabled)"))
    return 0


def _drain_path(verb: str, names: list[str]) -> str:
    if len(names) not in (1, 2):
        raise ApiError(0, f"{verb} [GROUP] HOST")
    return f"/{verb}/" + "/".join(names)


async def _drain(a: argparse.Namespace, w: Where) -> int:
    """`pymon drain [GROUP] HOST`: weight 0 now; with --wait, returns once the kernel no
    longer has it draining (idle, or at the timeout)."""
    body: dict[str, Any] = {"reason": a.reason, "force": a.force}
    if a.timeout:
        body["timeout"] = a.timeout
    r = await w.call("POST", _drain_path("drain", a.names), body)
    host = a.names[-1]
    if a.wait:
        while True:
            st = await w.call("GET", "/status")
            rows = [d for vs in (st.get("ipvs") or {}).get("services", []) for d in vs["real_servers"]
                    if d.get("host") == host]
            if not any(d.get("state") == "draining" for d in rows):
                r["states"] = sorted({d.get("state") for d in rows if d.get("state")})
                break
            await asyncio.sleep(0.5)
    _print(a, r, lambda r: f"draining {r['drain']['host']}" + (f" in {r['drain']['group']}" if r["drain"]["group"]
                           else " everywhere") + ("" if not a.wait else f": done ({', '.join(r['states'])})"))
    return 0


async def _undrain(a: argparse.Namespace, w: Where) -> int:
    r = await w.call("POST", _drain_path("undrain", a.names))
    _print(a, r, lambda r: f"undrained {r['name']}" + ("" if r["was_drained"] else " (was not drained)"))
    return 0


async def _ack(a: argparse.Namespace, w: Where) -> int:
    r = await w.call("POST", f"/ack/{a.group}/{a.service}", {"comment": " ".join(a.comment)})
    _print(a, r, lambda r: f"acknowledged {r['group']}:{r['service']}: {r['acked']}")
    return 0


async def _history(a: argparse.Namespace, w: Where) -> int:
    r = await w.call("GET", "/history", query={"limit": str(a.n)})
    _print(a, r, lambda r: format_history(r["history"]))
    return 0


async def _downtime(a: argparse.Namespace, w: Where) -> int:
    r = await w.call("GET", "/downtime", query={"limit": str(a.n)})
    _print(a, r, format_downtime)
    return 0


async def _trap(a: argparse.Namespace, w: Where) -> int:
    body: dict[str, Any] = {"status": a.status, "summary": a.summary, "detail": a.detail}
    if a.host:
        body["hosts"] = a.host
    r = await w.call("POST", f"/trap/{a.group}/{a.service}", body)
    _print(a, r, lambda r: f"{r['group']}:{r['service']}: {r['status']}"
           + (f" (failing: {' '.join(r['failing'])})" if r["failing"] else ""))
    return 0


async def _test_now(a: argparse.Namespace, w: Where) -> int:
    r = await w.call("POST", f"/test/{a.group}/{a.service}")
    _print(a, r, lambda s: "\n".join(
        [f"{s['group']}:{s['service']}: {s['status']}" + (f": {s['summary']}" if s["status"] == "fail" else "")]
        + [f"  {h['host']:<24} {h['state']:<8} {(h['last'] or {}).get('summary', '')}" for h in s["hosts"]]))
    return 0 if r["status"] != "fail" else 1


async def _reload(a: argparse.Namespace, w: Where) -> int:
    r = await w.call("POST", "/reload")
    _print(a, r, lambda r: "reloaded")
    return 0


async def _vrrp(a: argparse.Namespace, w: Where) -> int:
    """`pymon vrrp`: show the roles; `pymon vrrp STATE --instance NAME [--priority N]`, or
    keepalived's own notify arguments `pymon vrrp TYPE NAME STATE [PRIORITY]`: report one."""
    args = a.args
    if not args:
        r = await w.call("GET", "/vrrp")
        _print(a, r, lambda r: "\n".join(vrrp_status({"vrrp": r})[1:]) or "no VRRP state reported")
        return 0
    if len(args) == 1:
        kind, name, state, prio = a.type, a.instance, args[0], a.priority
    elif len(args) in (3, 4):
        kind, name, state, prio = args[0], args[1], args[2], args[3] if len(args) == 4 else a.priority
    else:
        raise ApiError(0, "pymon vrrp [STATE --instance NAME | TYPE NAME STATE [PRIORITY]]")
    body = {"state": state, "type": kind, "time": time.time(), "priority": prio}
    r = await w.call("POST", f"/vrrp/{name}", body)
    _print(a, r, lambda r: f"vrrp {r['instance']}: {r['state']}" + ("" if r["changed"] else " (unchanged)"))
    return 0


async def _route(a: argparse.Namespace, w: Where) -> int:
    """`pymon route`: the announcements; `pymon route disable|enable VIP`: the operator's say."""
    if not a.args:
        r = await w.call("GET", "/routes")
        _print(a, r, lambda r: "\n".join(routes_status({"routes": r})[1:]))
        return 0
    if len(a.args) != 2 or a.args[0] not in ("disable", "enable"):
        raise ApiError(0, "pymon route [disable VIP [--reason TEXT] | enable VIP]")
    verb, vip = a.args
    r = await w.call("POST", f"/{verb}/route/{vip}", {"reason": a.reason} if verb == "disable" else None)
    _print(a, r, lambda r: f"route {vip}: {r['state']} ({r['reason']})")
    return 0


async def _pool(a: argparse.Namespace, w: Where) -> int:
    body = {"action": a.action, "virtual_service": a.virtual_service, "real_server": a.real_server}
    if a.action == "weight":
        if a.value is None:
            raise ApiError(0, "pymon pool weight VS ADDRESS[:PORT] WEIGHT")
        try:
            body["weight"] = int(a.value)
        except ValueError:
            raise ApiError(0, f"weight: expected an integer, got {a.value!r}") from None
    elif a.value is not None:
        raise ApiError(0, f"unexpected argument {a.value!r} (only `weight` takes a value)")
    if a.action == "add":
        body.update({k: v for k, v in (("weight", a.weight), ("host", a.host), ("forwarding", a.forwarding))
                     if v is not None})
    r = await w.call("POST", "/pool/change", body)
    held = r["override"]
    _print(a, r, lambda r: f"{a.virtual_service} {a.real_server}: "
           + (held["mark"] if held else "as the config says (no override)"))
    return 0


async def _overrides(a: argparse.Namespace, w: Where) -> int:
    if a.clear is None:
        r = await w.call("GET", "/pool")
        _print(a, r, lambda r: "\n".join(format_overrides(r["overrides"])) or "no pool overrides")
        return 0
    if len(a.clear) > 2:
        raise ApiError(0, "pymon overrides --clear [VS [ADDRESS[:PORT]]]")
    names = dict(zip(("virtual_service", "real_server"), a.clear))
    r = await w.call("POST", "/pool/clear", names)
    _print(a, r, lambda r: f"cleared {len(r['cleared'])} override(s)" + "".join(
        f"\n  {o['vs']}  {o['address']}" for o in r["cleared"]))
    return 0


async def _web_url(a: argparse.Namespace, w: Where) -> int:
    if not w.port:
        raise ApiError(0, "no control_port in the config: the status page is served only on 127.0.0.1:control_port")
    print(f"http://127.0.0.1:{w.port}/login?token={w.token()}")
    return 0


def add_commands(sub: Any) -> dict[str, Callable[[argparse.Namespace], int]]:
    """Add the API client subcommands to cli.py's subparsers; returns name -> handler."""

    def client(name: str, help: str) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help)
        sp.add_argument("-c", "--config", default=None,
                        help=f"pymon config, to find the socket and token (default: {DEFAULT_CONFIG} if present)")
        sp.add_argument("--socket", default=None, help="the control socket (default: the config's control_socket)")
        sp.add_argument("--url", default=None, help="http://127.0.0.1:PORT instead of the socket")
        sp.add_argument("--token-file", default=None, help="default: $PYMON_TOKEN, else the config's token_file")
        sp.add_argument("--json", action="store_true", help="print the API's JSON")
        return sp

    client("status", "groups, services, hosts, disabled, IPVS of the running daemon")
    for verb in ("disable", "enable"):
        sp = client(verb, f"{verb} a host (everywhere), a service or a watch (hostgroup)")
        sp.add_argument("kind", choices=("host", "service", "watch"))
        sp.add_argument("names", nargs="+", metavar="NAME", help="HOST | GROUP SERVICE | GROUP")
        if verb == "disable":
            sp.add_argument("--for", dest="for_", default=None, help="expiry: 30m, 1h, 2d (default: until enabled)")
            sp.add_argument("--reason", default="", help="shown in status and kept in the state")
    sp = client("drain", "drain a real server: weight 0 now, out of the pool once idle or at --timeout "
                "(HOST: in every virtual service; GROUP HOST: those watching hostgroup GROUP)")
    sp.add_argument("names", nargs="+", metavar="[GROUP] HOST")
    sp.add_argument("--timeout", default=None, help="remove it then even with connections open (300, 5m)")
    sp.add_argument("--force", action="store_true", help="go through even below min_pooled")
    sp.add_argument("--wait", action="store_true", help="return once it has left the pool")
    sp.add_argument("--reason", default="", help="kept with the drain")
    sp = client("undrain", "end a drain: the real server may come back into the pool")
    sp.add_argument("names", nargs="+", metavar="[GROUP] HOST")
    sp = client("ack", "acknowledge a failing service: no more failure alerts until it recovers")
    sp.add_argument("group")
    sp.add_argument("service")
    sp.add_argument("comment", nargs="+")
    for name, help in (("history", "alert history"), ("downtime", "outages: start, end, duration")):
        sp = client(name, help)
        sp.add_argument("-n", type=int, default=50, help="last N entries (default 50)")
    sp = client("trap", "push a passive result for a service (mon's trap)")
    sp.add_argument("group")
    sp.add_argument("service")
    sp.add_argument("--status", required=True, choices=("ok", "fail"))
    sp.add_argument("--summary", default="")
    sp.add_argument("--detail", default="")
    sp.add_argument("--host", action="append", default=[], help="a failing host (repeat; default: all)")
    sp = client("test-now", "run a service's check in the daemon now and print the result")
    sp.add_argument("group")
    sp.add_argument("service")
    client("reload", "reload the daemon's config (as SIGHUP)")
    client("web-url", "print the status page's login link (needs control_port)")
    sp = client("vrrp", "show the VRRP role, or report one (keepalived's notify: see etc/ha/pymon-vrrp-notify)")
    sp.add_argument("args", nargs="*", metavar="STATE | TYPE NAME STATE [PRIORITY]",
                    help="MASTER, BACKUP, FAULT, STOP; or keepalived's four notify arguments")
    sp.add_argument("--instance", default="VI_1", help="the VRRP instance (default VI_1)")
    sp.add_argument("--priority", type=int, default=None)
    sp.add_argument("--type", default="INSTANCE", choices=("INSTANCE", "GROUP"))

    sp = client("pool", "change a real server live: add, remove, weight, disable, enable (kept as an override "
                        "of the config; see `pymon overrides`)")
    sp.add_argument("action", choices=("add", "remove", "weight", "disable", "enable"))
    sp.add_argument("virtual_service", metavar="VS", help="the virtual service's name (or 'TCP VIP:PORT')")
    sp.add_argument("real_server", metavar="ADDRESS[:PORT]")
    sp.add_argument("value", nargs="?", default=None, metavar="WEIGHT", help="for `weight`")
    sp.add_argument("--weight", type=int, default=None, help="add: its weight (default 1)")
    sp.add_argument("--host", default=None, help="add: its name in the watched hostgroup (default: the address)")
    sp.add_argument("--forwarding", default=None, choices=("dr", "nat", "tun"), help="add: default the service's")
    sp = client("overrides", "list the live pool overrides, or clear them")
    sp.add_argument("--clear", nargs="*", default=None, metavar="VS [ADDRESS]",
                    help="drop all overrides, a virtual service's, or one real server's")

    sp = client("route", "show the BGP announcements, or disable/enable one VIP's (routing: section)")
    sp.add_argument("args", nargs="*", metavar="disable VIP | enable VIP")
    sp.add_argument("--reason", default="", help="why, for disable: shown in status and kept in the state")

    fns = {"route": _route, "status": _status, "disable": _disable, "enable": _enable, "drain": _drain,
           "undrain": _undrain, "ack": _ack, "history": _history,
           "downtime": _downtime, "trap": _trap, "test-now": _test_now, "reload": _reload, "web-url": _web_url,
           "vrrp": _vrrp, "pool": _pool, "overrides": _overrides}

    def runner(fn: Callable[..., Any]) -> Callable[[argparse.Namespace], int]:
        def run(a: argparse.Namespace) -> int:
            try:
                w = Where(a)
                return asyncio.run(fn(a, w))
            except ApiError as e:
                print(f"pymon {a.cmd}: {e}", file=sys.stderr)
                return 2 if e.status == 0 else 1
        return run

    return {name: runner(fn) for name, fn in fns.items()}
