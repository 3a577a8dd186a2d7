"""`pymon demo`: the example config against HTTP backends on loopback, one of which
goes down and comes back on a timer, so alerts and upalerts show in the log with no
root, no IPVS and no servers of the user's.

The backends are the config's: the hosts of the first watch with an `http` monitor, on
that monitor's port (so `-c` with other addresses or ports just works).
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from pathlib import Path

from aiohttp import web

from . import bundled, logs
from pymon.app import Daemon
from pymon.loader import load_all
from pymon.model.config import Config

DOWN_S, UP_S = 20.0, 25.0


def default_config() -> str:
    """etc/pymon.yaml of the current directory (a checkout), else the bundled one.

    The bundled config's relative paths (../var, ../monitors, ../alerts) must not land
    in site-packages: it is copied with its drop-in dirs into a fresh directory.
    """
    if Path("etc/pymon.yaml").is_file():
        return "etc/pymon.yaml"
    src = bundled.find("etc", "pymon.yaml")
    if src is None:
        raise SystemExit("pymon demo: etc/pymon.yaml not found; pass -c FILE")
    if src.parents[1] != bundled.ROOTS[0]:
        return str(src)  # a source checkout run from elsewhere: its own tree is writable
    top = Path(tempfile.mkdtemp(prefix="pymon-demo-"))
    (top / "etc").mkdir()
    shutil.copy(src, top / "etc" / "pymon.yaml")
    for d in ("monitors", "alerts"):
        if (found := bundled.find(d)) is not None:
            shutil.copytree(found, top / d)
    return str(top / "etc" / "pymon.yaml")


def backends(cfg: Config) -> tuple[list[str], int]:
    for svc in cfg.services.values():
        if svc.monitor.name == "http":
            return list(cfg.hostgroups.get(svc.group, [])), int(svc.monitor.params.get("port", 80))
    raise SystemExit("pymon demo: the config has no watch with an http monitor to serve")


async def _backend(host: str, port: int) -> web.AppRunner:
    async def hello(request: web.Request) -> web.Response:
        return web.Response(text=f"hello from {host}\n")

    app = web.Application()
    app.router.add_get("/", hello)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
    except OSError as e:
        await runner.cleanup()
        raise SystemExit(f"pymon demo: cannot listen on {host}:{port} for a demo backend: "
                         f"{e.strerror or e} (another demo running? -c a config with other ports)") from None
    return runner


async def _flap(log: object, host: str, port: int) -> None:
    while True:
        await asyncio.sleep(UP_S)
        runner = _RUNNERS.pop(host)
        await runner.cleanup()
        log.warning("demo.backend_down", host=host, port=port, for_s=DOWN_S)  # type: ignore[attr-defined]
        await asyncio.sleep(DOWN_S)
        _RUNNERS[host] = await _backend(host, port)
        log.warning("demo.backend_up", host=host, port=port)  # type: ignore[attr-defined]


_RUNNERS: dict[str, web.AppRunner] = {}


async def run_demo(config: str | None, log_format: str, log_level: str) -> int:
    path = config or default_config()
    cfg, plugins = load_all(path)
    hosts, port = backends(cfg)
    log = logs.setup(log_format, log_level)
    try:
        for h in hosts:
            _RUNNERS[h] = await _backend(h, port)
    except SystemExit:
        for r in _RUNNERS.values():
            await r.cleanup()
        raise
    flap = hosts[-1]
    log.info("demo.started", config=path, backends=[f"{h}:{port}" for h in hosts], flapping=flap,
             note=f"{flap} goes down for {DOWN_S:g}s every {UP_S + DOWN_S:g}s; Ctrl-C stops")
    flapper = asyncio.create_task(_flap(log, flap, port))
    try:
        return await Daemon(path, log, cfg, plugins).run()
    finally:
        flapper.cancel()
        for r in _RUNNERS.values():
            await r.cleanup()
