"""`pymon demo`: the example config against three HTTP backends on loopback, one of
which goes down and comes back on a timer, so alerts and upalerts show in the log
with no root, no IPVS and no servers of the user's."""

from __future__ import annotations

import asyncio
from pathlib import Path

from aiohttp import web

from . import logs
from pymon.app import Daemon
from pymon.loader import load_all

BACKENDS = ("127.0.0.11", "127.0.0.12", "127.0.0.13")
PORT = 18080
FLAP = BACKENDS[2]
DOWN_S, UP_S = 20.0, 25.0


def default_config() -> str:
    for p in (Path("etc/pymon.yaml"), Path(__file__).resolve().parents[2] / "etc" / "pymon.yaml"):
        if p.is_file():
            return str(p)
    raise SystemExit("pymon demo: etc/pymon.yaml not found; pass -c FILE")


async def _backend(host: str) -> web.AppRunner:
    async def hello(request: web.Request) -> web.Response:
        return web.Response(text=f"hello from {host}\n")

    app = web.Application()
    app.router.add_get("/", hello)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, PORT).start()
    return runner


async def _flap(log: object) -> None:
    while True:
        await asyncio.sleep(UP_S)
        runner = _RUNNERS.pop(FLAP)
        await runner.cleanup()
        log.warning("demo.backend_down", host=FLAP, port=PORT, for_s=DOWN_S)  # type: ignore[attr-defined]
        await asyncio.sleep(DOWN_S)
        _RUNNERS[FLAP] = await _backend(FLAP)
        log.warning("demo.backend_up", host=FLAP, port=PORT)  # type: ignore[attr-defined]


_RUNNERS: dict[str, web.AppRunner] = {}


async def run_demo(config: str | None, log_format: str, log_level: str) -> int:
    path = config or default_config()
    cfg, plugins = load_all(path)
    log = logs.setup(log_format, log_level)
    for h in BACKENDS:
        _RUNNERS[h] = await _backend(h)
    log.info("demo.started", backends=[f"{h}:{PORT}" for h in BACKENDS], flapping=FLAP,
             note=f"{FLAP} goes down for {DOWN_S:g}s every {UP_S + DOWN_S:g}s; Ctrl-C stops")
    flapper = asyncio.create_task(_flap(log))
    try:
        return await Daemon(path, log, cfg, plugins).run()
    finally:
        flapper.cancel()
        for r in _RUNNERS.values():
            await r.cleanup()
