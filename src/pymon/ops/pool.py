"""The live pool: the operator's real-server overrides (ipvs/overrides.py), persisted in
`<statedir>/pool.json`, and their API routes.

The daemon keeps the config as read (`base`) here and runs `config()` — the base with the
overrides applied — through its one reload path (app.py), so an added server's host is
checked and the IPVS owner reconciles exactly as after an edited file. Each change is
logged (`pool.change`) with who asked: the unix socket peer's user, or the web peer.
"""

from __future__ import annotations

import asyncio
import json
import threading
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Awaitable, Callable

from pymon.ipvs import overrides as ov
from pymon.ipvs.table import DestKey, ServiceKey
from pymon.model.config import Config, split_hostport
from pymon.ops.persist import Store

if TYPE_CHECKING:
    from aiohttp import web

FILE = "pool.json"


def read(statedir: Any) -> dict[ov.Key, ov.PoolOverride]:
    """The saved overrides; raises ValueError (with the file) when the file is unreadable."""
    path = statedir / FILE
    try:
        data = json.loads(path.read_text())
        items = [ov.PoolOverride.from_json(d) for d in data["overrides"]]
    except FileNotFoundError:
        return {}
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{path}: unreadable ({type(e).__name__}: {e})") from None
    return {(o.vs, o.address): o for o in items}


def with_overrides(cfg: Config, overrides: dict[ov.Key, ov.PoolOverride]) -> Config:
    """The config as the daemon runs it: the overrides applied."""
    vss, groups = ov.effective(cfg.virtual_services, cfg.hostgroups, overrides)
    return cfg if not overrides else replace(cfg, virtual_services=vss, hostgroups=groups)


class LivePool:
    def __init__(self, log: Any, apply: Callable[[], Awaitable[None]]):
        """`apply`: the daemon's way to run `config()` (its reload path, under its lock)."""
        self.log = log
        self.apply = apply
        self.base: Config | None = None
        self.overrides: dict[ov.Key, ov.PoolOverride] = {}
        self.store: Store | None = None
        self.lock = asyncio.Lock()  # one change at a time: each validates against the last
        self.writing = threading.Lock()  # a change saves from a thread, a reload from the loop: one file

    def loaded(self, cfg: Config) -> Config:
        """At start: the saved overrides, settled against this config; the config to run."""
        self.store = Store(cfg.statedir, self.log, FILE)
        try:
            self.overrides = read(cfg.statedir)
        except ValueError as e:
            self.log.warning("pool.unreadable", error=str(e), action="starting without overrides")
            self.overrides = {}
        if self.overrides:
            self.log.info("pool.restored", overrides=len(self.overrides))
        return self.reloaded(cfg)

    def reloaded(self, cfg: Config) -> Config:
        """A (re)loaded config: drop the overrides it now decides (ipvs/overrides.py's
        precedence), log and save that; the config to run."""
        self.base = cfg
        kept, dropped = ov.settle(self.overrides, cfg.virtual_services)
        for o, why in dropped:
            self.log.warning("pool.override_dropped", virtual_service=o.vs, real_server=o.address,
                             override=o.describe(), reason=why)
        if dropped:
            self.overrides = kept
            self._save()
        return self.config()

    def config(self) -> Config:
        assert self.base is not None
        return with_overrides(self.base, self.overrides)

    async def change(self, action: str, vs: Any, address: Any, by: str, at: float, **kw: Any) -> ov.PoolOverride | None:
        """Validate and apply one request; PoolError (nothing changed) when it cannot be."""
        async with self.lock:
            assert self.base is not None
            new_set, held = ov.change(self.overrides, self.base.virtual_services, action, vs, address,
                                      by=by, at=at, **kw)
            self.overrides = new_set
            self.log.info("pool.change", action=action, virtual_service=vs, real_server=address, by=by,
                          **{k: v for k, v in kw.items() if v not in (None, "")},
                          override=held.describe() if held else "none (as the config says)")
            await asyncio.to_thread(self._save)
            await self.apply()
            return held

    async def clear(self, vs: str | None, address: str | None, by: str) -> list[ov.PoolOverride]:
        async with self.lock:
            assert self.base is not None
            if address is not None:
                if vs is None:
                    raise ov.PoolError("real_server: give the virtual_service too")
                address = ov.real_address(ov.find_vs(self.base.virtual_services, vs), address)
            if vs is not None:
                vs = ov.find_vs(self.base.virtual_services, vs).name
            self.overrides, gone = ov.clear(self.overrides, vs, address)
            for o in gone:
                self.log.info("pool.cleared", virtual_service=o.vs, real_server=o.address, override=o.describe(), by=by)
            if gone:
                await asyncio.to_thread(self._save)
                await self.apply()
            return gone

    def _save(self) -> None:
        if self.store is not None:
            data = json.dumps({"overrides": [o.to_json() for o in self.overrides.values()]}, indent=1).encode()
            with self.writing:
                self.store.save([data])

    def marks(self) -> dict[tuple[ServiceKey, DestKey], str]:
        """(service key, (address, port)) → the override's short mark, for `pymon status`."""
        if self.base is None:
            return {}
        keys = {vs.name: vs.service.key for vs in self.base.virtual_services}
        out = {}
        for o in self.overrides.values():
            if o.vs in keys:
                addr, port = split_hostport(o.address, None)
                out[(keys[o.vs], (addr, port))] = o.describe()
        return out

    def json(self) -> list[dict[str, Any]]:
        return [{**o.to_json(), "mark": o.describe()} for o in sorted(self.overrides.values(),
                                                                    key=lambda o: (o.vs, o.address))]


