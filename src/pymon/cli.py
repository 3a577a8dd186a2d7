"""The `pymon` command line."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path
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
    sc = sub.add_parser("schema", help="print the config's JSON Schema")
    sc.add_argument("--markdown", action="store_true", help="print the config reference (docs/configuration.md) instead")
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
    """The daemon's loop: asyncio's, or uvloop's with PYMON_LOOP=uvloop when it is
    installed (`pip install 'pymon[fast]'`): less CPU and start lag at thousands of
    checks a second (docs/performance.md). Either way with a bounded shutdown."""
    loop = None
    if os.environ.get("PYMON_LOOP", "asyncio") == "uvloop":
        try:
            import uvloop
        except ImportError:
            pass
        else:
            loop = uvloop.new_event_loop()
    return _run_bounded(coro, loop or asyncio.new_event_loop())


SHUTDOWN_WAIT_S = 5.0  # tasks left at the end (a plugin that ignores cancellation) are waited for this long


def _run_bounded(coro: Any, loop: asyncio.AbstractEventLoop) -> Any:
    """asyncio.run on `loop`, except that the tasks still pending at the end are
    cancelled and waited for SHUTDOWN_WAIT_S, not forever: asyncio.run's own wait never
    ends for a task that swallows its cancellation, and SIGTERM would hang."""
    asyncio.set_event_loop(loop)
    try:
        return loop.run_until_complete(coro)
    finally:
        try:
            pending = asyncio.all_tasks(loop)
            for t in pending:
                t.cancel()
            if pending:
                _, left = loop.run_until_complete(asyncio.wait(pending, timeout=SHUTDOWN_WAIT_S))
                if left:
                    loop.set_exception_handler(lambda _loop, _ctx: None)  # their "destroyed but pending" notes
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.shutdown_default_executor())
        finally:
            asyncio.set_event_loop(None)
            loop.close()


def _check_config(a: argparse.Namespace) -> int:
    from pymon.loader import load_all

    cfg, _ = load_all(a.config)
    for w in cfg.warnings:
        print(f"warning: {w}", file=sys.stderr)
    print(f"{a.config}: OK ({len(cfg.hostgroups)} hostgroups, {len(cfg.services)} services)")
    if missing := _missing_dirs(a.config, cfg):
        # valid (a drop-in dir may come later, statedir is made by systemd's StateDirectory=),
        # but a wrong path is the usual cause of "my monitor script is not found"
        print(f"{a.config}: warning: configured directories do not exist: {', '.join(missing)}",
              file=sys.stderr)
    return 0


def _missing_dirs(path: str, cfg: Any) -> list[str]:
    """`KEY DIR` for each directory named in the file's globals that does not exist (the
    defaults are left out: an absent default drop-in dir just means no drop-ins)."""
    import yaml

    try:
        with open(path, encoding="utf-8") as f:
            raw = yaml.safe_load(f) or {}
    except (OSError, yaml.YAMLError):  # a mon.cf given directly: no globals of ours
        return []
    g = raw.get("globals") or {} if isinstance(raw, dict) else {}
    found = [(k, d) for k in ("mondir", "alertdir") if g.get(k) for d in getattr(cfg, k)]
    if g.get("statedir"):
        found.append(("statedir", cfg.statedir))
    return [f"{k} {d}" for k, d in found if not Path(d).is_dir()]


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
    from pymon.ipvs.owner import fingerprint, plan, side_by_side
    from pymon.ipvs.policy import Health
    from pymon.ipvs.overrides import settle
    from pymon.ops import pool

    if a.stats:
        return _ipvs_stats(a.json)
    cfg, plugins = load_all(a.config)
    try:  # the live pool overrides the daemon keeps (ops/pool.py), as the daemon applies them
        saved, _ = settle(pool.read(cfg.statedir), cfg.virtual_services)
        marks = [f"override: {o.vs} {o.address}: {o.describe()}" for o in saved.values()]
    except ValueError as e:
        saved, marks = {}, [f"(pool overrides: {e})"]
    cfg = pool.with_overrides(cfg, saved)

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

        now = time.time()
        health = {w: {h: Health(hs.up, hs.since, now if hs.up else None) for h, hs in st.hosts.items()}
                  for w, st in states.items()}
        # the policy as the daemon would apply it from this kernel table (adopted, no history)
        p = plan(cfg.virtual_services, health, actual, {}, now)
        notes = [f"{g}:{s} {h}: {'up' if hs.up else 'DOWN ' + (hs.last.summary if hs.last else '')}"
                 for (g, s), st in states.items() for h, hs in st.hosts.items()]
        for vs in cfg.virtual_services:
            c = p.results[vs.service.key].counts
            have = actual.get(vs.service.key)
            fp = f"{fingerprint(*have):08x}" if have else "-"
            notes.append(f"{vs.name}: pooled {c.pooled}, pooled_down {c.pooled_down}, need {c.need}; "
                         f"kernel fingerprint {fp}")
        return format_ipvsadm(p.table), "\n".join(note) or format_ipvsadm(actual), notes + marks

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
    if a.markdown:
        from pymon.model.schema_doc import render

        print(render(), end="")
        return 0
    print(json.dumps(SCHEMA, indent=2))
    return 0


def _demo(a: argparse.Namespace) -> int:
    from .demo import run_demo

    return asyncio.run(run_demo(a.config, a.log_format, a.log_level))


def _import_mon(a: argparse.Namespace) -> int:
    from pymon.mon.moncf import cli

    return cli(a)


_COMMANDS = {"import-mon": _import_mon, "run": _run, "ipvs": _ipvs, "check-config": _check_config, "test": _test, "schema": _schema, "demo": _demo}
