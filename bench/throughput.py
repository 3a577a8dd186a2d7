#!/usr/bin/env python3
"""Throughput and schedule fidelity: N HTTP real servers at a 1 s interval, pymon vs mon.

    python3 bench/throughput.py [-n 100,1000,10000] [--duration 30] [--mon-n 100]
                                [--loop asyncio|uvloop] [--probe-workers 0,2] [--floor [--repeat K]] [--tls]
                                [--python PATH,...]
                                [--maxprocs N] [--burner K] [--own-path] [--nice N,...]
                                [--src LABEL=DIR[@NICE],...] [--port P] [--section TITLE]
                                [--write bench/RESULTS.md]

The real servers are one Debian nginx (keep-alive off, `return 200`) listening on N
loopback addresses 127.1.x.y:8080, one `listen` each, so every real server is a
distinct address as in an LVS farm (`--port P`: another port, 8443 by default with
`--tls`; two runs on one machine need two ports: a second nginx cannot bind, and the run
stops). Both daemons get the same workload: one watch (hostgroup + service) per real
server, `interval 1s`, an HTTP GET of `/` with a 1 s timeout; pymon's native `http`
probe, mon's `http.monitor -p 8080 -t 1`.

Measured over a window of `--duration` seconds that starts after `--warmup` seconds:
- done / scheduled: checks that finished in the window / (N x duration / interval).
  pymon: counted in the daemon; both: also counted independently as requests in
  nginx's access log (`$msec $server_addr $ssl_session_reused`), which also gives the
  achieved interval between two checks of one server (p50 / p99).
- start lag (pymon): how late each check started against its schedule, as the
  scheduler passes it to the check (the `lag_s` of `check.done`), p50 / p99 / max.
- CPU per 1,000 checks: user+system CPU in the window / checks done. pymon: the
  daemon process (all threads, `RUSAGE_SELF`) plus its `probe_workers` processes; mon:
  mon plus its reaped children (`/proc/PID/stat` utime+stime+cutime+cstime). nginx's
  CPU per request in the same window beside it.
- RSS: pymon's peak (`ru_maxrss`, plus the workers' VmHWM) and its RSS at the start and
  the end of the window (growth = end - start).
- longest loop pass: the longest time the daemon's event loop went without waiting for
  I/O (the watchdog's pass timing, globals.block_warning), from the daemon's start to the
  end of the window, so with `--duration` >= 60 it includes the first full garbage
  collection and steady-state save a minute after start; with the number of passes of
  50 ms or more (the start-lag target) and when the longest one came (s after start);
  and the full garbage collections among them, if any, with the longest.
- checks skipped: the checks the daemon skipped because their whole interval passed before
  it could start them (`pymon_checks_skipped_total{reason="late"}`; n/a: code without it).
- `--burner K`: K processes spinning on the CPU at nice 0 (not pinned), started before
  each run (the C client's too) and stopped after it: "another process uses a core".
- `--own-path`: each watch checks its own URL path (`/sNNNNN`) instead of all sharing `/`:
  no two monitor specs are equal, so none are shared (RSS).
- `--src LABEL=DIR[@NICE],...`: run the daemon from each source tree in turn (at its own
  nice value if given: the code before a change at the nice its unit had) within the same
  run (e.g. the code before a change exported to a directory, and this tree), each row
  labelled: a before/after comparison against the same anchor, minutes apart.
- `--floor`: the same requests at the same rate from a minimal C epoll client
  (bench/floor.c, built with `cc` at the start: connect, send, read the head, close;
  nothing else): what any checker pays, mostly the kernel's TCP work, to compare
  pymon's cost and nginx's with.
- `--repeat K` (with `--floor`): K rounds per N, each the C client then every pymon run,
  and a table of each pymon run's CPU per check over the C client's of the same round,
  round by round and the median. The C client's own figure moves by a third from one
  run to the next on this VM; a single pair per sitting put that drift into the ratio.
- `--python PATH,...`: run the daemon on each interpreter in turn (each must import
  pymon's dependencies, e.g. the install's venv, /opt/pymon/bin/python on Debian's
  `python3`); the default is the interpreter running the bench.
- `--tls`: HTTPS instead (nginx `listen ... ssl`, a self-signed P-256 certificate, TLS 1.3,
  session tickets); pymon `scheme: https, verify: false` (as the C client and keepalived's
  SSL_GET: no certificate check) once with `tls_resume: true` and once with false (each
  combined with the other options: every --src tree, nice value and worker count); the C
  client once resuming each server's last session and once with full handshakes. The
  table gets a "÷ C client" column (against the C client with the same handshakes) in
  place of mon's, which is not run (http.monitor has no HTTPS), and a "TLS resumed"
  column (the share of nginx's requests on a resumed session, from its access log).
- `--section TITLE`: the RESULTS.md section `--write` replaces (default "Throughput", with
  `--tls` "Throughput: HTTPS").

pymon runs as `pymon run` does (Daemon, JSON logs at info level, to /dev/null here; at
the unit's `Nice=`, as systemd/pymon.service starts it; `--nice` for others), in
a child process (`--child`) that records the lag of every check and its own CPU/RSS.
nginx runs with 2 workers and competes for the same 2 cores, as do other processes:
the 1-minute load average is recorded with every run.
"""

