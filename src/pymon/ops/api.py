"""The control API (aiohttp): status, history, downtime, disable/enable, ack, test-now,
reload, traps, Prometheus metrics, an OpenAPI description, and the status page.

Listeners:
- a unix socket, always (`globals.control_socket`, default `<statedir>/pymon.sock`),
  mode 0660 (owner and group; set before listen(), so there is no window);
- 127.0.0.1:`globals.control_port`, only when configured. The status page (`/`) is
  served only here: browsers cannot reach a unix socket.

Every call but `GET /health` needs the token (`globals.token_file`, default
`<statedir>/token`, created 0600 with a random token when missing) as
`Authorization: Bearer TOKEN`. The page gets it as a cookie: open
`/login?token=TOKEN` (or paste it into the form at `/login`) once; the cookie is
HttpOnly and SameSite=Strict, and a call that changes something with only the
cookie must also carry `X-Pymon-Request: 1` (which a cross-site form cannot send).
"""

from __future__ import annotations

import hmac
import json
import os
import secrets
import socket
import stat
import time
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Protocol

from aiohttp import web

from pymon import __version__
from . import vrrp
from pymon.model.config import parse_duration
from pymon.ipvs.table import Dest, format_ipvsadm
from pymon.ops.web_request import body as _body, err as _err, form as _form, peer as _peer

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"  # Prometheus text format


def vs_label(key: Any) -> str:
    return str(key)  # ipvsadm's spelling: "TCP 10.0.0.1:80", "FWM 1"


def rs_label(d: Dest) -> str:
    return f"[{d.address}]:{d.port}" if ":" in d.address else f"{d.address}:{d.port}"

if TYPE_CHECKING:
    from pymon.engine.rules import ServiceState
    from pymon.ipvs.owner import LvsOwner
    from pymon.model.config import Config
    from pymon.ops.control import Control
    from pymon.ops.readiness import Readiness


class Daemon(Protocol):
    """What the API reads of the running daemon (the wiring passes it in)."""

    cfg: "Config | None"
    log: Any
    states: "dict[tuple[str, str], ServiceState]"
    lvs: "LvsOwner | None"
    control: "Control"
    readiness: "Readiness"

COOKIE = "pymon_token"
CSRF_HEADER = "X-Pymon-Request"
SOCKET_MODE = 0o660


def load_token(path: Path, log: Any) -> str:
    """The token file's content; a new random token (file mode 0600) when it is missing."""
    try:
        tok = path.read_text().strip()
        if tok:
            return tok
    except FileNotFoundError:
        pass
    tok = secrets.token_urlsafe(32)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(tok + "\n")
        os.chmod(path, 0o600)
        log.info("api.token_created", file=str(path))
    except OSError as e:
        log.error("api.token_failed", file=str(path), error=str(e),
                  action="a token only this process knows: the API is unusable until the file can be written")
    return tok


# -- the JSON views ---------------------------------------------------------------------


def _disabled_json(d: Any) -> dict[str, Any] | None:
    return None if d is None else {"reason": d.reason, "since": d.since, "until": d.until, "by": d.by}


def _result_json(r: Any) -> dict[str, Any] | None:
    if r is None:
        return None
    return {"ok": r.ok, "summary": r.summary, "latency_s": round(r.latency_s, 4)}


