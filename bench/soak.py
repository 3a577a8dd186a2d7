"""Soak and flap runs of the real daemon against real HTTP servers on loopback.

Soak (default): N servers (a tiny asyncio HTTP server each, on 127.1.x.y, all in this
process), one hostgroup + `http` service per server so that every server's outage is
alerted on its own (mon's alerts are per service). 5 % of them go down (the listening
socket closed: connection refused) and up again on a random schedule, written to
`schedule.json` before the run. The daemon's `log` alerts (`alert.log` lines, with
`alertevery: 1h`, so one alert per outage) are checked against it: every down and up
transition alerted exactly once, in order, after it happened and within interval +
timeout + slack; no alert for a server that never went down. The daemon's RSS and
open fds are sampled every few seconds; growth after warm-up must stay < 5 % (RSS) and
zero (fds).

Flap (`--flap`): healthy backends that answer just under the timeout (80 % of it),
while every core is kept busy by a CPU burner (as many spinning processes as cores):
no host may go down, no alert, no IPVS removal (virtual services in dry-run).

    python3 bench/soak.py                        # 2,000 servers, 10 minutes
    python3 bench/soak.py --servers 200 --duration 60
    python3 bench/soak.py --flap                 # 10 minutes, both cores busy
    python3 bench/soak.py --write bench/RESULTS.md   # append the figures

Only loopback addresses; every loop is bounded in time and stops by itself.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import random
import resource
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"


def address(i: int) -> str:
    return f"127.1.{i // 250}.{1 + i % 250}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((address(0), 0))
        return int(s.getsockname()[1])


def raise_nofile() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


class Farm:
    """Servers on one port, each on its own loopback address, up or down at will."""

    def __init__(self, n: int, port: int, delay: float = 0.0) -> None:
        self.n, self.port, self.delay = n, port, delay
        self.servers: dict[int, asyncio.Server] = {}
        self.served = 0

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            if self.delay:
                await asyncio.sleep(self.delay)
            writer.write(RESPONSE)
            await writer.drain()
            self.served += 1
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()

    async def up(self, i: int) -> None:
        if i not in self.servers:
            self.servers[i] = await asyncio.start_server(self._handle, address(i), self.port,
                                                         reuse_address=True, backlog=64)

    async def down(self, i: int) -> None:
        s = self.servers.pop(i, None)
        if s is not None:
            s.close()  # the listening socket: new connections are refused

    async def start(self) -> None:
        for i in range(self.n):
            await self.up(i)

    async def stop(self) -> None:
        for i in list(self.servers):
            await self.down(i)


class Pymon:
    """`pymon run` as a subprocess; its JSON log lines are collected by a thread."""

    def __init__(self, cfg: Path) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "pymon", "run", "-c", str(cfg)],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.events: list[dict[str, Any]] = []
        self.bad_lines = 0
        self._t = threading.Thread(target=self._read, daemon=True)
        self._t.start()
        self._e = threading.Thread(target=self._read_err, daemon=True)
        self.stderr: list[str] = []
        self._e.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                e = json.loads(line)
            except ValueError:
                self.bad_lines += 1
                continue
            if e.get("event") in ("check.done", "check.result", "check.sampled"):
                continue  # plenty of them; not needed here
            e["_t"] = time.time()
            self.events.append(e)

    def _read_err(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            if len(self.stderr) < 200:
                self.stderr.append(line)

    async def until(self, event: str, timeout: float) -> dict[str, Any]:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            for e in self.events:
                if e.get("event") == event:
                    return e
            if self.proc.poll() is not None:
                raise RuntimeError(f"pymon exited: {''.join(self.stderr)[-2000:]}")
            await asyncio.sleep(0.2)
        raise TimeoutError(f"no {event} in {timeout}s")

    def sample(self) -> tuple[int, int]:
        """(RSS in KiB, open fds) of the daemon."""
        rss = 0
        for ln in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if ln.startswith("VmRSS:"):
                rss = int(ln.split()[1])
        return rss, len(os.listdir(f"/proc/{self.proc.pid}/fd"))

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        return self.proc.wait()


@dataclass
class Report:
    kind: str
    ok: bool = True
    problems: list[str] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)

    def fail(self, msg: str) -> None:
        self.ok = False
        if len(self.problems) < 50:
            self.problems.append(msg)


# -- soak ---------------------------------------------------------------------------


def make_schedule(n: int, duration: float, frac: float, interval: float, rng: random.Random) -> dict[int, list[float]]:
    """Server -> transition times (s from the start: down, up, down, up...). Outages
    start after warm-up, last at least 3 intervals, are 3 intervals apart, and end
    early enough to be seen before the run ends."""
    first, last = max(10.0, 0.15 * duration), 0.85 * duration
    gap = 3 * interval + 2
    out: dict[int, list[float]] = {}
    for i in sorted(rng.sample(range(n), max(1, round(n * frac)))):
        times: list[float] = []
        t = rng.uniform(first, first + (last - first) / 2)
        for _ in range(rng.choice((1, 1, 2))):
            if t + gap > last:
                break
            up = rng.uniform(t + gap, min(last, t + gap + 0.3 * duration))
            times += [round(t, 2), round(up, 2)]
            t = up + gap
        out[i] = times
    return out


def soak_config(out: Path, n: int, port: int, interval: float, timeout: float) -> Path:
    lines = [f"globals: {{statedir: {out}, mondir: {out}, alertdir: {out}, randstart: {interval}s, "
             f"alert_timeout: 10s}}", "hostgroups:"]
    lines += [f"  b{i:04d}: [{address(i)}]" for i in range(n)]
    lines.append("watch:")
    lines += [f"  b{i:04d}: {{http: {{interval: {interval}s, timeout: {timeout}s, "
              f"monitor: {{name: http, port: {port}}}, "
              "periods: [{alertevery: 1h, alert: [log], upalert: [log]}]}}" for i in range(n)]
    cfg = out / "pymon.yaml"
    cfg.write_text("\n".join(lines) + "\n")
    return cfg


async def soak(n: int = 2000, duration: float = 600.0, frac: float = 0.05, interval: float = 5.0,
               timeout: float = 2.0, seed: int | None = None, out: Path | None = None,
               log: Any = print) -> Report:
    raise_nofile()
    seed = seed if seed is not None else random.randrange(2**32)
    rng = random.Random(seed)
    out = out or Path(tempfile.mkdtemp(prefix="pymon-soak-"))
    out.mkdir(parents=True, exist_ok=True)
    port = free_port()
    schedule = make_schedule(n, duration, frac, interval, rng)
    (out / "schedule.json").write_text(json.dumps({"seed": seed, "servers": n, "duration": duration,
                                                   "port": port, "transitions": {address(i): t for i, t
                                                                                in schedule.items()}}, indent=1))
    rep = Report("soak", figures={"servers": n, "duration_s": duration, "interval_s": interval,
                                  "timeout_s": timeout, "seed": seed, "changing": len(schedule),
                                  "transitions": sum(len(t) for t in schedule.values()), "dir": str(out)})
    farm = Farm(n, port)
    await farm.start()
    d = Pymon(soak_config(out, n, port, interval, timeout))
    samples: list[tuple[float, int, int]] = []
    try:
        await d.until("daemon.ready", 60 + interval)
        t0 = time.time()
        log(f"soak: {n} servers ready; {len(schedule)} change, {rep.figures['transitions']} transitions; seed {seed}")
        events = sorted((t0 + t, i, k % 2 == 0) for i, ts in schedule.items() for k, t in enumerate(ts))
        next_sample = time.time()
        for when, i, going_down in events + [(t0 + duration, -1, False)]:
            while time.time() < when:
                if time.time() >= next_sample:
                    samples.append((time.time() - t0, *d.sample()))
                    next_sample += 5.0
                if d.proc.poll() is not None:
                    raise RuntimeError("pymon exited during the soak")
                await asyncio.sleep(min(0.05, max(0.0, when - time.time())))
            if i >= 0:
                await (farm.down(i) if going_down else farm.up(i))
        samples.append((time.time() - t0, *d.sample()))
    finally:
        rc = d.stop()  # before the servers go: their closing is no outage
        await farm.stop()
    if rc != 0:
        rep.fail(f"pymon exited with {rc}")
    if d.bad_lines:
        rep.fail(f"{d.bad_lines} stdout lines were not JSON")
    if any("Traceback" in ln for ln in d.stderr):
        rep.fail("a traceback on stderr: " + "".join(d.stderr)[-1500:])
    _judge_alerts(rep, d.events, schedule, t0, interval, timeout)
    _judge_resources(rep, samples, duration)
    rep.figures["requests_served"] = farm.served
    return rep


def _judge_alerts(rep: Report, events: list[dict[str, Any]], schedule: dict[int, list[float]], t0: float,
                  interval: float, timeout: float) -> None:
    got: dict[int, list[tuple[str, float]]] = {}
    for e in events:
        if e.get("event") == "alert.log":
            got.setdefault(int(e["group"][1:]), []).append((e["type"], e["_t"] - t0))
    bound = interval + timeout + 3.0  # detection: the next check, its timeout, and log latency
    delays: list[float] = []
    for i in set(got) | set(schedule):
        want = schedule.get(i, [])
        kinds = [k for k, _ in got.get(i, [])]
        expect = ["alert" if k % 2 == 0 else "upalert" for k in range(len(want))]
        if kinds != expect:
            rep.fail(f"{address(i)}: alerts {kinds}, schedule {expect} at {want}")
            continue
        for (kind, at), t in zip(got.get(i, []), want):
            delays.append(at - t)
            if not 0 <= at - t <= bound:
                rep.fail(f"{address(i)}: {kind} at +{at:.1f}s for a transition at +{t:.1f}s (bound {bound:g}s)")
    rep.figures["alerts"] = sum(len(v) for v in got.values())
    if delays:
        rep.figures["detect_s_median"] = round(statistics.median(delays), 2)
        rep.figures["detect_s_max"] = round(max(delays), 2)


def _judge_resources(rep: Report, samples: list[tuple[float, int, int]], duration: float) -> None:
    warm = [s for s in samples if s[0] >= 0.2 * duration][:3] or samples[:3]
    end = samples[-3:]
    rss0, rss1 = statistics.median(s[1] for s in warm), statistics.median(s[1] for s in end)
    fd0, fd1 = max(s[2] for s in warm), min(s[2] for s in end)
    growth = (rss1 - rss0) / rss0 * 100 if rss0 else 0.0
    rep.figures.update(rss_kib_warm=int(rss0), rss_kib_end=int(rss1), rss_growth_pct=round(growth, 2),
                       rss_kib_max=max(s[1] for s in samples), fds_warm=fd0, fds_end=fd1,
                       fds_max=max(s[2] for s in samples))
    if growth >= 5.0:
        rep.fail(f"RSS grew {growth:.1f} % after warm-up ({rss0:.0f} -> {rss1:.0f} KiB)")
    if fd1 > fd0:
        rep.fail(f"open fds grew after warm-up ({fd0} -> {fd1})")


# -- flap ----------------------------------------------------------------------------


def _burn(until: float) -> None:
    x = 0
    while time.time() < until:
        for _ in range(100_000):
            x += 1


async def flap(duration: float = 600.0, hosts: int = 20, interval: float = 1.0, timeout: float = 2.0,
               frac: float = 0.8, burners: int | None = None, out: Path | None = None,
               log: Any = print) -> Report:
    """Healthy backends answering in `frac` x timeout, every core busy: nothing may go down."""
    raise_nofile()
    out = out or Path(tempfile.mkdtemp(prefix="pymon-flap-"))
    out.mkdir(parents=True, exist_ok=True)
    port = free_port()
    farm = Farm(hosts, port, delay=frac * timeout)
    await farm.start()
    addrs = [address(i) for i in range(hosts)]
    cfg = out / "pymon.yaml"
    cfg.write_text(f"""globals: {{statedir: {out}, mondir: {out}, alertdir: {out}}}