from __future__ import annotations

import argparse
import array
import asyncio
import functools
import gc
import json
import math
import os
import platform
import resource
import shutil
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from results import write_section  # bench/results.py (scripts run from bench/)

ROOT = Path(__file__).resolve().parent.parent
SECTION = "Throughput"  # --section changes it; --tls: "Throughput: HTTPS"
PORT = 8080  # main() sets it: --port, or 8443 with --tls
MON = "/usr/sbin/mon"
HTTP_MONITOR = "/usr/lib/mon/mon.d/http.monitor"
TICK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
STALL_S = 0.05  # loop passes at least this long are counted (the start-lag target)


def address(i: int) -> str:
    return f"127.1.{i // 250}.{i % 250 + 1}"


def pct(xs: list[float], p: float) -> float:
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


class LagHistogram:
    """Start lags in bins 1 % wide from 10 µs: p50/p99 within 1 %, the max exact, and a
    few KiB whatever the number of checks. An array of every lag (sized for the window
    before it, so as not to grow the RSS it measures) held 8 bytes per check, and its
    zero-filled construction twice that for a moment, at start with the first round in
    flight: 21 MiB of the peak RSS counted as the daemon's at 10,000 services and 90 s."""

    STEP = math.log(1.01)
    BINS = 2000  # up to ~4,400 s

    def __init__(self) -> None:
        self.counts = array.array("q", bytes(8 * self.BINS))
        self.n, self.max = 0, float("nan")

    def add(self, lag: float) -> None:
        i = 0 if lag <= 1e-5 else min(self.BINS - 1, int(math.log(lag / 1e-5) / self.STEP) + 1)
        self.counts[i] += 1
        self.n += 1
        if not lag <= self.max:  # also the first (max is nan)
            self.max = lag

    def pct(self, p: float) -> float:
        """The p-th percentile as `pct` ranks it, to the bin's upper bound."""
        if not self.n:
            return float("nan")
        rank, seen = int(round(p / 100 * (self.n - 1))), 0
        for i, c in enumerate(self.counts):
            seen += c
            if seen > rank:
                return min(self.max, 1e-5 * math.exp(self.STEP * i))
        return self.max


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- nginx ------------------------------------------------------------------------------


class Nginx:
    def __init__(self, tmp: Path, n: int, workers: int, tls: bool = False):
        self.tmp, self.log = tmp, tmp / "access.log"
        self.reused = 0  # TLS sessions resumed, of the requests last counted
        ssl = ""
        if tls:
            subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                            "-subj", "/CN=bench", "-days", "2", "-keyout", str(tmp / "key.pem"),
                            "-out", str(tmp / "cert.pem")], check=True, capture_output=True)
            ssl = f"        ssl_certificate {tmp}/cert.pem; ssl_certificate_key {tmp}/key.pem;\n"
        listens = "\n".join(f"        listen {address(i)}:{PORT}{' ssl' if tls else ''};" for i in range(n))
        for d in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
            (tmp / d).mkdir(exist_ok=True)
        self.conf = tmp / "nginx.conf"
        self.conf.write_text(f"""daemon off;
worker_processes {workers};
worker_rlimit_nofile 65536;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
events {{ worker_connections 30000; }}
http {{
    log_format bench '$msec $server_addr $ssl_session_reused';
    access_log {self.log} bench buffer=256k flush=1s;
    keepalive_timeout 0;
    client_body_temp_path {tmp}/body; proxy_temp_path {tmp}/proxy; fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi; scgi_temp_path {tmp}/scgi;
    server {{
{listens}
{ssl}        location / {{ return 200 "ok\\n"; }}
    }}
}}
""")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(["nginx", "-c", str(self.conf), "-p", str(self.tmp)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
        # nginx writes its pid file only once it holds every listening socket; an address
        # another run holds answers a connect too, while this nginx retries its bind and exits
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"nginx failed (another run on port {PORT}? --port): "
                                 f"{self.proc.stderr.read().decode()}")  # type: ignore[union-attr]
            if (self.tmp / "nginx.pid").exists():
                try:
                    socket.create_connection((address(0), PORT), timeout=1).close()
                    return
                except OSError:
                    pass
            time.sleep(0.1)
        raise SystemExit("nginx did not start")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(10)

    def requests(self, t0: float, t1: float) -> dict[str, list[float]]:
        """Request times per server address in [t0, t1) (waits for nginx's 1 s flush)."""
        time.sleep(1.5)
        out: dict[str, list[float]] = {}
        self.reused = 0
        with open(self.log) as f:
            for line in f:
                ts, addr, reused = line.split(" ")
                t = float(ts)
                if t0 <= t < t1:
                    out.setdefault(addr, []).append(t)
                    self.reused += reused.strip() == "r"
        for ts in out.values():  # nginx's workers write their lines in their own order
            ts.sort()
        return out


def log_stats(reqs: dict[str, list[float]], n: int, duration: float, interval: float) -> dict[str, Any]:
    gaps = [b - a for ts in reqs.values() for a, b in zip(ts, ts[1:])]
    done = sum(len(ts) for ts in reqs.values())
    return {"log_done": done, "log_ratio": done / (n * duration / interval),
            "gap_p50": pct(gaps, 50), "gap_p99": pct(gaps, 99), "servers_seen": len(reqs)}


# -- pymon ------------------------------------------------------------------------------


def pymon_config(tmp: Path, n: int, interval: float, timeout: float, randstart: float, per_watch: int,
                 workers: int, maxprocs: int = 0, own_path: bool = False, tls: str = "") -> Path:
    starts = range(0, n, per_watch)
    groups = "\n".join(f"  s{i:05d}: [{', '.join(address(j) for j in range(i, min(n, i + per_watch)))}]"
                       for i in starts)
    watch = "\n".join(f"  s{i:05d}: {{http: {{interval: {interval:g}s, timeout: {timeout:g}s, "
                      f"monitor: {{name: http, port: {PORT}, path: /{f's{i:05d}' if own_path else ''}{tls}}}}}}}"
                      for i in starts)
    cfg = tmp / "pymon.yaml"
    cfg.write_text(f"globals: {{statedir: {tmp}/state, mondir: {tmp}/none, alertdir: {tmp}/none, "
                   f"randstart: {randstart:g}s, probe_workers: {workers}, maxprocs: {maxprocs}}}\n"
                   f"hostgroups:\n{groups}\nwatch:\n{watch}\n")
    (tmp / "none").mkdir(exist_ok=True)
    return cfg


def rss_bytes(pids: list[int]) -> int:
    """RSS of this process and of `pids` (the probe workers)."""
    total = 0
    for pid in ["self", *pids]:
        with open(f"/proc/{pid}/statm") as f:
            total += int(f.read().split()[1]) * PAGE
    return total


def cpu_split(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of one process."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) / TICK, int(fields[12]) / TICK


def group_cpu(pgid: int) -> float:
    """CPU seconds (user+system) of a process group: nginx's master and workers."""
    total = 0.0
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if os.getpgid(int(d.name)) == pgid:
                    total += sum(cpu_split(int(d.name)))
            except (OSError, ValueError):
                pass
    return total


def hwm_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))


