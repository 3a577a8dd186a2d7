"""The control API (aiohttp): status, history, downtime, disable/enable, ack, test-now,
reload, traps, Prometheus metrics, an OpenAPI description, and the status page.

Listeners:
- a unix socket, always (`globals.control_socket`, default `<statedir>/pymon.sock`),
  mode 0660 (owner and group; set before listen(), so there is no window);
- 127.0.0.1:`globals.control_port`, only when configured. The status page (`/`) is
  served only here: browsers cannot reach a unix socket.

Who may call: on the unix socket, a peer the kernel vouches for (SO_PEERCRED and
SO_PEERGROUPS, recorded at connect()): root, the daemon's own uid, and members of the
daemon's group (primary or supplementary) need no token, so `pymon status` works for
an operator in the `pymon` group without reading the 0600 token file. Anyone else, and
every call over TCP, but `GET /health` needs the token (`globals.token_file`, default
`<statedir>/token`, created 0600 with a random token when missing) as
`Authorization: Bearer TOKEN`. The page gets it as a cookie: open
`/login?token=TOKEN` (or paste it into the form at `/login`) once; the cookie is
HttpOnly and SameSite=Strict, and a call that changes something with only the
cookie must also carry `X-Pymon-Request: 1` (which a cross-site form cannot send).
"""

from __future__ import annotations

import asyncio
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
from . import pool, vrrp
from pymon.model.config import parse_duration
from pymon.ipvs.owner import fingerprint
from pymon.ipvs.table import Dest, format_ipvsadm
from pymon.ops.control import Refused
from pymon.ops.web_request import PeerCreds, body as _body, err as _err, form as _form, peer as _peer, peer_creds
from pymon.routing.owner import OPENAPI_PATHS as ROUTES_OPENAPI, canonical  # BGP announcements (routing/)

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
    from pymon.ops.pool import LivePool
    from pymon.ops.readiness import Readiness
    from pymon.ops.timeline import Timeline


class Daemon(Protocol):
    """What the API reads of the running daemon (the wiring passes it in)."""

    cfg: "Config | None"
    log: Any
    states: "dict[tuple[str, str], ServiceState]"
    lvs: "LvsOwner | None"
    control: "Control"
    readiness: "Readiness"
    timeline: "Timeline"
    pool: "LivePool"

COOKIE = "pymon_token"
CSRF_HEADER = "X-Pymon-Request"
SOCKET_MODE = 0o660


MIN_TOKEN_CHARS = 16  # a generated token has 43


def load_token(path: Path, log: Any) -> str:
    """The token file's content; a new random token (file mode 0600) when it is missing.
    A token file that others can read, or a token too short to resist guessing, is
    refused loudly: the API then has a token only this process knows (unusable) until
    the file is fixed and the daemon restarted."""
    try:
        tok = path.read_text().strip()
        mode = path.stat().st_mode
        if tok:
            why = ""
            if mode & stat.S_IROTH:
                why = f"the token file is readable by every user (mode {stat.filemode(mode)}; chmod o-r)"
            elif len(tok) < MIN_TOKEN_CHARS:
                why = (f"the token is {len(tok)} characters, fewer than {MIN_TOKEN_CHARS} "
                       "(delete the file: pymon writes a random one)")
            if not why:
                return tok
            log.error("api.token_refused", file=str(path), error=why,
                      action="the API answers 401 to every token until the file is fixed and pymon restarted")
            return secrets.token_urlsafe(32)
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
            state = _host_state(off, hs)
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
            "drains": {n: drain_json(x) for n, x in ctl.state.drains.items()},
            "vrrp": ctl.vrrp.json(),
            "routes": d.routes.json() if getattr(d, "routes", None) else None,
            "pool_overrides": d.pool.json(), "self_check": selfcheck_json(d)}


def _host_state(off: Any, hs: Any) -> str:
    return "disabled" if off else "unknown" if hs is None or hs.up is None else "up" if hs.up else "down"


def selfcheck_json(d: "Daemon") -> dict[str, Any] | None:
    """The director's self-check (ops/director_canaries.py); None when it is off."""
    sc = getattr(d, "selfcheck", None)
    return None if sc is None else sc.json()


