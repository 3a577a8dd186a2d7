#!/usr/bin/env python3
"""Instructions per check of the daemon's plain-HTTP path, counted by callgrind.

    python3 bench/instructions.py [-n 50] [--duration 20] [--src LABEL=DIR,...] [--port 8093]

CPU time per check moves with the machine's load (other jobs, caches, preemptions);
the instructions the daemon executes per check do not. The daemon runs as `pymon run`
builds it (`Daemon`, JSON logs at info level to /dev/null, metrics on), under
`valgrind --tool=callgrind`, against N real servers served by nginx as in
bench/throughput.py (one watch per real server, `interval 1s`, `randstart 1s`), with
a 10 s timeout so that no check fails for valgrind's slowness (~50x). After
`--warmup` seconds the child zeroes callgrind's counts (a client request through a
small C helper built with `cc`: `valgrind/callgrind.h`, no-ops outside valgrind),
and dumps them `--duration` seconds later; checks are counted from the daemon's own
metrics (per-host results by outcome), so the harness adds nothing per check. The
figure is the instructions of the window (every thread: the loop, the watchdog)
divided by the host checks done in it: the checks' own path plus the loop's passes,
timers and periodic work at this rate. A run with a failed check is reported as such.
`--src` runs the daemon from several source trees in turn against the same nginx.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import throughput  # bench/throughput.py (scripts run from bench/): nginx and the daemon's config

ROOT = Path(__file__).resolve().parent.parent
_MARKS_C = """#include <valgrind/callgrind.h>
void zero(void) { CALLGRIND_ZERO_STATS; }
void dump(void) { CALLGRIND_DUMP_STATS_AT("window"); }
"""


def build_marks(tmp: Path) -> Path:
    src, lib = tmp / "marks.c", tmp / "marks.so"
    src.write_text(_MARKS_C)
    subprocess.run(["cc", "-O1", "-shared", "-fPIC", "-o", str(lib), str(src)], check=True)
    return lib


def host_checks(d: object) -> tuple[int, int]:
    """(host checks done, failed) since start, from the daemon's metrics counts."""
    from pymon.ops.metrics import _RESULTS

    done = failed = 0
    for c in d.control.metrics.services.values():  # type: ignore[attr-defined]
        done += sum(c.counts[_RESULTS:])
        failed += sum(c.counts[_RESULTS + 1:])
    return done, failed


async def child_main(cfg: str, src: str, marks: str, out: str, warmup: float, duration: float) -> None:
    sys.path.insert(0, src)
    from pymon import logs
    from pymon.app import Daemon

    lib = ctypes.CDLL(marks)
    log = logs.setup("json", "info", stream=open(os.devnull, "w"))
    d = Daemon(cfg, log)
    task = asyncio.get_running_loop().create_task(d.run())
    while not task.done() and (d.runner is None or not d.runner.sched.entries):
        await asyncio.sleep(0.1)
    if task.done():
        task.result()
    await asyncio.sleep(warmup)
    done0, failed0 = host_checks(d)
    lib.zero()
    await asyncio.sleep(duration)
    lib.dump()
    done1, failed1 = host_checks(d)
    d.stopping.set()
    await asyncio.wait_for(task, 60)
    Path(out).write_text(json.dumps({"done": done1 - done0, "failed": failed1 - failed0}))


def run(tmp: Path, cfg: Path, marks: Path, label: str, src: str, a: argparse.Namespace) -> dict[str, float]:
    out = tmp / f"{label}.json"
    cg = Path(a.keep or tmp) / f"{label}.cg"
    subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={cg}", "--dump-instr=no", "--compress-strings=no",
                    sys.executable, __file__, "--child", str(cfg), src, str(marks), str(out),
                    str(a.warmup), str(a.duration)], check=True, stderr=subprocess.DEVNULL)
    dumps = [p for p in cg.parent.glob(f"{label}.cg*") if "window" in p.read_text(errors="replace")[:4000]]
    text = dumps[0].read_text(errors="replace")
    m = re.search(r"^(?:summary|totals): (\d+)", text, re.M)
    assert m, f"no totals in {dumps[0]}"
    got = json.loads(out.read_text())
    return {"instructions": int(m[1]), **got}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-n", type=int, default=50, help="real servers, one watch each (default 50)")
    ap.add_argument("--duration", type=float, default=20.0, help="counted seconds (default 20)")
    ap.add_argument("--warmup", type=float, default=5.0)
    ap.add_argument("--port", type=int, default=8093)
    ap.add_argument("--src", default=f"={ROOT / 'src'}", help="LABEL=DIR,...: source trees to run in turn")
    ap.add_argument("--keep", metavar="DIR", help="keep the callgrind files there (callgrind_annotate)")
    ap.add_argument("--child", nargs=6, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        cfg, src, marks, out, warmup, duration = a.child
        asyncio.run(child_main(cfg, src, marks, out, float(warmup), float(duration)))
        return 0
    throughput.PORT = a.port
    with tempfile.TemporaryDirectory(prefix="pymon-instr-") as t:
        tmp = Path(t)
        marks = build_marks(tmp)
        nginx = throughput.Nginx(tmp, a.n, 1)
        nginx.start()
        try:
            cfg = throughput.pymon_config(tmp, a.n, 1.0, 10.0, 1.0, 1, 0)
            for i, (label, src) in enumerate(x.partition("=")[::2] for x in a.src.split(",")):
                r = run(tmp, cfg, marks, label or f"tree{i}", str(Path(src).resolve()), a)
                per = r["instructions"] / max(r["done"], 1)
                print(f"{label or src}: {per:,.0f} instructions per host check ({r['instructions']:,} / "
                      f"{r['done']} checks, {r['failed']} failed)", flush=True)
        finally:
            nginx.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