async def child_main(cfg: str, out: str, warmup: float, duration: float, timeout: float,
                     profile: str | None, nginx_pgid: int, src: str) -> None:
    """In the child: the daemon as `pymon run` builds it, plus a recorder of every check
    and of the loop's longest passes."""
    sys.path.insert(0, src)
    from pymon import logs
    from pymon.probes.http import pool
    from pymon.app import Daemon
    from pymon.engine.runner import Runner
    from pymon.engine.watchdog import Watchdog
    from pymon.probes.http import verdict

    # `tls_resume` is refused on Pythons whose ssl module leaks every session it hands out
    # (this host's 3.11): lifted here to measure its CPU; the RSS growth of that row is the leak
    verdict.SESSION_LEAKS = False

    log = logs.setup("json", "info", stream=open(os.devnull, "w"))
    loop = asyncio.get_running_loop()
    # checks scheduled inside the measured window: start lags (a histogram: the recorder must
    # not add to the RSS it measures), host checks done and failed
    window = [float("inf"), float("inf")]
    lags = LagHistogram()
    counts = [0, 0]  # host checks done, failed
    orig = Runner.job

    class Finished:
        """The recorder's wrap of a check's finish: slots, not a closure, so that the harness
        adds one object per check in flight, not a function and its cells, to what the
        garbage collector walks."""

        __slots__ = ("runner", "key", "due", "lag", "finish")

        def __init__(self, runner: Runner, key: tuple[str, str], due: float, lag: float,
                     finish: Callable[[float], None]):
            self.runner, self.key, self.due, self.lag, self.finish = runner, key, due, lag, finish

        def __call__(self, interval: float) -> None:
            if window[0] <= self.due < window[1]:
                st = self.runner.states[self.key]
                lags.add(self.lag)
                counts[0] += len(st.hosts)
                counts[1] += sum(1 for h in st.hosts.values() if h.last is not None and not h.last.ok)
            self.finish(interval)

    def job(self: Runner, key: tuple[str, str], lag: float, finish: Callable[[float], None]) -> Any:
        return orig(self, key, lag, Finished(self, key, loop.time() - lag, lag, finish))

    Runner.job = job  # type: ignore[method-assign]
    # the watchdog already times every pass of the loop (no extra wake-up): keep the longest
    passes = [0.0, 0.0, 0]  # longest pass s, when (monotonic), passes >= STALL_S
    waiting = Watchdog._waiting

    def timed_waiting(self: Watchdog) -> None:
        busy = time.monotonic() - self._pass[1] - self._slack  # on uvloop a pass is a heartbeat's period
        if busy >= STALL_S and passes_on[0]:
            passes[2] += 1
            if busy > passes[0]:
                passes[0], passes[1] = busy, time.monotonic()
        waiting(self)

    passes_on = [False]
    Watchdog._waiting = timed_waiting  # type: ignore[method-assign]
    full_gc = [0, 0.0, 0.0]  # full collections from the first check on, the longest (s), when one started

    def gc_timer(phase: str, info: dict[str, int]) -> None:
        if info["generation"] == 2 and passes_on[0]:
            if phase == "start":
                full_gc[2] = time.perf_counter()
            else:
                full_gc[0] += 1
                full_gc[1] = max(full_gc[1], time.perf_counter() - full_gc[2])

    gc.callbacks.append(gc_timer)
    t_load = time.monotonic()
    d = Daemon(cfg, log)
    task = loop.create_task(d.run())
    while not task.done() and (d.runner is None or not d.runner.sched.entries):
        await asyncio.sleep(0.05)
    if task.done():
        task.result()
    load_s = time.monotonic() - t_load
    t_started = time.monotonic()
    passes_on[0] = True  # from the first check on (loading the config is one long pass, before any)
    await asyncio.sleep(warmup)
    workers = [p.proc.pid for p in pool.POOL.places if hasattr(p, "proc")]  # probe_workers: CPU and RSS count
    rss: list[int] = []
    t0, w0, c0 = loop.time(), time.time(), time.process_time()
    ru0 = resource.getrusage(resource.RUSAGE_SELF)
    wk0 = [cpu_split(pid) for pid in workers]
    ng0 = group_cpu(nginx_pgid)
    t1 = t0 + duration
    late0 = getattr(d.runner.sched, "skipped", {}).get("late")
    window[:] = [t0, t1]
    Path(out + ".window").touch()  # for --py-spy
    prof = None
    if profile:
        import pyinstrument

        prof = pyinstrument.Profiler(interval=0.001, async_mode="disabled")
        prof.start()
    while loop.time() < t1 - 0.5:
        rss.append(rss_bytes(workers))
        await asyncio.sleep(min(1.0, t1 - loop.time()))
    await asyncio.sleep(max(0.0, t1 - loop.time()))
    c1 = time.process_time()
    ru1 = resource.getrusage(resource.RUSAGE_SELF)
    wk1 = [cpu_split(pid) for pid in workers]
    ng1 = group_cpu(nginx_pgid)
    rss.append(rss_bytes(workers))
    w_user = sum(b[0] - a[0] for a, b in zip(wk0, wk1))
    w_sys = sum(b[1] - a[1] for a, b in zip(wk0, wk1))
    w_hwm = sum(hwm_bytes(pid) for pid in workers)
    passes_on[0] = False
    late = None if late0 is None else d.runner.sched.skipped["late"] - late0
    if prof:
        prof.stop()
    await asyncio.sleep(timeout + 0.5)  # checks due before t1 finish
    done, failed = counts
    d.stopping.set()
    await asyncio.wait_for(task, 30)
    if prof and profile:
        Path(profile).write_text(prof.output_text(unicode=False, color=False, show_all=False))
    Path(out).write_text(json.dumps({
        "window": [w0, w0 + duration], "duration": duration, "done": done, "failed": failed,
        "cpu_s": c1 - c0 + w_user + w_sys, "sys_s": ru1.ru_stime - ru0.ru_stime + w_sys,
        "workers": len(workers), "workers_cpu_s": w_user + w_sys, "nginx_cpu_s": ng1 - ng0,
        "lag_p50": lags.pct(50), "lag_p99": lags.pct(99), "lag_max": lags.max,
        "rss_start": rss[0], "rss_end": rss[-1], "rss_max_sampled": max(rss),
        "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 + w_hwm, "load_s": load_s,
        "loop": type(loop).__module__, "pass_max": passes[0], "pass_max_at": passes[1] - t_started if passes[1] else 0.0,
        "passes_over": passes[2], "late": late, "full_gc": full_gc[0], "full_gc_max": full_gc[1],
    }))