# -- API (api.py adds these routes) ----------------------------------------------------------


def routes(router: "web.UrlDispatcher", api: Any) -> None:
    import time

    from aiohttp import web

    from pymon.ops.web_request import body as _body, err as _err, peer as _peer

    async def get(request: web.Request) -> web.Response:
        return web.json_response({"overrides": api.d.pool.json()})

    async def change(request: web.Request) -> web.Response:
        b = await _body(request)
        extra = {k: b.get(k) for k in ("weight", "host", "forwarding")}
        try:
            held = await api.d.pool.change(b.get("action"), b.get("virtual_service"), b.get("real_server"),
                                           _peer(request), time.time(), **extra)
        except ov.PoolError as e:
            return _err(400, str(e))
        return web.json_response({"override": None if held is None else {**held.to_json(), "mark": held.describe()}})

    async def clear(request: web.Request) -> web.Response:
        b = await _body(request)
        vs, rs = b.get("virtual_service"), b.get("real_server")
        if not isinstance(vs, (str, type(None))) or not isinstance(rs, (str, type(None))):
            return _err(400, "virtual_service and real_server must be strings")
        try:
            gone = await api.d.pool.clear(vs or None, rs or None, _peer(request))
        except ov.PoolError as e:
            return _err(400, str(e))
        return web.json_response({"cleared": [o.to_json() for o in gone]})

    router.add_get("/pool", get)
    router.add_post("/pool/change", change)
    router.add_post("/pool/clear", clear)


_RESP = {"200": {"description": "OK"}, "401": {"description": "missing or wrong token"}}
OPENAPI_PATHS: dict[str, Any] = {
    "/pool": {"get": {"summary": "the live pool overrides (real servers added, removed, reweighted, disabled)",
                      "responses": _RESP}},
    "/pool/change": {"post": {
        "summary": "add, remove, reweight, disable or enable a real server without a reload (kept across "
                   "restarts; a reload that changes the same server in the config wins)",
        "requestBody": {"required": True, "content": {"application/json": {"schema": {
            "type": "object", "required": ["action", "virtual_service", "real_server"], "properties": {
                "action": {"enum": list(ov.ACTIONS)},
                "virtual_service": {"type": "string", "description": "its name (or `TCP VIP:PORT`)"},
                "real_server": {"type": "string", "description": "ADDRESS[:PORT]"},
                "weight": {"type": "integer", "minimum": 0, "maximum": ov.MAX_WEIGHT,
                           "description": "add (default 1) and weight"},
                "host": {"type": "string", "description": "add: its name in the watched hostgroup "
                                                          "(default: the address)"},
                "forwarding": {"enum": list(ov.FORWARDING), "description": "add: default the service's"}}}}}},
        "responses": {**_RESP, "400": {"description": "bad request: one-line reason, nothing changed"}}}},
    "/pool/clear": {"post": {
        "summary": "drop overrides: of one real server, of a virtual service, or all (empty body)",
        "requestBody": {"required": False, "content": {"application/json": {"schema": {
            "type": "object", "properties": {"virtual_service": {"type": "string"},
                                             "real_server": {"type": "string"}}}}}},
        "responses": {**_RESP, "400": {"description": "no such virtual service or bad address"}}}},
}