def disabled_json(d: "Daemon") -> dict[str, dict[str, Any]]:
    return {k: {n: _disabled_json(x) for n, x in v.items()} for k, v in d.control.state.disabled.items()}


def drain_json(x: Any) -> dict[str, Any]:
    return {"host": x.host, "group": x.group, "since": x.since, "deadline": x.deadline, "force": x.force,
            "reason": x.reason, "by": x.by}


def ipvs_json(d: "Daemon") -> dict[str, Any] | None:
    o = d.lvs
    if o is None:
        return None
    rows = []
    specs = {vs.service.key: vs for vs in o.vss}
    now = time.time()
    marks = d.pool.marks()  # live pool overrides (pool.py)
    for skey in sorted(set(o.last_wanted) | set(o.last_actual), key=str):
        svc, want = o.last_wanted.get(skey, (None, {}))
        asvc, have = o.last_actual.get(skey, (None, {}))
        spec = specs.get(skey)
        res = o.results.get(skey)
        decisions = res.decisions if res is not None else {}
        # the configured real servers too: one that is down and not quiescent is in neither table
        conf = {rs.dest.key: rs for rs in spec.reals} if spec else {}
        st = d.states.get(spec.watch) if spec else None
        dests = []
        for dkey in sorted(set(want) | set(have) | set(conf), key=str):
            w, a, dec = want.get(dkey), have.get(dkey), decisions.get(dkey)
            x = w or a or conf[dkey].dest
            host = conf[dkey].host if dkey in conf else None
            health = None if host is None or st is None else _host_state(
                d.control.state.is_disabled("host", host, now), st.hosts.get(host))
            row: dict[str, Any] = {
                "real_server": rs_label(x), "forwarding": x.forwarding,
                "wanted_weight": w.weight if w else None, "actual_weight": a.weight if a else None,
                "active_conns": a.active_conns if a else None, "host": host, "health": health,
                "override": marks.get((skey, dkey)),
                "counters": a.stats._asdict() if a and a.stats is not None else None}
            if dec is not None:  # the pool policy's word: pooled, pooled_down, unknown, draining, quiesced, removed
                row.update(state=dec.state, state_since=dec.since, cause=dec.cause or None,
                           drain_deadline=dec.drain_deadline)
            dests.append(row)
        sv = svc or asvc
        pool = None
        if res is not None:
            c = res.counts
            pool = {"pooled": c.pooled, "pooled_down": c.pooled_down, "unknown": c.unknown,
                    "draining": c.draining, "out": c.out, "need": c.need, "healthy_weight": c.healthy_weight,
                    "refusals": o.refusals.get(skey, 0)}
        rows.append({"virtual_service": vs_label(skey), "scheduler": sv.scheduler if sv else None,
                     "owned": skey in o.owned, "name": spec.name if spec else None,
                     "watch": f"{spec.watch[0]}:{spec.watch[1]}" if spec else None,
                     "quorum": o.quorum.get(spec.name) if spec else None,
                     "pooled_weight": sum(x.weight for x in want.values()), "real_servers": dests, "pool": pool,
                     "fingerprint": f"{fingerprint(asvc, have):08x}" if asvc is not None else None})
    # where actual_weight comes from: the kernel's table as last read, pymon's in-memory
    # twin in a dry run, or nowhere trustworthy while the kernel cannot be read
    source = "simulation" if o.dry_run else "kernel" if o.read_error is None else None
    return {"dry_run": o.dry_run, "frozen": o.frozen(), "actual_source": source, "services": rows,
            "errors": o.last_errors,
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


# Bounds on the listeners, so that a local user without the token cannot exhaust the
# daemon's file descriptors (every probe needs one) or memory by holding connections.
MAX_CONNECTIONS = 64  # per listener; more are closed at once (the API has a handful of users)
IDLE_S = 10.0  # a connection with no complete request for this long is closed (idle or slow headers)
ACCEPT_LOG_EVERY_S = 60.0  # one `api.accept_failed` / `api.too_many_connections` line per this, with a count


class _Limit:
    """The protocol factory of one listener, counting its connections: past `limit`,
    a new connection is aborted before aiohttp sees it, and one log line says so per
    ACCEPT_LOG_EVERY_S (with how many were refused since the last)."""

    def __init__(self, factory: Callable[[], Any], limit: int, log: Any, where: str):
        self.factory, self.limit, self.log, self.where = factory, limit, log, where
        self.open = 0
        self.refused = 0
        self.logged_at = -ACCEPT_LOG_EVERY_S

    def __call__(self) -> asyncio.BaseProtocol:
        return _Counted(self)

    def _refused(self) -> None:
        self.refused += 1
        now = time.monotonic()
        if now - self.logged_at >= ACCEPT_LOG_EVERY_S:
            self.logged_at = now
            self.log.warning("api.too_many_connections", listener=self.where, limit=self.limit,
                             refused=self.refused, action="closing new connections until some end")
            self.refused = 0


class _Counted(asyncio.Protocol):
    """aiohttp's request handler behind a count; a refused connection never reaches it."""

    def __init__(self, limit: _Limit):
        self.lim = limit
        self.inner: Any = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        lim = self.lim
        if lim.open >= lim.limit:
            lim._refused()
            transport.abort()  # type: ignore[attr-defined]
            return
        lim.open += 1
        self.inner = lim.factory()
        self.inner.connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.inner is not None:
            self.lim.open -= 1
            inner, self.inner = self.inner, None
            inner.connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.inner is not None:
            self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received() if self.inner is not None else None

    def pause_writing(self) -> None:
        if self.inner is not None:
            self.inner.pause_writing()

    def resume_writing(self) -> None:
        if self.inner is not None:
            self.inner.resume_writing()


class _Site(web.SockSite):
    """A SockSite whose connections go through a `_Limit`."""

    def __init__(self, runner: web.AppRunner, sock: socket.socket, log: Any, where: str):
        super().__init__(runner, sock)
        self.guard = (log, where)

    async def start(self) -> None:
        await web.BaseSite.start(self)
        server = self._runner.server
        assert server is not None
        self._server = await asyncio.get_running_loop().create_server(
            _Limit(server, MAX_CONNECTIONS, *self.guard), sock=self._sock, backlog=self._backlog)


def accept_error_handler(log: Any) -> Callable[[asyncio.AbstractEventLoop, dict[str, Any]], None]:
    """The loop's exception handler: a failed accept (EMFILE, ENFILE, ENOBUFS) is one JSON
    line per ACCEPT_LOG_EVERY_S with a count, not a traceback per attempt; anything else
    goes to asyncio's default handler."""
    state = {"at": -ACCEPT_LOG_EVERY_S, "count": 0}

    def handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        msg = str(context.get("message", ""))
        if "accept" not in msg:
            loop.default_exception_handler(context)
            return
        state["count"] += 1
        now = time.monotonic()
        if now - state["at"] >= ACCEPT_LOG_EVERY_S:
            exc = context.get("exception")
            log.error("api.accept_failed", error=f"{type(exc).__name__}: {exc}" if exc else msg[:200],
                      failures=state["count"], action="asyncio retries the accept in 1 s")
            state["at"], state["count"] = now, 0
    return handler


MAX_SESSIONS = 64  # page logins kept; the oldest goes first
SESSION_S = 30 * 86400
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "[::1]")


