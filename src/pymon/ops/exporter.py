"""The metrics listener (`globals.metrics_listen`): `/metrics` as Prometheus exporters
serve it, for a Prometheus server on another machine.

The control API's token guards changes to the director; a scrape changes nothing, and
Prometheus scrapes exporters with no token, so this listener asks for none by default:
bind it to a private (management) address. The operator can add what exporters offer,
in their format (`globals.web_config`, model/webconfig.py): TLS, and basic auth with
bcrypt hashes. It serves nothing but `/metrics` and a landing page: no status, no
control, whatever the web config says.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import ctypes
import ctypes.util
import hashlib
import hmac
import ssl
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Protocol

from aiohttp import web

from .api import CONTENT_TYPE

if TYPE_CHECKING:
    from pymon.model.config import Config
    from pymon.model.webconfig import WebConfig

LANDING = b"""<!doctype html><html><head><meta charset=utf-8><title>pymon exporter</title></head>
<body><h1>pymon</h1><p><a href="metrics">Metrics</a></p></body></html>"""
_CACHE_MAX = 64  # verified (user, password) pairs kept: a bcrypt costs tens of ms, a scrape comes every 15 s


class Rendered(Protocol):
    def render(self) -> bytes: ...


class Bcrypt:
    """bcrypt verification through libcrypt's crypt(3) (libxcrypt, in every current
    glibc distribution, implements $2a$/$2b$/$2y$): no extra package for a few hashes.
    One worker thread: crypt() returns a static buffer, and a hash at cost 10 takes
    ~40 ms, too long for the event loop."""

    def __init__(self) -> None:
        name = ctypes.util.find_library("crypt")
        self.crypt: Any = None
        if name:
            fn = ctypes.CDLL(name).crypt
            fn.restype, fn.argtypes = ctypes.c_char_p, [ctypes.c_char_p, ctypes.c_char_p]
            probe = b"$2b$04$" + b"." * 22
            if (fn(b"x", probe) or b"").startswith(b"$2b$04$"):
                self.crypt = fn
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="pymon-bcrypt")
        self.verified: dict[tuple[str, str, bytes], None] = {}

    async def check(self, user: str, password: str, hashed: str) -> bool:
        key = (user, hashed, hashlib.sha256(password.encode()).digest())
        if key in self.verified:
            return True
        out = await asyncio.get_running_loop().run_in_executor(self.pool, self.crypt, password.encode(),
                                                               hashed.encode())
        ok = out is not None and hmac.compare_digest(out, hashed.encode())
        if ok:
            if len(self.verified) >= _CACHE_MAX:
                self.verified.clear()
            self.verified[key] = None
        return ok


class Exporter:
    def __init__(self, metrics: Rendered, log: Any, listen: tuple[str, int], web_cfg: "WebConfig | None"):
        self.metrics, self.log, self.listen, self.web = metrics, log, listen, web_cfg
        self.runner: web.AppRunner | None = None
        self.ssl: ssl.SSLContext | None = None
        self.bcrypt: Bcrypt | None = None

    @property
    def address(self) -> str:
        host, port = self.listen
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    async def start(self) -> bool:
        where = {"address": self.address, "web_config": self.web.file if self.web else None}
        try:
            self._load()
        except (OSError, ssl.SSLError, RuntimeError) as e:
            self.log.error("metrics.failed", **where, error=str(e), action="no metrics listener")
            return False
        app = web.Application(middlewares=[self._auth])
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/", self._landing)
        self.runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self.runner.setup()
        try:
            await web.TCPSite(self.runner, self.listen[0], self.listen[1], ssl_context=self.ssl).start()
        except OSError as e:
            await self.stop()
            self.log.error("metrics.failed", **where, error=str(e), action="no metrics listener")
            return False
        self.log.info("metrics.listening", **where, tls=self.ssl is not None,
                      basic_auth=bool(self.web and self.web.users))
        return True

    def _load(self) -> None:
        """The TLS context and the bcrypt verifier the web config asks for."""
        web_cfg = self.web
        if web_cfg is None:
            return
        if web_cfg.tls:
            ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ctx.minimum_version = ssl.TLSVersion.TLSv1_2
            ctx.load_cert_chain(web_cfg.cert_file, web_cfg.key_file)  # type: ignore[arg-type]
            self.ssl = ctx
        if web_cfg.users:
            self.bcrypt = Bcrypt()
            if self.bcrypt.crypt is None:  # fail closed: never serve without the asked-for auth
                raise RuntimeError("basic_auth_users needs bcrypt in libcrypt (libxcrypt), which this system lacks")

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None
        if self.bcrypt is not None:
            self.bcrypt.pool.shutdown(wait=False)

    @web.middleware
    async def _auth(self, request: web.Request, handler: Any) -> web.StreamResponse:
        users = self.web.users if self.web else {}
        if not users:
            return await handler(request)
        assert self.bcrypt is not None
        header = request.headers.get("Authorization", "")
        if header[:6].lower() == "basic ":
            try:
                user, _, password = base64.b64decode(header[6:].strip(), validate=True).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError):
                user, password = "", ""
            hashed = users.get(user)
            if hashed is not None and await self.bcrypt.check(user, password, hashed):
                return await handler(request)
        return web.Response(status=401, text="Unauthorized\n", headers={"WWW-Authenticate": 'Basic realm="pymon"'})

    async def _metrics(self, request: web.Request) -> web.Response:
        return web.Response(body=self.metrics.render(), headers={"Content-Type": CONTENT_TYPE})

    async def _landing(self, request: web.Request) -> web.Response:
        return web.Response(body=LANDING, content_type="text/html")


async def follow(current: Exporter | None, cfg: "Config", metrics: Rendered | None, log: Any) -> Exporter | None:
    """The listener the config asks for, at start and on every reload: started, stopped,
    or started again (a reload also picks up a renewed certificate or changed users)."""
    if current is not None:
        await current.stop()
    if cfg.metrics_listen is None:
        return None
    if metrics is None:
        log.error("metrics.failed", address=cfg.metrics_listen[0], error="prometheus-client is not installed",
                  action="no metrics listener")
        return None
    ex = Exporter(metrics, log, cfg.metrics_listen, cfg.web_config)
    return ex if await ex.start() else None
