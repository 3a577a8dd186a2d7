#!/usr/bin/env python3
"""IPVS at scale: pymon's kernel backend at thousands of destinations vs ipvsadm, one qemu boot.

    python3 bench/ipvs_scale.py [--vips 200] [--reals 10] [--baseline COMMIT] [--write bench/RESULTS.md]

This host's kernel has no ip_vs, so the script boots one VM (tests/kernel/vm.py:
Debian's kernel under qemu TCG, 2 vCPUs) and runs itself inside it (`--inside`).
The table: `--vips` TCP services x `--reals` real servers (DR, wrr), every service
backed by the same real servers, as when one pool fronts many VIPs. Measured in
the same boot, each as a ratio to the C tool where there is one:

1. Full table at start: the owner's first reconcile on an empty kernel (read,
   diff, apply of every service and real server) vs `ipvsadm -R` of the same rules.
2. One dump: `KernelIPVS.read()` vs `ipvsadm -Ln` (both read every service and
   its real servers; ours also parses each one's counters).
3. A dead real server (behind every VIP): from the health change to the last of
   its entries changed, when it comes while a resync reads the table (the worst
   moment); the target is interval + timeout + 1 s, so the IPVS share is 1 s.
4. Resync: CPU of the whole process over a window with `resync: 10s` and no
   changes (percent of one core), the read's CPU at 1x, 2x and 4x the table
   (linear?), and the periods from the start of one resync to the next.
5. Where the time goes: cProfile of one read, and the same work with one op per
   sendmsg and (`--baseline`) with the pyroute2 backend of an earlier commit.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import importlib.util
import io
import json
import os
import pstats
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from results import write_section  # noqa: E402

SECTION = "## IPVS at scale"
MARK = "IPVS-SCALE-RESULT "


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# -- inside the VM --------------------------------------------------------------------------


def sh(cmd: str, stdin: str | None = None) -> str:
    p = subprocess.run(cmd, shell=True, input=stdin, capture_output=True, text=True)
    if p.returncode:
        raise SystemExit(f"`{cmd}` failed: {p.stderr.strip()}")
    return p.stdout


def timed_sh(cmd: str, stdin: str | None = None) -> float:
    t0 = time.monotonic()
    sh(cmd, stdin)
    return time.monotonic() - t0


def build(vips: int, reals: int) -> tuple[list[Any], Any]:
    from pymon.ipvs.table import Dest, Service, ServiceKey, make_table
    from pymon.model.config import RealServerSpec, VirtualServiceSpec

    addrs = [f"10.60.{i // 250}.{i % 250 + 1}" for i in range(reals)]
    vss = []
    for i in range(vips):
        svc = Service(ServiceKey("tcp", f"10.50.{i // 250}.{i % 250 + 1}", 80), "wrr")
        vss.append(VirtualServiceSpec(f"vip{i}", svc, ("pool", "tcp"),
                                      [RealServerSpec(a, Dest(a, 80, "dr", 1 + n % 3)) for n, a in enumerate(addrs)]))
    return vss, make_table((vs.service, [rs.dest for rs in vs.reals]) for vs in vss)


def rules(table: Any) -> str:
    """The table as `ipvsadm -R` input."""
    out = []
    for key, (svc, dests) in table.items():
        out.append(f"-A -t {key.address}:{key.port} -s {svc.scheduler}")
        out += [f"-a -t {key.address}:{key.port} -r {d.address}:{d.port} -g -w {d.weight}" for d in dests.values()]
    return "\n".join(out) + "\n"


class Log:
    def __init__(self) -> None:
        self.events: list[tuple[float, str, dict[str, Any]]] = []

    def _add(self, event: str, **kw: Any) -> None:
        self.events.append((time.monotonic(), event, kw))

    debug = info = warning = error = _add

    def is_enabled_for(self, level: int) -> bool:  # as the daemon at --log-level info
        return level >= 20


def baseline_backend(commit: str) -> Any:
    """KernelIPVS as it was at `commit` (pyroute2), loaded from git."""
    src = subprocess.run(["git", "-C", str(ROOT), "show", f"{commit}:src/pymon/ipvs/kernel.py"],
                         capture_output=True, text=True, check=True).stdout
    path = Path(tempfile.mkdtemp()) / "old_kernel.py"
    path.write_text(src)
    spec = importlib.util.spec_from_file_location("old_kernel", path)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.KernelIPVS


async def inside_main(a: argparse.Namespace) -> dict[str, Any]:
    from pymon.ipvs import kernel as kmod
    from pymon.ipvs.kernel import KernelIPVS
    from pymon.ipvs.owner import LvsOwner
    from pymon.ipvs.table import diff
    from pymon.model.config import IpvsOptions

    r: dict[str, Any] = {"vips": a.vips, "reals": a.reals, "dests": a.vips * a.reals, "batch": kmod.BATCH,
                         "kernel": os.uname().release, "cpus": os.cpu_count()}
    sh("modprobe ip_vs")
    vss, table = build(a.vips, a.reals)
    text = rules(table)

    # ipvsadm, same boot
    restore, listing = [], []
    for _ in range(3):
        sh("ipvsadm -C")
        restore.append(timed_sh("ipvsadm -R", text))
        listing.append(timed_sh("ipvsadm -Ln > /dev/null"))
    r["ipvsadm_R_s"] = statistics.median(restore)
    r["ipvsadm_Ln_s"] = statistics.median(listing)
    log(f"ipvsadm -R {restore}, -Ln {listing}")

    # 1. full table at start
    starts = []
    for _ in range(3):
        sh("ipvsadm -C")
        owner = LvsOwner(IpvsOptions(), KernelIPVS(), Log(), vss=vss, health=lambda w, h: True)
        t0 = time.monotonic()
        await owner.reconcile("start")
        starts.append(time.monotonic() - t0)
        await owner.backend.close()
        assert owner.last_errors == [], owner.last_errors[:3]
    r["start_s"] = statistics.median(starts)
    log(f"start {starts}")

    # one op per sendmsg, same codec: what batching buys
    sh("ipvsadm -C")
    kmod.BATCH, batch = 1, kmod.BATCH
    try:
        async with KernelIPVS() as k:
            t0 = time.monotonic()
            errors = await k.apply(diff(table, {}))
            r["apply_unbatched_s"] = time.monotonic() - t0
            assert errors == []
    finally:
        kmod.BATCH = batch
    sh("ipvsadm -C")
    async with KernelIPVS() as k:
        t0 = time.monotonic()
        assert await k.apply(diff(table, {})) == []
        r["apply_batched_s"] = time.monotonic() - t0
        sh("ipvsadm -C")
        ops = diff(table, {})
        prof = cProfile.Profile()
        prof.enable()
        await k.apply(ops)
        prof.disable()
    r["apply_profile"] = top_functions(prof)

    # 2. dumps
    async with KernelIPVS() as k:
        reads, cpus = [], []
        for _ in range(5):
            k._seen.clear()  # parse every reply, as when every counter moved
            t0, c0 = time.monotonic(), time.process_time()
            got = await k.read()
            reads.append(time.monotonic() - t0)
            cpus.append(time.process_time() - c0)
        assert got == table
        r["read_s"], r["read_cpu_s"] = statistics.median(reads), statistics.median(cpus)
        idle = []
        for _ in range(5):  # nothing changed since the last read: no reply parsed again
            t0 = time.monotonic()
            await k.read()
            idle.append(time.monotonic() - t0)
        r["reread_s"] = statistics.median(idle)
        k._seen.clear()
        prof = cProfile.Profile()
        prof.enable()
        await k.read()
        prof.disable()
        r["decode_us"] = decode_costs(k)
    r["profile"] = top_functions(prof)
    log(f"read {reads} cpu {cpus}")

    if a.baseline:
        try:
            old = baseline_backend(a.baseline)()
        except (OSError, subprocess.CalledProcessError) as e:
            raise SystemExit(f"--baseline {a.baseline}: cannot load its backend: {e}")
        t0 = time.monotonic()
        got = await old.read()
        r["baseline_read_s"] = time.monotonic() - t0
        assert got == table
        sh("ipvsadm -C")
        t0 = time.monotonic()
        assert await old.apply(diff(table, {})) == []
        r["baseline_apply_s"] = time.monotonic() - t0
        await old.close()
        log(f"baseline read {r['baseline_read_s']:.2f} apply {r['baseline_apply_s']:.2f}")

    # 4a. read CPU at 1x, 2x, 4x the table (more services, same real servers)
    scaling = {}
    for mult in (1, 2, 4):
        _, big = build(a.vips * mult, a.reals)
        sh("ipvsadm -C")
        sh("ipvsadm -R", rules(big))
        async with KernelIPVS() as k:
            c0 = time.process_time()
            for _ in range(3):
                k._seen.clear()
                await k.read()
            scaling[a.vips * mult * a.reals] = (time.process_time() - c0) / 3
    r["read_cpu_by_dests"] = scaling
    log(f"scaling {scaling}")
    sh("ipvsadm -C")
    sh("ipvsadm -R", text)

    # 3 + 4b. the owner running: a dead server during a resync; then an idle CPU window
    health = {rs.host: True for rs in vss[0].reals}
    olog = Log()
    kernel = TimedKernel()
    owner = LvsOwner(IpvsOptions(resync=a.resync), kernel, olog, vss=vss, health=lambda w, h: health[h])
    await owner.reconcile("start")
    task = asyncio.create_task(owner.run())
    dead_times = []
    victim = vss[0].reals[2].host
    for up in (False, True, False, True, False):
        kernel.reading.clear()
        await asyncio.wait_for(kernel.reading.wait(), 60)
        health[victim] = up
        owner.poke()
        t0 = time.monotonic()
        n = len(olog.events)
        # applied: the apply that carries the changes returned (the kernel acknowledged
        # them). Not "the owner let go of its lock": the resync the change cut short runs
        # again right after, without a pause, and its read is no part of the change.
        while not any(t > t0 and k >= a.vips for t, k in kernel.applied):
            await asyncio.sleep(0.005)
            if time.monotonic() - t0 > 60:
                raise SystemExit(f"no change applied 60 s after the health change: {olog.events[n:][:5]}")
        dead_times.append(next(t for t, k in kernel.applied if t > t0 and k >= a.vips) - t0)
        changed = [kw for _, e, kw in olog.events[n:] if e == "ipvs.change"]
        assert len(changed) == a.vips and {kw["reason"] for kw in changed} == {"health"}, changed[:2]
    r["dead_server_s"] = dead_times
    r["repaired_events"] = sum(1 for _, e, _ in olog.events if e == "ipvs.repaired")
    log(f"dead server {dead_times}")
    await asyncio.sleep(a.resync + 2)  # the resync re-run after the last trial, and one more, pass
    kernel.read_starts.clear()
    c0, t0 = time.process_time(), time.monotonic()
    await asyncio.sleep(a.window)
    r["resync_cpu_pct"] = 100 * (time.process_time() - c0) / (time.monotonic() - t0)
    r["resync_periods_s"] = [b - x for x, b in zip(kernel.read_starts, kernel.read_starts[1:])]
    task.cancel()
    await kernel.close()
    log(f"resync cpu {r['resync_cpu_pct']:.2f}% periods {r['resync_periods_s']}")
    sh("ipvsadm -C")
    return r


def top_functions(prof: cProfile.Profile, n: int = 8) -> list[str]:
    s = io.StringIO()
    pstats.Stats(prof, stream=s).sort_stats("tottime").print_stats(n)
    root = str(Path(__file__).resolve().parents[1]) + "/"  # paths relative to the checkout
    return [ln.replace(root, "") for ln in s.getvalue().splitlines() if ln.strip()][-(n + 1):]


def decode_costs(k: Any) -> dict[str, float]:
    """CPU per real-server reply, three ways, on one reply the kernel sent (µs, best of 5)."""
    import timeit

    from pyroute2.netlink.generic import ipvs as p2

    from pymon.ipvs import kernel as kmod

    genl = k._open()
    svc = next(iter(genl.dump(kmod.CMD_GET_SERVICE, b"")))
    key = kmod.parse_service(kmod.pick(kmod.SERVICE_FIELDS, svc)).key
    payload = genl.dump(kmod.CMD_GET_DEST, kmod._nla(kmod.CMD_ATTR_SERVICE, kmod.service_key_attrs(key)))[0]
    whole = bytes(kmod._HDR.pack(20 + len(payload), genl.family, 0, 0, 0) + kmod._GENL.pack(1, 1, 0) + payload)
    decoder = kmod.Decoder(kmod.DEST_FIELDS)
    decoder(payload)

    def with_pyroute2() -> None:  # what the pyroute2 backend did per real server
        m = p2.ipvsmsg(whole)
        m.decode()
        m.get_attr("IPVS_CMD_ATTR_DEST").get_attr("IPVS_DEST_ATTR_ADDR")

    out = {}
    for name, fn in (("pyroute2 decode", with_pyroute2),
                     ("attribute walk + parse_dest", lambda: kmod.parse_dest(kmod.pick(kmod.DEST_FIELDS, payload), 4)),
                     ("learned layout + parse_dest", lambda: kmod.parse_dest(decoder(payload), 4))):
        out[name] = min(timeit.repeat(fn, number=200, repeat=5)) / 200 * 1e6
    return out


class TimedKernel:
    """KernelIPVS noting when each read starts and each apply ends, with its number of
    ops (defined lazily: pymon imports inside the VM)."""

    def __new__(cls) -> Any:
        from pymon.ipvs.kernel import KernelIPVS

        class _Timed(KernelIPVS):
            def __init__(self) -> None:
                super().__init__()
                self.read_starts: list[float] = []
                self.applied: list[tuple[float, int]] = []
                self.reading = asyncio.Event()

            async def read(self) -> Any:
                self.read_starts.append(time.monotonic())
                self.reading.set()
                return await super().read()

            async def apply(self, ops: Any) -> list[str]:
                errors = await super().apply(ops)
                self.applied.append((time.monotonic(), len(ops)))
                return errors

        return _Timed()


# -- on the host --------------------------------------------------------------------------


def report(r: dict[str, Any], a: argparse.Namespace, command: str, version: str) -> str:
    R, L = r["ipvsadm_R_s"], r["ipvsadm_Ln_s"]
    worst = max(r["dead_server_s"])
    periods = r["resync_periods_s"]
    sc = r["read_cpu_by_dests"]
    base = min(sc, key=int)
    lin = ", ".join(f"{int(n):,}: {v:.2f} s ({v / sc[base] * int(base) / int(n):.2f})" for n, v in sc.items())
    # <= 5 % at 2,000 destinations, linear beyond
    cpu_target = "<= 5 %" if r["dests"] <= 2000 else f"<= {5 * r['dests'] / 2000:g} % (linear)"
    out = [SECTION, "",
           f"`{command}` at {version}; kernel {r['kernel']}, qemu TCG, {r['cpus']} vCPUs; "
           f"{r['vips']} virtual services x {r['reals']} real servers = {r['dests']:,} destinations, one pool behind "
           "every VIP. Ratios are to the C tool in the same boot (TCG slows Python more than C: the ratios are "
           "under emulation).", "",
           "| measure | pymon | C tool | ratio | target |", "|---|---:|---:|---:|---:|",
           f"| full table at start (owner reconcile on an empty kernel) | {r['start_s']:.2f} s | "
           f"`ipvsadm -R` {R:.2f} s | {r['start_s'] / R:.2f}x | <= 3x |",
           f"| one dump of the table, every reply parsed (with counters) | {r['read_s']:.2f} s | "
           f"`ipvsadm -Ln` {L:.2f} s | {r['read_s'] / L:.2f}x | <= 3x |",
           f"| one dump, nothing changed since the last (idle counters) | {r['reread_s']:.2f} s | "
           f"`ipvsadm -Ln` {L:.2f} s | {r['reread_s'] / L:.2f}x | |",
           f"| dead real server: all {r['vips']} entries changed, health change during a resync "
           f"(worst of {len(r['dead_server_s'])}) | {worst:.2f} s | | | <= 1 s (+ interval + timeout) |",
           f"| resync CPU, `resync: {a.resync:g}s`, {a.window:g} s window after the table settled, idle counters | "
           f"{r['resync_cpu_pct']:.2f} % of a core | | | {cpu_target} |",
           f"| resync CPU, `resync: {a.resync:g}s`, every counter moving (a full parse per resync) | "
           f"{100 * r['read_cpu_s'] / a.resync:.1f} % of a core | | | {cpu_target} |",
           f"| resync period, start to start | {min(periods):.2f}-{max(periods):.2f} s | | | {a.resync:g} s |",
           "",
           f"- Apply of all {r['dests'] + r['vips']:,} ops: {r['apply_batched_s']:.2f} s batched "
           f"({r['batch']} per sendmsg), {r['apply_unbatched_s']:.2f} s one op per sendmsg (same codec)."
           + (f" The pyroute2 backend of {a.baseline}: apply {r['baseline_apply_s']:.2f} s, one dump "
              f"{r['baseline_read_s']:.2f} s." if "baseline_read_s" in r else ""),
           f"- One dump: {r['read_s']:.2f} s wall, {r['read_cpu_s']:.2f} s CPU. Read CPU by destinations "
           f"(per-destination cost relative to {int(base):,}): {lin}.",
           f"- Dead server, each trial (down/up alternating): "
           f"{', '.join(f'{x:.2f}' for x in r['dead_server_s'])} s; `ipvs.repaired` events: {r['repaired_events']}.",
           "- CPU per real-server reply (µs, best of 5, one reply the kernel sent): "
           + ", ".join(f"{n} {v:.0f}" for n, v in r["decode_us"].items()) + ".",
           "- cProfile of one dump (tottime):", "", "```", *r["profile"], "```", "",
           f"- cProfile of the apply of all {r['dests'] + r['vips']:,} ops (tottime):", "", "```",
           *r["apply_profile"], "```"]
    return "\n".join(out) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--vips", type=int, default=200)
    ap.add_argument("--reals", type=int, default=10)
    ap.add_argument("--resync", type=float, default=10.0, help="resync period for the CPU window (default 10)")
    ap.add_argument("--window", type=float, default=40.0, help="idle CPU window, seconds (default 40)")
    ap.add_argument("--baseline", metavar="COMMIT", help="also time the pyroute2 backend of COMMIT")
    ap.add_argument("--timeout", type=float, default=1500.0)
    ap.add_argument("--write", metavar="FILE", help=f"replace the '{SECTION}' section of FILE")
    ap.add_argument("--inside", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.inside:
        print(MARK + json.dumps(asyncio.run(inside_main(a))), flush=True)
        return 0
    spec = importlib.util.spec_from_file_location("pymon_tests_kernel_vm", ROOT / "tests/kernel/vm.py")
    assert spec and spec.loader
    vm = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = vm  # dataclasses look their module up
    spec.loader.exec_module(vm)
    args = ["--vips", str(a.vips), "--reals", str(a.reals), "--resync", f"{a.resync:g}", "--window", f"{a.window:g}"]
    args += ["--baseline", a.baseline] if a.baseline else []
    res = vm.run_in_vm('"$PYMON_PYTHON" bench/ipvs_scale.py --inside ' + shlex.join(args), timeout=a.timeout)
    found = [ln for ln in res.output.splitlines() if ln.startswith(MARK)]
    print("\n".join(ln for ln in res.output.splitlines() if not ln.startswith(MARK)))
    if not found:
        print(f"no result from the VM (exit {res.returncode})\n{res.vng_output[-3000:]}", file=sys.stderr)
        return 1
    r = json.loads(found[-1][len(MARK):])
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--", "src/pymon"],
                           capture_output=True, text=True).stdout.strip()
    version = head.stdout.strip() + (" + uncommitted changes" if dirty else "")
    body = report(r, a, ("python3 bench/ipvs_scale.py " + " ".join(sys.argv[1:])).strip(), version)
    print(body)
    if a.write:
        write_section(Path(a.write), SECTION, body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