class Burner:
    """`k` processes spinning on the CPU at nice 0, for the length of a `with`."""

    def __init__(self, k: int):
        self.k, self.procs = k, []  # type: ignore[var-annotated]

    def __enter__(self) -> "Burner":
        self.procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(self.k)]
        return self

    def __exit__(self, *exc: Any) -> None:
        for p in self.procs:
            p.kill()
            p.wait()


def unit_nice() -> int:
    """The Nice= of systemd/pymon.service (0 without one): the bench runs the daemon as the unit does."""
    for line in (ROOT / "systemd" / "pymon.service").read_text().splitlines():
        if line.startswith("Nice="):
            return int(line[5:])
    return 0


def run_pymon(tmp: Path, nginx: Nginx, n: int, a: argparse.Namespace, loop: str, workers: int,
              src: str, nice: int, resume: bool | None = None, python: str = sys.executable) -> dict[str, Any]:
    tls = "" if resume is None else f", scheme: https, verify: false, tls_resume: {str(resume).lower()}"
    cfg = pymon_config(tmp, n, a.interval, a.timeout, a.randstart, a.per_watch, workers, a.maxprocs, a.own_path,
                       tls)
    shutil.rmtree(tmp / "state", ignore_errors=True)  # each daemon starts clean
    out = tmp / "pymon.json"
    cmd = [python, __file__, "--child", str(cfg), str(out), str(a.warmup), str(a.duration),
           "--loop", loop, "--timeout", str(a.timeout), "--nginx-pgid", str(nginx.proc.pid),  # type: ignore[union-attr]
           "--child-src", src, "--child-nice", str(nice)] + (["--profile", a.profile + f".{n}.txt"] if a.profile else [])
    load = os.getloadavg()[0]
    child = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
    if a.py_spy:
        while not Path(str(out) + ".window").exists() and child.poll() is None:
            time.sleep(0.1)
        subprocess.run(["py-spy", "record", "-p", str(child.pid), "-d", str(int(a.duration) - 1), "-r", "250",
                        "--nonblocking", "-f", "raw", "-o", f"{a.py_spy}.{n}.txt"], capture_output=True)
    p = subprocess.CompletedProcess(cmd, child.wait(timeout=a.warmup + a.duration + 600), "",
                                    child.stderr.read())  # type: ignore[union-attr]
    if p.returncode:
        raise SystemExit(f"pymon child failed ({p.returncode}):\n{p.stderr[-3000:]}")
    r = json.loads(out.read_text())
    r.update(log_stats(nginx.requests(*r["window"]), n, r["duration"], a.interval))
    r["ratio"] = r["done"] / (n * r["duration"] / a.interval)
    r["cpu_per_1000"] = r["cpu_s"] / max(r["done"], 1) * 1000
    r["load"] = load
    r["reused"] = nginx.reused
    return r