def status_json(d: "Daemon") -> dict[str, Any]:
    cfg, ctl = d.cfg, d.control
    assert cfg is not None
    now = time.time()
    services = []
    for (g, s), st in d.states.items():
        hosts = []
        for h in cfg.hosts(st.spec):
            off = ctl.state.is_disabled("host", h, now)
            hs = st.hosts.get(h)
            state = "disabled" if off else "unknown" if hs is None or hs.up is None else "up" if hs.up else "down"
            hosts.append({
                "host": h, "state": state, "disabled": _disabled_json(off),
                "since": hs.since if hs else None, "last_check": hs.last_check if hs else None,
                "consec_fail": hs.consec_fail if hs else 0, "consec_ok": hs.consec_ok if hs else 0,
                "last": _result_json(hs.last if hs else None),
                "last_bad": _result_json(hs.last_bad if hs else None),
            })
        ack = ctl.state.acks.get(f"{g}:{s}")
        services.append({
            "group": g, "service": s, "description": st.spec.description, "status": st.status,
            "passive": st.spec.passive, "interval": st.spec.interval,
            "acked": st.acked, "ack": None if ack is None or st.acked is None else
            {"comment": ack.comment, "time": ack.time, "by": ack.by},
            "disabled": _disabled_json(ctl.state.is_disabled("service", f"{g}:{s}", now)),
            "last_check": st.last_check, "last_success": st.last_success, "last_failure": st.last_failure,
            "first_failure": st.first_failure, "failing": st.failing_hosts,
            "summary": st.last_summary, "detail": st.last_detail, "hosts": hosts,
        })
    groups = {g: {"hosts": hs, "disabled": _disabled_json(ctl.state.is_disabled("watch", g, now))}
              for g, hs in cfg.hostgroups.items()}
    return {"version": __version__, "time": now, "started": ctl.started_at, "ready": d.readiness.ready,
            "config": cfg.file, "counts": ctl.counts(), "status_line": ctl.status_line(),
            "groups": groups, "services": services, "disabled": disabled_json(d), "ipvs": ipvs_json(d),
            "vrrp": ctl.vrrp.json()}


def disabled_json(d: "Daemon") -> dict[str, dict[str, Any]]:
    return {k: {n: _disabled_json(x) for n, x in v.items()} for k, v in d.control.state.disabled.items()}


def ipvs_json(d: "Daemon") -> dict[str, Any] | None:
    o = d.lvs
    if o is None:
        return None
    rows = []
    for skey in sorted(set(o.last_wanted) | set(o.last_actual), key=str):
        svc, want = o.last_wanted.get(skey, (None, {}))
        asvc, have = o.last_actual.get(skey, (None, {}))
        dests = []
        for dkey in sorted(set(want) | set(have), key=str):
            w, a = want.get(dkey), have.get(dkey)
            x = w or a
            assert x is not None
            dests.append({"real_server": rs_label(x), "forwarding": x.forwarding,
                          "wanted_weight": w.weight if w else None, "actual_weight": a.weight if a else None,
                          "counters": a.stats._asdict() if a and a.stats is not None else None})
        sv = svc or asvc
        rows.append({"virtual_service": vs_label(skey), "scheduler": sv.scheduler if sv else None,
                     "owned": skey in o.owned, "real_servers": dests})
    return {"dry_run": o.dry_run, "services": rows, "errors": o.last_errors,
            "wanted": format_ipvsadm(o.last_wanted).splitlines(),
            "actual": format_ipvsadm(o.last_actual).splitlines(),
            "quorum": dict(o.quorum), "healthy_weight": dict(o.healthy)}


def open_outages(d: "Daemon") -> list[dict[str, Any]]:
    now = time.time()
    out = []
    for (g, s), st in d.states.items():
        if st.status == "fail" and st.first_failure:
            out.append({"group": g, "service": s, "host": None, "start": st.first_failure, "end": None,
                        "duration_s": round(now - st.first_failure, 3), "summary": st.last_summary})
        for h, hs in st.hosts.items():
            if hs.up is False:
                out.append({"group": g, "service": s, "host": h, "start": hs.since, "end": None,
                            "duration_s": round(now - hs.since, 3),
                            "summary": hs.last_bad.summary if hs.last_bad else ""})
    return out


# -- handlers --------------------------------------------------------------------------------

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class _ProtocolLog:
    """aiohttp's request-handler logger: a malformed request (a NUL in a header...) is
    one `api.bad_request` line in pymon's log, not a traceback on stderr."""

    def __init__(self, log: Any) -> None:
        self.log = log

    def _one_line(self, msg: Any, *args: Any, exc_info: Any = None, **_: Any) -> None:
        exc = exc_info if isinstance(exc_info, BaseException) else None
        error = " ".join(str(exc).split()) if exc is not None else ""
        text = (str(msg) % args) if args else str(msg)
        self.log.warning("api.bad_request", message=text[:200], error=f"{type(exc).__name__}: {error}"[:300]
                         if exc is not None else "")

    exception = error = warning = _one_line

    def debug(self, *args: Any, **kw: Any) -> None:
        pass

    info = debug