def _host_name(host: str) -> str:
    """The Host header without its port, lower case ("[::1]:8080" -> "[::1]")."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[:host.find("]") + 1] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


class Api:
    def __init__(self, d: "Daemon", token: str):
        self.d = d
        self.token = token
        # the page's cookie: a random session value per login, kept here only (the token
        # itself in a cookie would sit in every browser profile and backup)
        self.sessions: dict[str, float] = {}
        self.runners: list[web.AppRunner] = []
        self.socket_path: Path | None = None
        self.uid, self.gid = os.geteuid(), os.getegid()  # the socket file's owner and group

    # -- auth ------------------------------------------------------------------------

    def trusted(self, creds: PeerCreds | None) -> bool:
        """A unix peer that may call without the token: the same people the socket's mode
        (0660, owner and group) lets connect, checked again so a socket made wider by hand
        (chmod 0666, a group-writable directory) does not widen who may change the table."""
        return creds is not None and (creds.uid in (0, self.uid) or creds.gid == self.gid
                                      or self.gid in creds.groups)

    def _ok(self, given: str | None) -> bool:
        return bool(given) and hmac.compare_digest(given.encode(), self.token.encode())  # type: ignore[union-attr]

    def _applied(self, body: dict[str, Any]) -> web.Response:
        """A change's answer: 200 once it is in the state file; 507 when it is in force in
        memory but could not be written (it is lost at a restart), saying so."""
        if self.d.control.unsaved:
            store = self.d.control.store
            return web.json_response({**body, "persisted": False, "error": "applied in memory, but the state "
                                      f"file {store.path if store else ''} could not be written (see the log's "
                                      "state.write_failed): the change is lost at a restart"}, status=507)
        return web.json_response(body)

    def _session(self, value: str | None) -> bool:
        if not value:
            return False
        for known, at in self.sessions.items():
            if hmac.compare_digest(known.encode(), value.encode()):
                return time.monotonic() - at < SESSION_S
        return False

    def _new_session(self) -> str:
        value = secrets.token_urlsafe(32)
        while len(self.sessions) >= MAX_SESSIONS:
            del self.sessions[next(iter(self.sessions))]
        self.sessions[value] = time.monotonic()
        return value

    def middleware(self, tcp: bool) -> Any:
        @web.middleware
        async def auth(request: web.Request, handler: Handler) -> web.StreamResponse:
            if tcp:  # a page on another site whose name resolves to 127.0.0.1 (DNS rebinding) sends its own name
                cfg = self.d.cfg
                host = _host_name(request.headers.get("Host", ""))
                if host not in LOOPBACK_HOSTS and (cfg is None or host not in cfg.control_hosts):
                    return _err(421, f"Host {host[:100]!r} is not this daemon's (localhost, 127.0.0.1, [::1] "
                                     "or globals.control_hosts)")
            if request.path == "/health" or (tcp and request.path == "/login"):
                return await handler(request)
            if not tcp and self.trusted(peer_creds(request)):
                return await handler(request)
            header = request.headers.get("Authorization", "")
            bearer = header[7:].strip() if header[:7].lower() == "bearer " else None
            if self._ok(bearer):
                return await handler(request)
            if tcp and self._session(request.cookies.get(COOKIE)):
                if request.method not in ("GET", "HEAD") and request.headers.get(CSRF_HEADER) != "1":
                    return _err(403, f"a cookie-authenticated change needs the {CSRF_HEADER}: 1 header")
                return await handler(request)
            if tcp and request.path == "/" and request.method == "GET":
                raise web.HTTPSeeOther("/login")
            why = "" if tcp else " (or connect as root, the daemon's user or a member of its group)"
            return web.json_response({"error": f"missing or wrong token (Authorization: Bearer TOKEN){why}"},
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
        r.add_post("/drain/{host}", self.drain)  # the pool policy's operator drain (control.py)
        r.add_post("/drain/{group}/{host}", self.drain)
        r.add_post("/undrain/{host}", self.undrain)
        r.add_post("/undrain/{group}/{host}", self.undrain)
        r.add_post("/ack/{group}/{service}", self.ack)
        r.add_post("/test/{group}/{service}", self.test_now)
        r.add_post("/trap/{group}/{service}", self.trap)
        r.add_post("/reload", self.reload)
        r.add_get("/metrics", self.metrics)
        r.add_get("/timeline", self.timeline)
        r.add_get("/openapi.json", self.openapi)
        vrrp.routes(r, self)  # GET /vrrp, POST /vrrp/{instance}: keepalived's notify hook
        r.add_get("/routes", self.routes)  # BGP announcements (routing/)
        r.add_post("/disable/route/{vip}", self.route_disable)
        r.add_post("/enable/route/{vip}", self.route_enable)
        pool.routes(r, self)  # GET /pool, POST /pool/change, /pool/clear: live real-server overrides
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
                                   logger=_ProtocolLog(log), keepalive_timeout=IDLE_S)
            await runner.setup()
            self.runners.append(runner)
            await _Site(runner, sock, log, str(path)).start()
            self.socket_path = path
            log.info("api.listening", socket=str(path), mode=oct(SOCKET_MODE))
        except OSError as e:
            log.error("api.failed", socket=str(path), error=str(e), action="running without the control socket")
        if cfg.control_port:
            try:
                tsock = socket.create_server(("127.0.0.1", cfg.control_port), reuse_port=False)
                runner = web.AppRunner(self.app(tcp=True), access_log=None, handle_signals=False,
                                       logger=_ProtocolLog(log), keepalive_timeout=IDLE_S)
                await runner.setup()
                self.runners.append(runner)
                await _Site(runner, tsock, log, f"127.0.0.1:{cfg.control_port}").start()
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
        resp = web.json_response(status_json(self.d))
        # gzip when asked (browsers do): a farm's status is ~0.5 MiB of repetitive JSON
        # that the page polls every 2 s (bench/RESULTS.md "Status page")
        resp.enable_compression()
        return resp

    async def history(self, request: web.Request) -> web.Response:
        n = _limit(request)
        return web.json_response({"history": self.d.control.state.history[-n:]})

    async def downtime(self, request: web.Request) -> web.Response:
        n = _limit(request)
        return web.json_response({"downtime": self.d.control.state.downtime[-n:], "open": open_outages(self.d)})

    async def disabled(self, request: web.Request) -> web.Response:
        return web.json_response(disabled_json(self.d))

    async def timeline(self, request: web.Request) -> web.Response:
        return web.json_response({"time": time.time(), "pooled_weight": self.d.timeline.json()})

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
        return self._applied({"kind": kind, "name": name, "disabled": _disabled_json(dis)})

    async def enable(self, request: web.Request) -> web.Response:
        kind, name = self._target(request)
        if not self.d.control.exists(kind, name):  # type: ignore[arg-type]
            return _err(404, f"no such {kind} {name!r}")
        was = await self.d.control.enable(kind, name, _peer(request))  # type: ignore[arg-type]
        return self._applied({"kind": kind, "name": name, "was_disabled": was})

    # -- BGP announcements (routing/) ----------------------------------------------------

    def _routes(self) -> Any:
        if getattr(self.d, "routes", None) is None:
            raise web.HTTPNotFound(text='{"error": "no routing: section in the config"}',
                                   content_type="application/json")
        return self.d.routes

    async def routes(self, request: web.Request) -> web.Response:
        return web.json_response(self._routes().json())

    async def route_disable(self, request: web.Request) -> web.Response:
        body = await _body(request)
        try:
            vip = canonical(request.match_info["vip"])
            await self._routes().disable(vip, str(body.get("reason", "")), _peer(request))
        except KeyError as e:
            return _err(404, str(e.args[0]))
        return web.json_response({"vip": vip, **self._routes().json()["vips"][vip]})

    async def route_enable(self, request: web.Request) -> web.Response:
        try:
            vip = canonical(request.match_info["vip"])
        except KeyError as e:
            return _err(404, str(e.args[0]))
        if vip not in self._routes().ann:
            return _err(404, f"no virtual service has VIP {vip}")
        was = await self._routes().enable(vip, _peer(request))
        return web.json_response({"vip": vip, "was_disabled": was, **self._routes().json()["vips"][vip]})

    async def drain(self, request: web.Request) -> web.Response:
        host, group = request.match_info["host"], request.match_info.get("group")
        body = await _body(request)
        force = body.get("force", False)
        if not isinstance(force, bool):
            return _err(400, "force must be true or false")
        try:
            timeout = parse_duration(body["timeout"]) if body.get("timeout") not in (None, "", 0) else None
        except ValueError as e:
            return _err(400, f"timeout: {e}")
        try:
            dr = await self.d.control.drain(host, group, timeout, force, str(body.get("reason", "")),
                                            _peer(request))
        except KeyError as e:
            return _err(404, str(e.args[0]))
        except Refused as e:
            return web.json_response({"error": "refused by min_pooled (force to override): " + e.args[0],
                                      "refused": e.args[0].splitlines()}, status=409)
        return web.json_response({"drain": drain_json(dr)})

    async def undrain(self, request: web.Request) -> web.Response:
        host, group = request.match_info["host"], request.match_info.get("group")
        was = await self.d.control.undrain(host, group, _peer(request))
        return web.json_response({"name": host if group is None else f"{group}/{host}", "was_drained": was})

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
        return self._applied({"group": key[0], "service": key[1], "acked": comment})

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
        resp = web.Response(text=html, content_type="text/html",
                            headers={"Cache-Control": "no-store",
                                     "Content-Security-Policy": "default-src 'self'; style-src 'self' 'unsafe-inline'; "
                                     "script-src 'self' 'unsafe-inline'; frame-ancestors 'none'"})
        resp.enable_compression()
        return resp

    async def login(self, request: web.Request) -> web.StreamResponse:
        given = request.query.get("token")
        if request.method == "POST":
            given = str((await _form(request)).get("token", ""))
        if given is not None and self._ok(given.strip()):
            resp = web.HTTPSeeOther("/")
            resp.set_cookie(COOKIE, self._new_session(), httponly=True, samesite="Strict", path="/",
                            max_age=SESSION_S)
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
_DRAIN = {"type": "object", "properties": {
    "timeout": {"oneOf": [{"type": "number"}, {"type": "string"}],
                "description": "remove it then even with active connections (300, 5m); none: only when idle"},
    "force": {"type": "boolean", "description": "go through even below min_pooled"},
    "reason": {"type": "string"}}}
_DRAIN_ERRORS = {"400": "bad timeout or force", "404": "no virtual service has this real server",
                 "409": "refused by min_pooled (force to override)"}
_LIMIT = [{"name": "limit", "in": "query", "schema": {"type": "integer", "default": 100}}]
_404 = {"404": "no such host, service or watch"}

OPENAPI: dict[str, Any] = {
    "openapi": "3.0.3",
    "info": {"title": "pymon control API", "version": __version__,
             "description": "Over the unix socket (default <statedir>/pymon.sock) or 127.0.0.1:control_port. "
                            "On the socket, root, the daemon's user and members of its group need no token; "
                            "every other call but /health needs `Authorization: Bearer TOKEN` (the token file)."},
    "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
    "security": [{"bearer": []}],
    "paths": {
        "/health": {"get": dict(_op("liveness and readiness; no token needed"), security=[])},
        "/status": {"get": _op("groups, services, hosts, last results, disabled, IPVS wanted and actual, "
                               "the director self-check")},
        "/history": {"get": _op("alert history, oldest first", query=_LIMIT)},
        "/downtime": {"get": _op("finished outages (start, end, duration) and open ones", query=_LIMIT)},
        "/disabled": {"get": _op("disabled hosts, services and watches")},
        "/timeline": {"get": _op("pooled weight (sum of wanted weights) per virtual service over time: "
                                 "[time, weight] at each change, the last 120, since the daemon started")},
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
        "/drain/{host}": {"post": _op(
            "drain a real server in every virtual service using it: weight 0 now, removed when it has no "
            "active connections or at the timeout; refused (409) by min_pooled unless forced", body=_DRAIN,
            params=["host"], extra=_DRAIN_ERRORS)},
        "/drain/{group}/{host}": {"post": _op(
            "drain a real server in the virtual services watching hostgroup GROUP only", body=_DRAIN,
            params=["group", "host"], extra=_DRAIN_ERRORS)},
        "/undrain/{host}": {"post": _op("end a drain: the real server may come back into the pool",
                                        params=["host"])},
        "/undrain/{group}/{host}": {"post": _op("end a drain of GROUP/HOST", params=["group", "host"])},
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
        **ROUTES_OPENAPI,  # BGP announcements (routing/)
        **pool.OPENAPI_PATHS,
        "/": {"get": _op("status page (TCP listener only; cookie from /login)", ok="text/html")},
        "/login": {"get": _op("set the page's cookie from ?token= and redirect to / (no token: a form)",
                              ok="text/html", query=[{"name": "token", "in": "query", "schema": {"type": "string"}}]),
                   "post": _op("the form's post: token=TOKEN; sets the cookie, redirects to /", ok="text/html")},
    },
}