# -- mon --------------------------------------------------------------------------------


def mon_config(tmp: Path, n: int, interval: float, timeout: float, randstart: float) -> Path:
    lines = [f"mondir = {Path(HTTP_MONITOR).parent}", "alertdir = /usr/lib/mon/alert.d", "dtlogging = no",
             f"randstart = {round(randstart)}s", ""]
    for i in range(n):
        lines += [f"hostgroup s{i:05d} {address(i)}", ""]
    for i in range(n):
        lines += [f"watch s{i:05d}", "    service http", f"        interval {max(1, round(interval))}s",
                  f"        monitor http.monitor -p {PORT} -t {max(1, round(timeout))}",
                  "        period wd {Sun-Sat}", "            alert file.alert /dev/null", ""]
    cf = tmp / "mon.cf"
    cf.write_text("\n".join(lines))
    return cf


def proc_cpu(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return sum(int(x) for x in fields[11:15]) / TICK  # utime stime cutime cstime


def run_mon(tmp: Path, nginx: Nginx, n: int, a: argparse.Namespace) -> dict[str, Any]:
    cf = mon_config(tmp, n, a.interval, a.timeout, a.randstart)
    st = tmp / "monstate"
    st.mkdir(exist_ok=True)
    load = os.getloadavg()[0]
    p = subprocess.Popen([MON, "-c", str(cf), "-L", str(st), "-D", str(st), "-P", str(st / "pid"),
                          "-p", str(free_port()), "-t", str(free_port())],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        time.sleep(a.warmup + 2)  # mon's first run is one interval after start
        if p.poll() is not None:
            raise SystemExit(f"mon exited with {p.returncode}")
        w0, c0, ng0 = time.time(), proc_cpu(p.pid), group_cpu(nginx.proc.pid)  # type: ignore[union-attr]
        time.sleep(a.duration)
        w1, c1, ng1 = w0 + a.duration, proc_cpu(p.pid), group_cpu(nginx.proc.pid)  # type: ignore[union-attr]
    finally:
        os.killpg(p.pid, signal.SIGTERM)
        p.wait(30)
    r = log_stats(nginx.requests(w0, w1), n, w1 - w0, a.interval)
    r.update(duration=w1 - w0, cpu_s=c1 - c0, load=load, done=r["log_done"], ratio=r["log_ratio"], nginx_cpu_s=ng1 - ng0)
    r["cpu_per_1000"] = r["cpu_s"] / max(r["done"], 1) * 1000
    return r


# -- the floor --------------------------------------------------------------------------


def build_floor(tmp: Path) -> Path:
    exe = tmp / "floor"
    subprocess.run(["cc", "-O2", "-o", str(exe), str(ROOT / "bench" / "floor.c"), "-lssl", "-lcrypto"], check=True)
    return exe


def run_floor(exe: Path, nginx: Nginx, n: int, a: argparse.Namespace, tls: int = 0) -> dict[str, Any]:
    """The same requests at the same rate from bench/floor.c (TLS: 0 plain, 1 full
    handshakes, 2 resumed sessions): its CPU is mostly the kernel's TCP work (and
    OpenSSL's) on the client's side, which every checker pays, whatever its language."""
    load = os.getloadavg()[0]
    ng0 = group_cpu(nginx.proc.pid)  # type: ignore[union-attr]
    t_start = time.time()
    out = subprocess.run([str(exe), str(n), str(PORT), str(a.interval), str(a.warmup), str(a.duration), str(tls)],
                         check=True, capture_output=True, text=True).stdout
    ng1 = group_cpu(nginx.proc.pid)  # type: ignore[union-attr]
    r: dict[str, Any] = json.loads(out)
    w0 = t_start + a.warmup
    r.update(log_stats(nginx.requests(w0, w0 + a.duration), n, a.duration, a.interval))
    r.update(duration=a.duration, ratio=r["done"] / (n * a.duration / a.interval),
             nginx_cpu_s=(ng1 - ng0) * a.duration / (a.duration + a.warmup), load=load, reused=nginx.reused)
    r["cpu_per_1000"] = r["cpu_s"] / max(r["done"], 1) * 1000
    return r


# -- report -------------------------------------------------------------------------------


def mib(b: float) -> str:
    return f"{b / 2**20:.0f}"


def table(rows: list[tuple[int, str, dict[str, Any]]], tls: bool = False) -> str:
    head = ("| N | daemon | done / scheduled | failed | nginx-counted | interval p50 / p99 s | start lag p50 / p99 / max ms "
            "| longest loop pass ms (at s) / passes ≥ 50 ms | checks skipped "
            f"| CPU s / 1,000 checks | {'÷ C client' if tls else 'mon / pymon CPU'} | nginx CPU s / 1,000 requests "
            f"| peak RSS MiB | RSS start → end MiB | load avg |{' TLS resumed |' if tls else ''}\n"
            f"|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|{'---:|' if tls else ''}")
    out = [head]
    by_n = {(n, who): r for n, who, r in rows}
    for n, who, r in rows:
        lag = (f"{r['lag_p50'] * 1e3:.1f} / {r['lag_p99'] * 1e3:.1f} / {r['lag_max'] * 1e3:.0f}"
               if "lag_p50" in r else "n/a")
        ratio = ""
        if tls and who.startswith("pymon"):  # against the C client with the same handshakes
            c = _floor_of(rows, n, r)
            ratio = f"{r['cpu_per_1000'] / c['cpu_per_1000']:.2f}×" if c else ""
        if who == "mon":
            ratio = " / ".join(f"{r['cpu_per_1000'] / p['cpu_per_1000']:.0f}×" for (pn, pw), p in by_n.items()
                               if pn == n and pw.startswith("pymon"))
        rss = (mib(r["peak_rss"]), f"{mib(r['rss_start'])} → {mib(r['rss_end'])}") if "peak_rss" in r else ("n/a", "n/a")
        sys_part = f" (sys {r['sys_s'] / r['cpu_s'] * 100:.0f} %" if r.get("cpu_s") and "sys_s" in r else ""
        if sys_part:
            sys_part += f", workers {r['workers_cpu_s'] / r['cpu_s'] * 100:.0f} %)" if r.get("workers") else ")"
        failed = f"{r['failed'] / max(r['done'], 1) * 100:.1f} %" if "failed" in r else "n/a"
        stall = (f"{r['pass_max'] * 1e3:.0f} ({r['pass_max_at']:.0f}) / {r['passes_over']}" if r.get("pass_max")
                 else ("< 50 / 0" if "pass_max" in r else "n/a"))
        if r.get("full_gc"):
            stall += f"; full GC {r['full_gc']}× ≤ {r['full_gc_max'] * 1e3:.0f} ms"
        late = f"{r['late']:,}" if r.get("late") is not None else "n/a"
        ngx = f"{r['nginx_cpu_s'] / max(r['log_done'], 1) * 1000:.2f}" if "nginx_cpu_s" in r else "n/a"
        out.append(f"| {n:,} | {who} | {r['ratio'] * 100:.1f} % | {failed} | {r['log_ratio'] * 100:.1f} % "
                   f"| {r['gap_p50']:.2f} / {r['gap_p99']:.2f} | {lag} | {stall} | {late} "
                   f"| {r['cpu_per_1000']:.3f}{sys_part} | {ratio} "
                   f"| {ngx} | {rss[0]} | {rss[1]} | {r['load']:.2f} |"
                   + (f" {r['reused'] / max(r['log_done'], 1) * 100:.0f} % |" if tls else ""))
    return "\n".join(out)


def _floor_of(rows: list[tuple[int, str, dict[str, Any]]], n: int, r: dict[str, Any]) -> dict[str, Any] | None:
    """The C client's row that `r` (a pymon row) is measured against: same N, same
    handshakes, same round (`--repeat`)."""
    return next((c for cn, cw, c in rows if cn == n and cw.startswith("C client")
                 and c["handshakes"] == r["handshakes"] and c.get("round") == r.get("round")), None)


def floor_summary(rows: list[tuple[int, str, dict[str, Any]]]) -> str:
    """Each daemon's CPU per check against the C client's of the same round, per round and
    the median: rounds alternate the two, so a load that drifts over a sitting moves both
    sides of a ratio, where one pair per sitting left the ratio to whatever drifted
    between its two runs."""
    out = ["| N | daemon | C client ms / check | daemon ms / check | ÷ C client, each round | median ÷ C client "
           "| median daemon ms / check |", "|---:|---|---|---|---|---:|---:|"]
    by_who: dict[tuple[int, str], list[tuple[float, float]]] = {}
    for n, who, r in rows:
        c = _floor_of(rows, n, r) if who.startswith("pymon") else None
        if c is not None:
            by_who.setdefault((n, who), []).append((c["cpu_per_1000"], r["cpu_per_1000"]))
    for (n, who), pairs in by_who.items():
        ratio, ms = statistics.median(p / c for c, p in pairs), statistics.median(p for _, p in pairs)
        out.append(f"| {n:,} | {who} | {', '.join(f'{c:.3f}' for c, _ in pairs)} "
                   f"| {', '.join(f'{p:.3f}' for _, p in pairs)} | {', '.join(f'{p / c:.2f}×' for c, p in pairs)} "
                   f"| **{ratio:.2f}×** | **{ms:.3f}** |")
    return "\n".join(out)


@functools.lru_cache
def interpreter(python: str) -> str:
    """Which Python a path runs, for the rows: version and installation (a venv's base)."""
    return subprocess.run([python, "-c", "import platform, sys; print('Python', platform.python_version(), 'from', "
                           "sys.base_prefix)"], capture_output=True, text=True, check=True).stdout.strip()


def run_round(tmp: Path, nginx: Nginx, exe: Path | None, n: int, a: argparse.Namespace,
              modes: list[tuple[int, bool | None, str]], rnd: int, rows: list[tuple[int, str, dict[str, Any]]]) -> None:
    """One round at N real servers: the C client (with --floor), then every pymon run
    the options ask for (loops, workers, nice values, source trees, TLS modes)."""
    if exe is not None:
        for tls, _, how in modes:
            with Burner(a.burner):
                rows.append((n, f"C client{f', {how}' if how else ''}",
                             run_floor(exe, nginx, n, a, tls) | {"handshakes": how, "round": rnd}))
            print(table(rows[-1:], a.tls).splitlines()[-1], flush=True)
    pythons = a.python.split(",") if a.python else [sys.executable]
    for loop, python in ((lp, py) for lp in a.loop.split(",") for py in pythons):
        for workers in (int(w) for w in a.probe_workers.split(",")):
            for nice_all in (int(x) for x in a.nice.split(",")):
                for label, src in (x.partition("=")[::2] for x in a.src.split(",")):
                    src, at, own_nice = src.partition("@")
                    nice = int(own_nice) if at else nice_all
                    if at and nice_all != int(a.nice.split(",")[0]):
                        continue  # a tree with its own nice runs once
                    for _, resume, how in modes:
                        who = (f"pymon{f' {label}' if label else ''} ({loop}"
                               f"{f', {interpreter(python)}' if a.python else ''}"
                               f"{f', {workers} workers' if workers else ''}, nice {nice}"
                               f"{f', {how}' if how else ''})")
                        with Burner(a.burner):
                            rows.append((n, who, run_pymon(tmp, nginx, n, a, loop, workers, str(Path(src).resolve()),
                                                           nice, resume, python) | {"handshakes": how, "round": rnd}))
                        print(table(rows[-1:], a.tls).splitlines()[-1], flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-n", default="100,1000", help="comma-separated numbers of real servers (default 100,1000)")
    ap.add_argument("--duration", type=float, default=10.0, help="measured seconds per run (default 10; the issue: 30)")
    ap.add_argument("--warmup", type=float, default=3.0)
    ap.add_argument("--interval", type=float, default=1.0)
    ap.add_argument("--timeout", type=float, default=1.0)
    ap.add_argument("--randstart", type=float, default=1.0,
                    help="globals.randstart (both daemons): spreads the first runs (default 1 s = the interval)")
    ap.add_argument("--mon-n", type=int, default=100, help="run mon too for N up to this (default 100; 0: never; not with --tls)")
    ap.add_argument("--python", help="pymon: interpreters to run the daemon on, each in turn (comma-separated; "
                    "each must import pymon's dependencies, e.g. the install's venv /opt/pymon/bin/python; "
                    "default: this one)")
    ap.add_argument("--loop", default="asyncio", help="asyncio, uvloop, or both: asyncio,uvloop (default asyncio)")
    ap.add_argument("--per-watch", type=int, default=1,
                    help="pymon: real servers per hostgroup/watch (default 1, as mon's one watch per server; "
                         "an LVS config has one per virtual service)")
    ap.add_argument("--nginx-workers", type=int, default=2)
    ap.add_argument("--port", type=int, help="the real servers' port (default 8080; with --tls 8443)")
    ap.add_argument("--maxprocs", type=int, default=0, help="pymon: globals.maxprocs (default 0: unlimited)")
    ap.add_argument("--probe-workers", default="0",
                    help="pymon: globals.probe_workers, processes for the HTTP exchanges (default 0: in the daemon); "
                         "a comma-separated list runs each")
    ap.add_argument("--floor", action="store_true",
                    help="also run the C client (bench/floor.c): the same requests from a minimal epoll loop, nothing else")
    ap.add_argument("--repeat", type=int, default=1,
                    help="with --floor: K rounds per N, each the C client then every pymon run, and a table of "
                         "each round's ratio and the median (default 1)")
    ap.add_argument("--tls", action="store_true",
                    help="HTTPS: pymon with and without TLS session resumption (and the C client both ways with --floor)")
    ap.add_argument("--profile", metavar="PREFIX", help="pyinstrument the child's window to PREFIX.N.txt")
    ap.add_argument("--py-spy", metavar="PREFIX", help="py-spy (collapsed stacks) of the child's window to PREFIX.N.txt")
    ap.add_argument("--write", metavar="FILE", help="replace the --section section of FILE with the table")
    ap.add_argument("--burner", type=int, default=0,
                    help="K CPU burners (nice 0, not pinned) running during each run: a busy machine (default 0)")
    ap.add_argument("--own-path", action="store_true",
                    help="pymon: each watch checks its own URL path (/sNNNNN), so no monitor spec is shared")
    ap.add_argument("--src", default=f"={ROOT / 'src'}",
                    help="pymon: LABEL=DIR[@NICE],... source trees to run the daemon from, each in turn, at "
                         "--nice or at its own NICE (default: this one)")
    ap.add_argument("--section", help=f"the RESULTS.md section --write replaces "
                    f"(default '{SECTION}'; with --tls '{SECTION}: HTTPS')")
    ap.add_argument("--nginx-pgid", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--child-src", default=str(ROOT / "src"), help=argparse.SUPPRESS)
    ap.add_argument("--child-nice", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--nice", default=str(unit_nice()),
                    help="pymon: the daemon's nice value, a comma-separated list runs each "
                         f"(default {unit_nice()}: systemd/pymon.service's Nice=)")
    ap.add_argument("--child", nargs=4, metavar=("CFG", "OUT", "WARMUP", "DURATION"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        cfg, out, warmup, duration = a.child
        os.setpriority(os.PRIO_PROCESS, 0, a.child_nice)
        if a.loop == "uvloop":
            import uvloop

            uvloop.install()
        asyncio.run(child_main(cfg, out, float(warmup), float(duration), a.timeout, a.profile, a.nginx_pgid,
                               a.child_src))
        return 0
    global PORT
    PORT = a.port or (8443 if a.tls else 8080)  # another run on this machine may hold 127.1.x.y:8080
    if not shutil.which("nginx"):
        raise SystemExit("needs Debian's nginx: apt-get install nginx-light")
    resource.setrlimit(resource.RLIMIT_NOFILE, (resource.getrlimit(resource.RLIMIT_NOFILE)[1],) * 2)
    rows: list[tuple[int, str, dict[str, Any]]] = []
    # (C client's TLS mode, pymon's tls_resume, the rows' handshakes)
    modes = [(2, True, "resumed"), (1, False, "full handshakes")] if a.tls else [(0, None, "")]
    ns = [int(x) for x in a.n.split(",")]
    for n in ns:
        with tempfile.TemporaryDirectory(prefix=f"pymon-tput-{n}-") as t:
            tmp = Path(t)
            nginx = Nginx(tmp, n, a.nginx_workers, a.tls)
            nginx.start()
            try:
                exe = build_floor(tmp) if a.floor else None
                for rnd in range(a.repeat if a.floor else 1):
                    run_round(tmp, nginx, exe, n, a, modes, rnd, rows)
                if n <= a.mon_n and os.path.exists(MON) and not a.tls:  # http.monitor has no HTTPS
                    rows.append((n, "mon", run_mon(tmp, nginx, n, a)))
                    print(table(rows[-1:]).splitlines()[-1], flush=True)
            finally:
                nginx.stop()
    print(table(rows, a.tls))
    summary = floor_summary(rows) if a.floor else ""
    if summary:
        print(summary)
    if a.write:
        section = a.section or SECTION + (": HTTPS" if a.tls else "")
        py = "python3" if shutil.which("python3") == sys.executable else sys.executable  # e.g. the install's venv
        cmd = f"{py} bench/throughput.py " + shlex.join(x for x in sys.argv[1:] if x)
        cpu = platform.processor() or platform.machine()
        body = (f"## {section}\n\n    {cmd}\n\n{time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores ({cpu}), "
                f"{interpreter(sys.executable)}{' (the daemon: as its rows say)' if a.python else ''}; "
                f"{a.duration:g} s measured per run after "
                f"{a.warmup:g} s warm-up; {a.per_watch} real server(s) per watch, interval {a.interval:g} s, timeout "
                f"{a.timeout:g} s{', each its own URL path' if a.own_path else ''}; nginx ({a.nginx_workers} workers, "
                f"keep-alive off) on the same 2 cores"
                f"{f'; {a.burner} CPU burner(s) at nice 0 running during every run (the C client too)' if a.burner else ''}. "
                f"`load avg`: 1-minute load average when the run started (other jobs share this machine).\n\n"
                f"{table(rows, a.tls)}\n"
                + (f"\nAgainst the C client, round by round{f' ({a.repeat} rounds, alternating)' if a.repeat > 1 else ''}:"
                   f"\n\n{summary}\n" if summary else ""))
        write_section(Path(a.write), f"## {section}", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
