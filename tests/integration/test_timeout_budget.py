"""One timeout budget for every probe form: a monitor's `timeout` under a service's
shorter one is the check's budget, for plain HTTP (the lean callback path), HTTPS (the
awaited aiohttp path) and drop-in probes; a probe that ignores it is failed at the same
budget + grace whether it is awaited or a callback form."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from pymon.engine.checks import GUARD_GRACE_S, Check, Deadlines, start_check
from pymon.engine.rules import ServiceState
from pymon.engine.scheduler import Scheduler
from pymon.loader import load_all

BUDGET = 1.5  # the monitor's timeout; the service says 0.5

DROPIN = '''
import asyncio
from pymon.plugin import monitor


async def _forever(target, params):
    await asyncio.sleep(3600)


def _never(targets, params, done):
    return lambda: None  # starts nothing, never calls done


monitor("sleepy")(_forever)
monitor("silent", start=_never)(_forever)
'''


class Log:
    def __getattr__(self, name: str) -> object:
        return lambda *a, **kw: None


async def test_one_budget_for_every_form(tmp_path: Path) -> None:
    conns: list[asyncio.StreamWriter] = []

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conns.append(writer)  # accepts, never answers (not even a TLS handshake)

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    (tmp_path / "probes.py").write_text(DROPIN)
    cfg_file = tmp_path / "pymon.yaml"
    mon = f"timeout: {BUDGET}"
    cfg_file.write_text(
        f"globals: {{statedir: {tmp_path}, mondir: {tmp_path}, alertdir: {tmp_path}}}\n"
        "hostgroups: {lo: [127.0.0.1]}\n"
        "watch:\n  lo:\n"
        f"    plain: {{timeout: 0.5, monitor: {{name: http, port: {port}, {mon}}}}}\n"
        f"    tls: {{timeout: 0.5, monitor: {{name: http, scheme: https, port: {port}, {mon}}}}}\n"
        f"    sleepy: {{timeout: 0.5, monitor: {{name: sleepy, {mon}}}}}\n"
        f"    silent: {{timeout: 0.5, monitor: {{name: silent, {mon}}}}}\n")
    cfg, plugins = load_all(str(cfg_file))
    loop = asyncio.get_running_loop()
    sched, deadlines = Scheduler(0, Log()), Deadlines(loop)
    took: dict[str, float] = {}
    summaries: dict[str, str] = {}
    ended = {name: loop.create_future() for _, name in cfg.services}
    try:
        for (g, name), svc in cfg.services.items():
            assert svc.timeout == BUDGET and svc.probe_params["timeout"] == BUDGET

            def done(check: Check | BaseException, name: str = name, t0: float = time.monotonic()) -> None:
                assert isinstance(check, Check)
                took[name] = time.monotonic() - t0
                summaries[name] = check.results["127.0.0.1"].summary
                ended[name].set_result(None)

            start_check(cfg, plugins, svc, ServiceState(svc), done, sched.in_task, deadlines)
        await asyncio.wait_for(asyncio.gather(*ended.values()), BUDGET + GUARD_GRACE_S + 3)
    finally:
        deadlines.close()
        await sched.close()
        for w in conns:
            w.close()
        server.close()
    # probes that keep to the budget end at it, on either HTTP path
    for name in ("plain", "tls"):
        assert BUDGET - 0.05 <= took[name] < BUDGET + 0.5, (name, took)
        assert summaries[name].startswith(f"timeout after {BUDGET:g}s"), summaries
    # probes that ignore it are failed at budget + grace, awaited or callback form alike
    for name in ("sleepy", "silent"):
        assert BUDGET + GUARD_GRACE_S - 0.05 <= took[name] < BUDGET + GUARD_GRACE_S + 0.5, (name, took)
        assert summaries[name] == f"timeout after {BUDGET:g}s", summaries
    assert abs(took["sleepy"] - took["silent"]) < 0.3, took
