"""An aiohttp server on loopback (plain or TLS) with the paths the http tests ask for,
and a free port."""

from __future__ import annotations

import asyncio
import socket
import ssl

from aiohttp import web


class Server:
    def __init__(self) -> None:
        self.peers: list[tuple[str, int]] = []
        self.sni: list[str | None] = []
        self.hosts: list[str] = []
        self.runner: web.AppRunner | None = None
        self.port = 0

    def app(self) -> web.Application:
        app = web.Application()

        async def root(req: web.Request) -> web.Response:
            self.peers.append(req.transport.get_extra_info("peername")[:2])  # type: ignore[union-attr]
            self.hosts.append(req.host)
            return web.Response(text="all ok here\n", headers={"X-App": "pymon-test/1.2"})

        async def status(req: web.Request) -> web.Response:
            return web.Response(status=int(req.match_info["code"]), text="down for maintenance")

        async def slow(req: web.Request) -> web.Response:
            await asyncio.sleep(10)
            return web.Response(text="late")

        async def big(req: web.Request) -> web.StreamResponse:
            resp = web.StreamResponse()
            await resp.prepare(req)
            chunk = b"x" * 65536
            try:
                for _ in range(800):  # 50 MiB, then the marker the probe must never see
                    await resp.write(chunk)
                await resp.write(b"END")
            except (ConnectionResetError, ConnectionError):
                pass
            return resp

        async def redirect(req: web.Request) -> web.Response:
            raise web.HTTPFound("/")

        async def vhost(req: web.Request) -> web.Response:
            return web.Response(text=req.host)

        app.router.add_get("/", root)
        app.router.add_get("/status/{code}", status)
        app.router.add_get("/slow", slow)
        app.router.add_get("/big", big)
        app.router.add_get("/redirect", redirect)
        app.router.add_get("/vhost", vhost)
        return app

    async def start(self, hosts: list[str] | None = None, ssl_context: ssl.SSLContext | None = None,
                    port: int = 0) -> "Server":
        if ssl_context is not None:
            ssl_context.sni_callback = lambda sock, name, ctx: self.sni.append(name)  # type: ignore[assignment,misc]
        self.runner = web.AppRunner(self.app(), access_log=None, shutdown_timeout=0.2)
        await self.runner.setup()
        for h in hosts or ["127.0.0.1"]:
            site = web.TCPSite(self.runner, h, port or self.port, ssl_context=ssl_context)
            await site.start()
            if not self.port:
                self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def stop(self) -> None:
        assert self.runner is not None
        await self.runner.cleanup()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