class Api:
    def __init__(self, d: "Daemon", token: str):
        self.d = d
        self.token = token
        self.runners: list[web.AppRunner] = []
        self.socket_path: Path | None = None

    # -- auth ------------------------------------------------------------------------

    def _ok(self, given: str | None) -> bool:
        return bool(given) and hmac.compare_digest(given.encode(), self.token.encode())  # type: ignore[union-attr]

    def middleware(self, tcp: bool) -> Any:
        @web.middleware
        async def auth(request: web.Request, handler: Handler) -> web.StreamResponse:
            if request.path == "/health" or (tcp and request.path == "/login"):
                return await handler(request)
            header = request.headers.get("Authorization", "")
            bearer = header[7:].strip() if header[:7].lower() == "bearer " else None
            if self._ok(bearer):
                return await handler(request)
            if tcp and self._ok(request.cookies.get(COOKIE)):
                if request.method not in ("GET", "HEAD") and request.headers.get(CSRF_HEADER) != "1":
                    return _err(403, f"a cookie-authenticated change needs the {CSRF_HEADER}: 1 header")
                return await handler(request)
            if tcp and request.path == "/" and request.method == "GET":
                raise web.HTTPSeeOther("/login")
            return web.json_response({"error": "missing or wrong token (Authorization: Bearer TOKEN)"},
                                     status=401, headers={"WWW-Authenticate": 'Bearer realm="pymon"'})
        return auth

    def app(self, tcp: bool) -> web.Application:
        app = web.Application(middlewares=[self.middleware(tcp)], client_max_size=1024 * 1024)
        r = app.router
        r.add_get("/health", self.health)
        r.add_get("/status", self.status)
        r.add_get("/history", self.history)
        r.add_get("/downtime", self.downtime)
        r.add_get("/disabled", self.disabled)
        r.add_post("/disable/host/{host}", self.disable)
        r.add_post("/disable/service/{group}/{service}", self.disable)
        r.add_post("/disable/watch/{group}", self.disable)
        r.add_post("/enable/host/{host}", self.enable)
        r.add_post("/enable/service/{group}/{service}", self.enable)
        r.add_post("/enable/watch/{group}", self.enable)
        r.add_post("/ack/{group}/{service}", self.ack)
        r.add_post("/test/{group}/{service}", self.test_now)
        r.add_post("/trap/{group}/{service}", self.trap)
        r.add_post("/reload", self.reload)
        r.add_get("/metrics", self.metrics)
        r.add_get("/openapi.json", self.openapi)
        vrrp.routes(r, self)  # GET /vrrp, POST /vrrp/{instance}: keepalived's notify hook
        if tcp:
            r.add_get("/", self.page)
            r.add_get("/login", self.login)
            r.add_post("/login", self.login)
        return app

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        cfg, log = self.d.cfg, self.d.log
        assert cfg is not None and cfg.control_socket is not None
        path = cfg.control_socket
        try:
            sock = _unix_socket(path)
            runner = web.AppRunner(self.app(tcp=False), access_log=None, handle_signals=False,
                                   logger=_ProtocolLog(log))
            await runner.setup()
            self.runners.append(runner)
            await web.SockSite(runner, sock).start()
            self.socket_path = path
            log.info("api.listening", socket=str(path), mode=oct(SOCKET_MODE))
        except OSError as e:
            log.error("api.failed", socket=str(path), error=str(e), action="running without the control socket")
        if cfg.control_port:
            try:
                runner = web.AppRunner(self.app(tcp=True), access_log=None, handle_signals=False,
                                       logger=_ProtocolLog(log))
                await runner.setup()
                self.runners.append(runner)
                await web.TCPSite(runner, "127.0.0.1", cfg.control_port).start()
                log.info("api.listening", address=f"127.0.0.1:{cfg.control_port}", page=True)
            except OSError as e:
                log.error("api.failed", address=f"127.0.0.1:{cfg.control_port}", error=str(e),
                          action="running without the TCP listener")

    async def stop(self) -> None:
        for r in self.runners:
            await r.cleanup()
        self.runners.clear()
        if self.socket_path is not None:
            try:
                self.socket_path.unlink()
            except OSError:
                pass

    # -- endpoints ------------------------------------------------------------------------------

    async def health(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "ready": self.d.readiness.ready})

    async def status(self, request: web.Request) -> web.Response:
        return web.json_response(status_json(self.d))

    async def history(self, request: web.Request) -> web.Response:
        n = _limit(request)
        return web.json_response({"history": self.d.control.state.history[-n:]})

    async def downtime(self, request: web.Request) -> web.Response:
        n = _limit(request)
        return web.json_response({"downtime": self.d.control.state.downtime[-n:], "open": open_outages(self.d)})

    async def disabled(self, request: web.Request) -> web.Response:
        return web.json_response(disabled_json(self.d))

    @staticmethod
    def _target(request: web.Request) -> tuple[str, str]:
        kind = request.path.strip("/").split("/")[1]
        m = request.match_info
        name = m["host"] if kind == "host" else f"{m['group']}:{m['service']}" if kind == "service" else m["group"]
        return kind, name

    async def disable(self, request: web.Request) -> web.Response:
        kind, name = self._target(request)
        body = await _body(request)
        try:
            for_s = parse_duration(body["for"]) if body.get("for") not in (None, "", 0) else None
        except ValueError as e:
            return _err(400, str(e))
        try:
            dis = await self.d.control.disable(kind, name, str(body.get("reason", "")), for_s,  # type: ignore[arg-type]
                                               _peer(request))
        except KeyError as e:
            return _err(404, str(e.args[0]))
        return web.json_response({"kind": kind, "name": name, "disabled": _disabled_json(dis)})

    async def enable(self, request: web.Request) -> web.Response:
        kind, name = self._target(request)
        if not self.d.control.exists(kind, name):  # type: ignore[arg-type]
            return _err(404, f"no such {kind} {name!r}")
        was = await self.d.control.enable(kind, name, _peer(request))  # type: ignore[arg-type]
        return web.json_response({"kind": kind, "name": name, "was_disabled": was})

    def _service(self, request: web.Request) -> tuple[str, str]:
        key = (request.match_info["group"], request.match_info["service"])
        if key not in self.d.states:
            raise web.HTTPNotFound(text=f'{{"error": "no such service {key[0]}:{key[1]}"}}',
                                   content_type="application/json")
        return key

    async def ack(self, request: web.Request) -> web.Response:
        key = self._service(request)
        body = await _body(request)
        comment = str(body.get("comment", "")).strip()
        if not comment:
            return _err(400, "an ack needs a comment")
        try:
            await self.d.control.ack(key, comment, _peer(request))
        except ValueError as e:
            return _err(409, str(e))
        return web.json_response({"group": key[0], "service": key[1], "acked": comment})

    async def test_now(self, request: web.Request) -> web.Response:
        key = self._service(request)
        try:
            await self.d.control.test_now(key)
        except TimeoutError:
            return _err(504, "the check did not finish in time")
        svc = next((s for s in status_json(self.d)["services"] if (s["group"], s["service"]) == key), None)
        if svc is None:
            return _err(404, f"{key[0]}:{key[1]} was removed by a reload while it was being tested")
        return web.json_response(svc)

    async def trap(self, request: web.Request) -> web.Response:
        key = self._service(request)
        body = await _body(request)
        status = str(body.get("status", "")).lower()
        if status not in ("ok", "fail"):
            return _err(400, 'status must be "ok" or "fail"')
        hosts = body.get("hosts") or None
        if hosts is not None and (not isinstance(hosts, list) or not all(isinstance(h, str) for h in hosts)):
            return _err(400, "hosts must be a list of host names")
        self.d.control.trap(key, status == "ok", str(body.get("summary", "")), str(body.get("detail", "")), hosts)
        st = self.d.states[key]
        return web.json_response({"group": key[0], "service": key[1], "status": st.status,
                                  "failing": st.failing_hosts})

    async def reload(self, request: web.Request) -> web.Response:
        ok = await self.d.control.reload()
        if not ok:
            return web.json_response({"ok": False, "error": "config invalid: the old one keeps running "
                                      "(the problems are in the log as config.invalid)"}, status=422)
        return web.json_response({"ok": True})

    async def metrics(self, request: web.Request) -> web.Response:
        if self.d.control.metrics is None:
            return _err(503, "metrics need the prometheus-client package")
        return web.Response(body=self.d.control.metrics.render(), headers={"Content-Type": CONTENT_TYPE})

    async def openapi(self, request: web.Request) -> web.Response:
        return web.json_response(OPENAPI)

    async def page(self, request: web.Request) -> web.Response:
        html = resources.files("pymon.ops").joinpath("web/status.html").read_text()
        return web.Response(text=html, content_type="text/html",
                            headers={"Cache-Control": "no-store",
                                     "Content-Security-Policy": "default-src 'self'; style-src 'self' 'unsafe-inline'; "
                                     "script-src 'self' 'unsafe-inline'; frame-ancestors 'none'"})

    async def login(self, request: web.Request) -> web.StreamResponse:
        given = request.query.get("token")
        if request.method == "POST":
            given = str((await _form(request)).get("token", ""))
        if given is not None and self._ok(given.strip()):
            resp = web.HTTPSeeOther("/")
            resp.set_cookie(COOKIE, given.strip(), httponly=True, samesite="Strict", path="/",
                            max_age=30 * 86400)
            raise resp
        bad = "<p class=bad>wrong token</p>" if given is not None else ""
        return web.Response(content_type="text/html", status=401 if given is not None else 200, text=f"""<!doctype html>
<html><head><meta charset=utf-8><title>pymon login</title>
<style>body{{font:15px system-ui,sans-serif;margin:3em}}.bad{{color:#b00}}</style></head>
<body><h1>pymon</h1>{bad}<form method=post action=/login>
<label>Token (<code>pymon web-url</code> prints a login link; the token is in the state dir's
<code>token</code> file) <input name=token type=password autofocus size=50></label>
<button>Log in</button></form></body></html>""")