hostgroups: {{web: {json.dumps(addrs)}}}
watch:
  web:
    http:
      interval: {interval}s
      timeout: {timeout}s
      monitor: {{name: http, port: {port}}}
      periods: [{{alert: [log], upalert: [log]}}]
virtual_services:
  - {{vip: "192.0.2.80:80", watch: "web:http", forwarding: nat,
      real_servers: {json.dumps([f"{a}:{port}" for a in addrs])}}}
ipvs: {{dry_run: true}}
""")
    n_burn = burners if burners is not None else (os.cpu_count() or 2)
    ctx = multiprocessing.get_context("spawn")
    procs: list[Any] = []
    rep = Report("flap", figures={"hosts": hosts, "duration_s": duration, "interval_s": interval,
                                  "timeout_s": timeout, "answer_s": round(frac * timeout, 3), "burners": n_burn})
    d = Pymon(cfg)
    try:
        await d.until("daemon.ready", 30)
        t0 = time.time()
        procs = [ctx.Process(target=_burn, args=(t0 + duration,), daemon=True) for _ in range(n_burn)]
        for p in procs:
            p.start()
        log(f"flap: {hosts} backends answering in {frac * timeout:g}s (timeout {timeout:g}s), "
            f"{n_burn} CPU burners, {duration:g}s")
        load: list[float] = []
        while time.time() < t0 + duration:
            if d.proc.poll() is not None:
                raise RuntimeError("pymon exited during the flap run")
            load.append(os.getloadavg()[0])
            await asyncio.sleep(1.0)
    finally:
        for p in procs:
            p.terminate()
            p.join(5)
        rc = d.stop()
        await farm.stop()
    if rc != 0:
        rep.fail(f"pymon exited with {rc}")
    ready = next(e["_t"] for e in d.events if e["event"] == "daemon.ready")
    downs = [e for e in d.events if e["event"] == "host.state" and e["state"] == "down"]
    alerts = [e for e in d.events if e["event"] == "alert.log"]
    removals = [e for e in d.events if e["event"] == "ipvs.would_change" and e["op"].startswith("del dest")
                and e["_t"] > ready]
    for e in downs:
        rep.fail(f"false down: {e['host']}: {e['summary']}")
    for e in alerts:
        rep.fail(f"false alert: {e['type']} {e['summary']}")
    for e in removals:
        rep.fail(f"false IPVS removal: {e['op']}")
    rep.figures.update(requests_served=farm.served, load_avg_max=round(max(load, default=0.0), 2),
                       false_downs=len(downs), false_alerts=len(alerts), ipvs_removals=len(removals))
    return rep


# -- CLI --------------------------------------------------------------------------------


def to_markdown(rep: Report) -> str:
    rows = "\n".join(f"| {k} | {v} |" for k, v in rep.figures.items() if k != "dir")
    verdict = "pass" if rep.ok else "FAIL: " + "; ".join(rep.problems[:5])
    return f"\n### {rep.kind} ({time.strftime('%Y-%m-%d')}): {verdict}\n\n| figure | value |\n|---|---|\n{rows}\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--flap", action="store_true", help="healthy-but-slow backends on a loaded machine")
    ap.add_argument("--servers", type=int, default=2000)
    ap.add_argument("--duration", type=float, default=600.0)
    ap.add_argument("--interval", type=float, default=None, help="check interval (soak 5 s, flap 1 s)")
    ap.add_argument("--timeout", type=float, default=2.0)
    ap.add_argument("--frac", type=float, default=0.05, help="share of servers that go down (soak)")
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--out", type=Path, default=None, help="keep the config, schedule and state here")
    ap.add_argument("--write", type=Path, default=None, help="append the figures to this Markdown file")
    a = ap.parse_args()
    if a.flap:
        rep = asyncio.run(flap(a.duration, interval=a.interval or 1.0, timeout=a.timeout, out=a.out))
    else:
        rep = asyncio.run(soak(a.servers, a.duration, a.frac, a.interval or 5.0, a.timeout, a.seed, a.out))
    print(json.dumps({"ok": rep.ok, "problems": rep.problems, **rep.figures}, indent=1))
    if a.write:
        with open(a.write, "a") as f:
            f.write(to_markdown(rep))
    return 0 if rep.ok else 1


if __name__ == "__main__":
    sys.exit(main())
