"""The CLI commands that talk to a running daemon through its control API (api.py):
`pymon status`, `disable`, `enable`, `drain`, `undrain`, `ack`, `history`, `downtime`,
`trap`, `test-now`, `reload`, `web-url`. cli.py registers them with `add_commands`.

Where the daemon is: `--socket PATH` (or `--url http://127.0.0.1:PORT`), else the
config's `control_socket` (`-c FILE`, default /etc/pymon/pymon.yaml when it exists),
else `$STATE_DIRECTORY` or /var/lib/pymon + `/pymon.sock`. The token: `--token-file`,
else `$PYMON_TOKEN`, else the config's `token_file` (`<statedir>/token`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable

import aiohttp

from .vrrp import format_status as vrrp_status

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

    async def call(self, method: str, path: str, body: dict[str, Any] | None = None,
                   query: dict[str, str] | None = None) -> Any:
        headers = {"Authorization": f"Bearer {self.token()}"}
        if self.url:
            connector: aiohttp.BaseConnector = aiohttp.TCPConnector()
            base = self.url.rstrip("/")
        else:
            connector = aiohttp.UnixConnector(path=str(self.socket))
            base = "http://pymon"
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
            where = self.url or self.socket
            raise ApiError(0, f"cannot reach pymon at {where}: {e} (is it running? -c FILE or --socket PATH)") from None


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
        out += ["", "IPVS" + (" (dry run)" if ipvs["dry_run"] else "") + (" FROZEN (director fault)"
                if ipvs.get("frozen") else "") + ": virtual service / real server  wanted  actual  pool state"]
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
                out.append(f"    -> {d['real_server']:<28} {w:>6}  {a:>6} {mark:1} {state}".rstrip())
        for e in ipvs["errors"]:
            out.append(f"  error: {e}")
    out += vrrp_status(st)  # keepalived's role, when it reported one (vrrp.py)
    return "\n".join(out)


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

    fns = {"status": _status, "disable": _disable, "enable": _enable, "drain": _drain, "undrain": _undrain,
           "ack": _ack, "history": _history,
           "downtime": _downtime, "trap": _trap, "test-now": _test_now, "reload": _reload, "web-url": _web_url,
           "vrrp": _vrrp}

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
