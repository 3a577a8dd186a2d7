"""The `pymon` command line."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from dataclasses import replace
from typing import Any

from . import __version__, logs
from pymon.model.config import SCHEMA, ConfigError


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="pymon", description="Health-monitor daemon for LVS directors.")
    p.add_argument("--version", action="version", version=f"pymon {__version__}")
    sub = p.add_subparsers(dest="cmd", required=True)

    def with_config(name: str, help: str) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help)
        sp.add_argument("-c", "--config", required=True, help="pymon YAML config")
        return sp

    from pymon.ops import client  # the control API's commands: status, disable, enable, ack, ... (client.py)

    _COMMANDS.update(client.add_commands(sub))
    run_p = with_config("run", "run the daemon")
    run_p.add_argument("--dry-run", action="store_true", help="never change IPVS; log what would change")
    ip = with_config("ipvs", "run one round of checks, then print the wanted and the actual IPVS table")
    ip.add_argument("--json", action="store_true")
    ip.add_argument("--stats", action="store_true",
                    help="print the kernel's table with its counters instead (as `ipvsadm -Ln --stats --exact`)")
    for sp in (run_p, sub.add_parser("demo", help="run the example in etc/")):
        sp.add_argument("--log-format", choices=("json", "console"), default="json")
        sp.add_argument("--log-level", choices=tuple(logs.LEVELS), default="info")
    with_config("check-config", "validate a config and exit (status 2 when invalid)")
    tp = with_config("test", "run one check now and print the result (exit 0 ok, 1 failed)")
    tp.add_argument("group")
    tp.add_argument("service")
    sub.add_parser("schema", help="print the config's JSON Schema")
    im = sub.add_parser("import-mon", help="convert a mon.cf to pymon YAML on stdout (see moncf.py)")
    im.add_argument("file", help="mon.cf (run through m4 when named *.m4, as mon does)")
    im.add_argument("--check", action="store_true", help="list what cannot be carried over; exit 1 if anything")
    im.add_argument("--m4", action="store_true", help="run m4 on it first (mon's -M)")
    im.add_argument("--legacy-monitors", action="store_true", help="keep http.monitor etc. as mon's scripts")
    sub.choices["demo"].add_argument("-c", "--config", default=None, help="default: the bundled etc/pymon.yaml")
    a = p.parse_args(argv)
    try:
        return _COMMANDS[a.cmd](a)
    except ConfigError as e:
        for line in e.problems:
            print(line, file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _run(a: argparse.Namespace) -> int:
    from pymon.app import Daemon
    from pymon.loader import load_all

    cfg, plugins = load_all(a.config)
    log = logs.setup(a.log_format, a.log_level)
    return run_loop(Daemon(a.config, log, cfg, plugins, dry_run=a.dry_run).run())


def run_loop(coro: Any) -> Any:
    """asyncio.run; on uvloop with PYMON_LOOP=uvloop when it is installed (`pip install
    'pymon[fast]'`): far less start lag at thousands of checks a second (docs/performance.md).
    Opt-in: a hung legacy alert script is not handled as on asyncio yet
    (tests/integration/test_faults_daemon.py fails on uvloop)."""
    if os.environ.get("PYMON_LOOP", "asyncio") == "uvloop":
        try:
            import uvloop
        except ImportError:
            pass
        else:
            return uvloop.run(coro)
    return asyncio.run(coro)


def _check_config(a: argparse.Namespace) -> int:
    from pymon.loader import load_all

    cfg, _ = load_all(a.config)
    print(f"{a.config}: OK ({len(cfg.hostgroups)} hostgroups, {len(cfg.services)} services)")
    return 0


def _test(a: argparse.Namespace) -> int:
    from pymon.engine.checks import run_check
    from pymon.loader import load_all
    from pymon.engine.rules import ServiceState

    cfg, plugins = load_all(a.config)
    svc = cfg.services.get((a.group, a.service))
    if svc is None:
        print(f"{a.config}: no service {a.group}:{a.service} "
              f"(have: {', '.join(f'{g}:{s}' for g, s in cfg.services)})", file=sys.stderr)
        return 2
    st = ServiceState(svc)
    check = asyncio.run(run_check(cfg, plugins, svc, st))
    st.observe(time.time(), check.results, check.output, check.retval)
    for host, res in check.results.items():
        print(f"{host:<24} {'ok  ' if res.ok else 'FAIL'} {res.latency_s * 1000:8.1f} ms  {res.summary}")
    print(f"{a.group}:{a.service}: {'ok' if st.status == 'ok' else 'FAILED: ' + st.last_summary}")
    return 0 if st.status == "ok" else 1


def _ipvs(a: argparse.Namespace) -> int:
    from pymon.loader import load_all
    from pymon.ipvs.kernel import KernelIPVS
    from pymon.ipvs.table import IPVSError, format_ipvsadm
    from pymon.ipvs.owner import side_by_side, wanted_table

    if a.stats:
        return _ipvs_stats(a.json)
    cfg, plugins = load_all(a.config)

    async def main() -> tuple[str, str, list[str]]:
        from pymon.engine.checks import run_check
        from pymon.engine.rules import ServiceState

        watched = {vs.watch for vs in cfg.virtual_services}
        # one round decides: no fall/rise debounce for a one-shot view
        states = {k: ServiceState(replace(cfg.services[k], fall=1, rise=1)) for k in watched}
        checks = await asyncio.gather(*(run_check(cfg, plugins, st.spec, st) for st in states.values()))
        for st, check in zip(states.values(), checks):
            st.observe(time.time(), check.results, check.output, check.retval)
        kernel = KernelIPVS()
        try:
            actual = await kernel.read()
            note = []
        except IPVSError as e:
            actual, note = {}, [f"(kernel: {e})"]
        await kernel.close()

        def health(w: tuple[str, str], h: str) -> bool | None:
            hs = states[w].hosts.get(h)
            return hs.up if hs else None

        wanted, _ = wanted_table(cfg.virtual_services, health, actual)
        notes = [f"{g}:{s} {h}: {'up' if hs.up else 'DOWN ' + (hs.last.summary if hs.last else '')}"
                 for (g, s), st in states.items() for h, hs in st.hosts.items()]
        return format_ipvsadm(wanted), "\n".join(note) or format_ipvsadm(actual), notes

    wanted, actual, notes = asyncio.run(main())
    if a.json:
        print(json.dumps({"wanted": wanted.splitlines(), "actual": actual.splitlines(), "health": notes}))
    else:
        print(side_by_side(wanted, actual))
        print()
        print("\n".join(notes))
    return 0


def _ipvs_stats(as_json: bool) -> int:
    """The kernel's table and counters, one read; no checks run."""
    from pymon.ipvs.kernel import KernelIPVS
    from pymon.ipvs.table import IPVSError, format_ipvsadm

    async def read() -> Any:
        async with KernelIPVS() as kernel:
            return await kernel.read()

    try:
        table = asyncio.run(read())
    except IPVSError as e:
        print(f"pymon ipvs: {e}", file=sys.stderr)
        return 1
    if as_json:
        print(json.dumps({str(k): {"counters": svc.stats._asdict() if svc.stats else None,
                                   "real_servers": {f"{d.address}:{d.port}": d.stats._asdict() if d.stats else None
                                                    for d in dests.values()}}
                          for k, (svc, dests) in table.items()}))
    else:
        print(format_ipvsadm(table, stats=True), end="")
    return 0


def _schema(a: argparse.Namespace) -> int:
    print(json.dumps(SCHEMA, indent=2))
    return 0


def _demo(a: argparse.Namespace) -> int:
    from .demo import run_demo

    return asyncio.run(run_demo(a.config, a.log_format, a.log_level))


def _import_mon(a: argparse.Namespace) -> int:
    from pymon.mon.moncf import cli

    return cli(a)


_COMMANDS = {"import-mon": _import_mon, "run": _run, "ipvs": _ipvs, "check-config": _check_config, "test": _test, "schema": _schema, "demo": _demo}