def _limit(request: web.Request) -> int:
    try:
        return max(1, min(int(request.query.get("limit", "100")), 100000))
    except ValueError:
        return 100


def _unix_socket(path: Path) -> socket.socket:
    """Bound, mode 0660, not yet listening: no one can connect before the mode is set."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        if stat.S_ISSOCK(os.lstat(path).st_mode):
            os.unlink(path)  # left by a daemon that died
    except FileNotFoundError:
        pass
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(str(path))
        os.chmod(path, SOCKET_MODE)
    except OSError:
        sock.close()
        raise
    return sock


async def start(d: "Daemon") -> Api | None:
    cfg = d.cfg
    assert cfg is not None and cfg.token_file is not None
    api = Api(d, load_token(cfg.token_file, d.log))
    await api.start()
    return api


# -- OpenAPI -----------------------------------------------------------------------------------


def _op(summary: str, *, body: dict[str, Any] | None = None, params: list[str] = (),  # type: ignore[assignment]
        ok: str = "application/json", query: list[dict[str, Any]] | None = None,
        extra: dict[str, str] | None = None) -> dict[str, Any]:
    op: dict[str, Any] = {"summary": summary, "responses": {
        "200": {"description": "OK", "content": {ok: {"schema": {"type": "object"} if ok.endswith("json")
                                                     else {"type": "string"}}}},
        "401": {"description": "missing or wrong token"}, **{k: {"description": v} for k, v in (extra or {}).items()}}}
    ps = [{"name": p, "in": "path", "required": True, "schema": {"type": "string"}} for p in params]
    if query:
        ps += query
    if ps:
        op["parameters"] = ps
    if body is not None:
        op["requestBody"] = {"required": False, "content": {"application/json": {"schema": body}}}
    return op


_DISABLE = {"type": "object", "properties": {
    "for": {"oneOf": [{"type": "number"}, {"type": "string"}], "description": "duration (3600, 1h, 30m); none: until enabled"},
    "reason": {"type": "string"}}}
_LIMIT = [{"name": "limit", "in": "query", "schema": {"type": "integer", "default": 100}}]
_404 = {"404": "no such host, service or watch"}

OPENAPI: dict[str, Any] = {
    "openapi": "3.0.3",
    "info": {"title": "pymon control API", "version": __version__,
             "description": "Over the unix socket (default <statedir>/pymon.sock) or 127.0.0.1:control_port. "
                            "Every call but /health needs `Authorization: Bearer TOKEN` (the token file)."},
    "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
    "security": [{"bearer": []}],
    "paths": {
        "/health": {"get": dict(_op("liveness and readiness; no token needed"), security=[])},
        "/status": {"get": _op("groups, services, hosts, last results, disabled, IPVS wanted and actual")},
        "/history": {"get": _op("alert history, oldest first", query=_LIMIT)},
        "/downtime": {"get": _op("finished outages (start, end, duration) and open ones", query=_LIMIT)},
        "/disabled": {"get": _op("disabled hosts, services and watches")},
        "/disable/host/{host}": {"post": _op("stop checking a host everywhere; drained from IPVS", body=_DISABLE,
                                             params=["host"], extra=_404)},
        "/disable/service/{group}/{service}": {"post": _op("suppress a service's alerts (still checked)",
                                                           body=_DISABLE, params=["group", "service"], extra=_404)},
        "/disable/watch/{group}": {"post": _op("suppress the alerts of every service of a hostgroup",
                                               body=_DISABLE, params=["group"], extra=_404)},
        "/enable/host/{host}": {"post": _op("re-enable a host", params=["host"], extra=_404)},
        "/enable/service/{group}/{service}": {"post": _op("re-enable a service", params=["group", "service"],
                                                          extra=_404)},
        "/enable/watch/{group}": {"post": _op("re-enable a watch", params=["group"], extra=_404)},
        "/ack/{group}/{service}": {"post": _op(
            "acknowledge a failing service: no more failure alerts until it recovers",
            body={"type": "object", "required": ["comment"], "properties": {"comment": {"type": "string"}}},
            params=["group", "service"], extra={**_404, "409": "the service is not failing"})},
        "/test/{group}/{service}": {"post": _op("run the check now; returns the service's status after it",
                                                params=["group", "service"], extra=_404)},
        "/trap/{group}/{service}": {"post": _op(
            "a passive result pushed by an external agent (traptimeout makes silence a failure)",
            body={"type": "object", "required": ["status"], "properties": {
                "status": {"enum": ["ok", "fail"]}, "summary": {"type": "string"}, "detail": {"type": "string"},
                "hosts": {"type": "array", "items": {"type": "string"},
                          "description": "failing hosts (default: those named in summary, else all)"}}},
            params=["group", "service"], extra=_404)},
        "/reload": {"post": _op("reload the config (as SIGHUP)", extra={"422": "config invalid; old one kept"})},
        "/metrics": {"get": _op("Prometheus metrics", ok="text/plain")},
        "/openapi.json": {"get": _op("this document")},
        **vrrp.OPENAPI_PATHS,
        "/": {"get": _op("status page (TCP listener only; cookie from /login)", ok="text/html")},
        "/login": {"get": _op("set the page's cookie from ?token= and redirect to / (no token: a form)",
                              ok="text/html", query=[{"name": "token", "in": "query", "schema": {"type": "string"}}]),
                   "post": _op("the form's post: token=TOKEN; sets the cookie, redirects to /", ok="text/html")},
    },
}
