#!/usr/bin/env python3
"""Kernel: pymon vs keepalived vs mon + lvs.alert on a real IPVS table, in one qemu boot.

    python3 bench/kernel.py [--servers 20] [--trials 20] [--window 30] [--write bench/RESULTS.md]

This host's kernel has no ip_vs, so the script boots ONE throw-away VM with Debian's
kernel (tests/kernel/vm.py: virtme-ng, TCG) and runs itself inside it (`--inside`) as
root. The topology inside:

    director (root ns: VIP 10.10.0.100 on dummy0, 10.10.1.1/16 on a veth)
        └── netns "rs": N real servers 10.10.1.10.. , one `busybox httpd` per address

Three daemons, one after the other, each owning the IPVS service VIP:80 (DR, wlc) with
the same N real servers, the same schedule and the same failure rule:

    pymon      native `http` probe, interval 1s, timeout 1s, fall 1, rise 1,
               `virtual_services` (pymon owns the table, netlink)
    keepalived HTTP_GET, delay_loop 1, connect_timeout 1, retry 0 (one failed check
               marks it down, like fall 1), `keepalived -C` (checkers only, no VRRP)
    mon        Debian's mon with `http.monitor -p 80 -t 1`, interval 1s, one hostgroup
               per real server, alert/upalert `bench/lvs.alert` (the classic ipvsadm
               -d / -a script); the table is set up beforehand with ipvsadm, as an
               init script did

First, keepalived and pymon run side by side, each owning its own service (VIP:80 and
10.10.0.101:80) with its own N real servers (2N in the namespace), and their CPU per check
is measured over the same window (`--no-side-by-side` skips this): one after the other, the
same code measured 0.86 and 1.23 times keepalived's in two boots, as host load changes
between windows. Side by side takes that out, not the spread from boot to boot (0.92 to
1.11 at nearly the same code). Then each daemon alone, as below.

Measured for each, inside the same boot:
1. CPU per check: user+system CPU (/proc/PID/stat utime+stime+cutime+cstime) of the
   daemon's processes (pymon: the daemon; keepalived: parent + checker child; mon: mon,
   its monitors and alerts counted as its reaped children) over `--window` seconds after
   `--warmup`, divided by the checks done in the window, counted independently of the
   daemons: an nftables counter on SYNs from the director to the real servers' port 80.
2. Detection latency: a real server's httpd is killed (connections refused from then on);
   time from its exit until its entry is gone from the kernel table (or weight 0), read
   from /proc/net/ip_vs every 10 ms in-process; `--trials` times, at random phases.
   Recovery: httpd restarted and answering -> entry back with its weight.

`--tls`: HTTPS instead, CPU per check only (no detection trials): one nginx in the
namespace serving TLS 1.3 (self-signed P-256 certificate, session tickets) on port 443 of
every real server's address; keepalived `SSL_GET` beside pymon's `http` with `scheme:
https` twice, once with `tls_resume: true` and once with false ("pymon-full"), side by
side with their own N real servers each (section "Kernel: HTTPS"), or with
`--no-side-by-side` each alone, one after the other, on the same N (section "Kernel:
HTTPS at N real servers"); nginx logs whether each handshake resumed a session
(`$ssl_session_reused`), counted per daemon over the CPU window. Neither checks the
certificate here (keepalived's SSL_GET does not; pymon `verify: false`).

Many TLS real servers under TCG, where a handshake costs tens of ms of emulated CPU:

    python3 bench/kernel.py --tls --no-side-by-side --servers 1000 \
        --interval 120 --resumed-interval 50 --window 200 --timeout 2700

`--interval` stretches every daemon's schedule (the timeouts stay 1 s) so that the guest
keeps up; pymon resumes a session only for `exchange.RESUME_S` after its full handshake,
so its resumed row gets `--resumed-interval`, below that. Alone, keepalived runs first and
last (the ratios are against its mean). `--vs-servers` splits the real servers into
virtual services of that many (pymon: a hostgroup and watch each; a watch checks its hosts
together). The CPU window is `--window` rounded up to whole cycles.

Everything inside is bounded by `--timeout` (default 25 min for the whole VM).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from results import write_section  # bench/results.py (scripts run from bench/)

ROOT = Path(__file__).resolve().parent.parent
SECTION = "## Kernel: pymon vs keepalived vs mon"
TLS_SECTION = "## Kernel: HTTPS, pymon vs keepalived"
TLS_ALONE_SECTION = "## Kernel: HTTPS at {servers:,} real servers, pymon vs keepalived"  # each daemon alone
MARK = "KERNEL-BENCH-RESULT "

VIP, PORT = "10.10.0.100", 80
TLS = False  # --tls: PORT is 443 and one nginx serves HTTPS on every real server's address


def side_vip(k: int, j: int = 0) -> str:
    """The k-th daemon's j-th service: the first on VIP, 10.10.0.101, ... (one per daemon in
    the side-by-side window); with `--vs-servers`, the next ones on 10.11.0.1, ... (daemon 0),
    10.12.0.1, ... (daemon 1)."""
    return f"10.10.0.{100 + k}" if j == 0 else f"10.{11 + k}.{j // 256}.{j % 256}"


NET = "10.10.0.0/16"  # director 10.10.1.1 on the veth, real servers 10.10.1.10 ... (past .255: 10.10.2.0 ...)
NS = "rs"
INTERVAL = 1.0  # pymon interval / keepalived delay_loop / mon interval (--interval)
TIMEOUT = 1.0  # pymon timeout / keepalived connect_timeout / http.monitor -t
POLL = 0.01
OUT_POLL = 5.0  # the CPU window reads the table this often for real servers out of it (each read is guest CPU too)
MON = "/usr/sbin/mon"
HTTP_MONITOR = "/usr/lib/mon/mon.d/http.monitor"
KEEPALIVED = "/usr/sbin/keepalived"
LVS_ALERT = ROOT / "bench" / "lvs.alert"
TICK = os.sysconf("SC_CLK_TCK")


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def pct(xs: list[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100)."""
    if not xs:
        return float("nan")
    xs = sorted(xs)
    k = max(1, -(-len(xs) * p // 100))  # ceil(n*p/100), at least 1
    return xs[int(min(k, len(xs))) - 1]


# -- inside the VM ------------------------------------------------------------------------


def sh(cmd: str, check: bool = True, input: str | None = None) -> str:
    p = subprocess.run(cmd, shell=True, capture_output=True, text=True, input=input)
    if check and p.returncode != 0:
        raise RuntimeError(f"{cmd!r} failed ({p.returncode}): {p.stdout}{p.stderr}")
    return p.stdout


def rs_addr(i: int) -> str:
    n = 256 + 10 + i
    return f"10.10.{n // 256}.{n % 256}"


def hexaddr(addr: str, port: int) -> str:
    return f"{socket.inet_aton(addr).hex().upper()}:{port:04X}"


def ipvs_weights(vips: list[str]) -> dict[str, int]:
    """{real server 'HEXIP:HEXPORT': weight} of the virtual services vip:PORT, from /proc/net/ip_vs."""
    want = {f"TCP  {hexaddr(vip, PORT)}" for vip in vips}
    out: dict[str, int] = {}
    ours = False
    with open("/proc/net/ip_vs") as f:
        for line in f.read().splitlines()[3:]:
            if not line.startswith("  ->"):
                ours = line[:18] in want
            elif ours:
                fields = line.split()
                out[fields[1]] = int(fields[3])
    return out


def proc_cpu(pids: list[int]) -> tuple[float, float]:
    """(user, system) CPU seconds of the processes and their reaped children."""
    user = system = 0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        utime, stime, cutime, cstime = (int(x) for x in fields[11:15])
        user += utime + cutime
        system += stime + cstime
    return user / TICK, system / TICK


def syn_count(counter: str = "syns") -> int:
    out = sh(f"nft list counter inet kbench {counter}")
    m = re.search(r"packets (\d+)", out)
    assert m, out
    return int(m.group(1))


_libc: Any = None


def _enter_ns() -> None:  # in the child, between fork and exec: no `ip netns exec` process
    fd = os.open(f"/run/netns/{NS}", os.O_RDONLY)
    if _libc.setns(fd, 0x40000000) != 0:  # CLONE_NEWNET
        os._exit(111)
    os.close(fd)


class Backend:
    def __init__(self, i: int, root: Path):
        self.i, self.addr = i, rs_addr(i)
        self.key = hexaddr(self.addr, PORT)
        self.dir = root / f"rs{i}"
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "index.html").write_text(f"rs{i}\n")
        self.proc: subprocess.Popen[bytes] | None = None

    def answering(self) -> bool:
        try:
            socket.create_connection((self.addr, PORT), timeout=0.5).close()
            return True
        except OSError:
            return False

    def start(self) -> float:
        """Start httpd; returns the monotonic time it first accepted a connection."""
        self.proc = subprocess.Popen(["busybox", "httpd", "-f", "-p", f"{self.addr}:{PORT}", "-h", str(self.dir)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=_enter_ns)
        end = time.monotonic() + 60
        while time.monotonic() < end:
            if self.answering():
                return time.monotonic()
            if self.proc.poll() is not None:
                raise RuntimeError(f"httpd for {self.addr} exited {self.proc.returncode}")
            time.sleep(POLL)
        raise RuntimeError(f"httpd for {self.addr} did not answer within 60 s")

    def kill(self) -> float:
        """SIGKILL httpd; returns the monotonic time it was reaped (its socket is closed)."""
        assert self.proc
        self.proc.kill()
        self.proc.wait()
        self.proc = None
        return time.monotonic()


def topology(n: int, root: Path, sets: int = 1, services: int = 1) -> list[Backend]:
    """`sets` x n real servers and `sets` x `services` VIPs; SYNs are counted for all (`syns`)
    and per set of n (`syns0`, ...)."""
    global _libc
    import ctypes

    _libc = ctypes.CDLL(None, use_errno=True)
    sh("modprobe ip_vs")
    sh("ipvsadm -C")
    vips = "".join(f"addr add {side_vip(k, j)}/32 dev dummy0\n" for k in range(sets) for j in range(services))
    sh("ip link add dummy0 type dummy && ip link set dummy0 up")
    sh("ip -batch -", input=vips)
    sh(f"ip netns add {NS} && ip link add vrs type veth peer name eth0 netns {NS}")
    prefix = NET.split("/")[1]
    sh(f"ip addr add 10.10.1.1/{prefix} dev vrs && ip link set vrs up")
    addrs = "".join(f"addr add {rs_addr(i)}/{prefix} dev eth0\n" for i in range(n * sets))
    sh(f"ip -n {NS} -batch -", input=addrs + "link set eth0 up\nlink set lo up\n")
    # every check opens one TCP connection: count the SYNs the director sends to the real servers
    syn = f"tcp dport {PORT} tcp flags & (syn | ack) == syn"
    counters, rules = ["counter syns { }"], [f"ip daddr {NET} {syn} counter name syns"]
    for k in range(sets):
        counters.append(f"counter syns{k} {{ }}")
        rules.append(f"ip daddr {{ {', '.join(rs_addr(i) for i in range(k * n, (k + 1) * n))} }} {syn} "
                     f"counter name syns{k}")
    nl = "\n        "
    sh("nft -f -", input=f"""
table inet kbench {{
    {nl.join(counters)}
    chain out {{
        type filter hook output priority 0; policy accept;
        {nl.join(rules)}
    }}
}}
""")
    backends = [Backend(i, root) for i in range(n * sets)]
    if TLS:
        tls_server(root, backends)
        return backends
    for b in backends:
        b.start()
    return backends


TLS_LOG = Path("/tmp/kbench-nginx/access.log")


def tls_server(root: Path, backends: list[Backend]) -> None:
    """One nginx in the namespace, TLS on port 443 of every address; it stops with the VM."""
    d = TLS_LOG.parent
    for sub in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (d / sub).mkdir(parents=True, exist_ok=True)
    sh(f"openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=rs -days 2 "
       f"-keyout {d}/key.pem -out {d}/cert.pem")
    (d / "nginx.conf").write_text(f"""daemon off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    log_format bench '$msec $server_addr $ssl_session_reused';
    access_log {TLS_LOG} bench buffer=64k flush=1s;
    keepalive_timeout 0;
    client_body_temp_path {d}/body; proxy_temp_path {d}/proxy; fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;
    server {{
        listen {PORT} ssl;
        ssl_certificate {d}/cert.pem; ssl_certificate_key {d}/key.pem;
        location / {{ return 200 "ok\\n"; }}
    }}
}}
""")
    subprocess.Popen(["nginx", "-c", str(d / "nginx.conf"), "-p", str(d)], stdout=subprocess.DEVNULL,
                     stderr=subprocess.DEVNULL, preexec_fn=_enter_ns, start_new_session=True)
    if wait_until(lambda: all(b.answering() for b in backends[:1]), 60) is None:
        raise RuntimeError(f"nginx did not answer on {backends[0].addr}:{PORT}: {(d / 'error.log').read_text()}")


def tls_resumed(backends: list[Backend], t0: float, t1: float) -> tuple[int, int]:
    """(handshakes, of them resumed) logged by nginx for these real servers between the wall
    times t0 and t1 (nginx logs when the request ends: ms after the SYN the window counted)."""
    addrs, total, reused = {b.addr for b in backends}, 0, 0
    if TLS_LOG.exists():
        for line in TLS_LOG.read_text().splitlines():
            t, addr, r = line.split(" ")
            if addr in addrs and t0 <= float(t) < t1:
                total += 1
                reused += r == "r"
    return total, reused


class Daemon:
    """One daemon with its real servers, split into virtual services of `per_vs` (the k-th
    daemon's VIPs: `side_vip(k, j)`), checked every `interval`."""
    slug = name = checker = ""
    proc: subprocess.Popen[bytes] | None = None

    def __init__(self, tmp: Path, backends: list[Backend], k: int = 0, counter: str = "syns", per_vs: int = 0,
                 interval: float = 0.0):
        self.tmp, self.backends, self.counter = tmp / f"{self.slug}{k or ''}", backends, counter
        per_vs = per_vs or len(backends)
        self.services = [(side_vip(k, j), backends[i:i + per_vs]) for j, i in enumerate(range(0, len(backends), per_vs))]
        self.vips = [vip for vip, _ in self.services]
        self.interval = interval or INTERVAL
        self.cycle = self.interval  # the schedule's period: the CPU window is whole cycles
        self.tmp.mkdir()
        self.logf = self.tmp / "log"

    def weights(self) -> dict[str, int]:
        """{real server key: weight} over the daemon's virtual services, from the kernel."""
        return ipvs_weights(self.vips)

    def out_of_table(self) -> list[Backend]:
        """Its real servers not in the table with a weight, from one read of the kernel's."""
        w = self.weights()
        return [b for b in self.backends if w.get(b.key, 0) == 0]

    def start(self) -> None: ...

    def pids(self) -> list[int]:
        assert self.proc
        return [self.proc.pid]

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.proc = None
        # what the daemon left behind (another may run)
        left = {line.split()[1] for line in Path("/proc/net/ip_vs").read_text().splitlines()[3:]
                if not line.startswith("  ->")}
        gone = "".join(f"-D -t {vip}:{PORT}\n" for vip in self.vips if hexaddr(vip, PORT) in left)
        if gone:
            sh("ipvsadm -R", input=gone, check=False)

    def spawn(self, argv: list[str], env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen(argv, stdout=open(self.logf, "wb"), stderr=subprocess.STDOUT,
                                     start_new_session=True, env={**os.environ, **(env or {})})

    def breakdown(self, kills: list[tuple[str, float]], window_start: float, window: float) -> dict[str, Any]:
        return {}

    def tail(self, n: int = 15) -> str:
        try:
            return "\n".join(self.logf.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def alive(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            raise RuntimeError(f"{self.name} exited: {self.proc and self.proc.returncode}\n{self.tail()}")


class Pymon(Daemon):
    slug, name, checker = "pymon", "pymon", "native `http`"
    python = sys.executable  # the interpreter it runs on (--pythons)
    resume = True  # --tls: tls_resume

    def start(self) -> None:
        # one hostgroup and watch per virtual service: a watch checks its hosts together
        tls = f", scheme: https, verify: false, tls_resume: {str(self.resume).lower()}" if TLS else ""
        groups, watches, services = [], [], []
        for j, (vip, bs) in enumerate(self.services):
            g = f"web{j or ''}"
            groups.append(f"  {g}: [{', '.join(b.addr for b in bs)}]")
            watches.append(f"  {g}: {{http: {{monitor: {{name: http, port: {PORT}, path: /{tls}}}, "
                           f"interval: {self.interval:g}s, timeout: {TIMEOUT:g}s, fall: 1, rise: 1}}}}")
            services.append(f"  - {{vip: '{vip}:{PORT}', scheduler: wlc, forwarding: dr, watch: '{g}:http', "
                            f"real_servers: [{', '.join(b.addr for b in bs)}]}}")
        cfg = self.tmp / "pymon.yaml"
        cfg.write_text(f"""\
globals: {{statedir: {self.tmp}, mondir: {self.tmp}, alertdir: {self.tmp}, randstart: {self.interval:g}s}}
hostgroups:
{chr(10).join(groups)}
watch:
{chr(10).join(watches)}
virtual_services:
{chr(10).join(services)}
""")
        # `tls_resume` is refused on Pythons whose ssl module leaks every session it hands out
        # (Debian's 3.11): lifted for this bench, which measures its CPU
        lift = "from pymon.probes.http import verdict; verdict.SESSION_LEAKS = False; " if TLS and self.resume else ""
        # debug: `breakdown` reads the detection latency's parts from the log; --tls measures
        # CPU only, where a log line per check would count in it
        self.spawn([self.python, "-c", f"import sys; {lift}from pymon.cli import main; sys.exit(main(sys.argv[1:]))",
                    "run", "-c", str(cfg), "--log-level", "info" if TLS else "debug"],
                   env={"PYTHONPATH": str(ROOT / "src")})

    def breakdown(self, kills: list[tuple[str, float]], window_start: float, window: float) -> dict[str, Any]:
        """From pymon's own log: when it saw each failure (host.state down) and changed the table
        (ipvs.change), after the kill; and how long one check of the watch took in the CPU window."""
        from datetime import datetime

        events = []
        for line in self.logf.read_text(errors="replace").splitlines():
            try:
                e = json.loads(line)
                e["_t"] = datetime.fromisoformat(e["timestamp"].replace("Z", "+00:00")).timestamp()
            except (ValueError, KeyError, TypeError):
                continue
            events.append(e)
        noticed, changed = [], []
        for addr, t in kills:
            seen = next((e["_t"] - t for e in events if e["_t"] >= t and e.get("event") == "host.state"
                         and e.get("host") == addr and e.get("state") == "down"), None)
            op = next((e["_t"] - t for e in events if e["_t"] >= t and e.get("event") == "ipvs.change"
                       and f"{addr}:{PORT}" in str(e.get("op")) and not str(e.get("op")).startswith("add")), None)
            if seen is not None:
                noticed.append(seen)
            if op is not None:
                changed.append(op)
        # check.done of the CPU window (sampled by pymon; enough for a median)
        mono_to_wall = time.time() - time.monotonic()
        w0, w1 = window_start + mono_to_wall, window_start + window + mono_to_wall
        durations = [float(e["duration_s"]) for e in events if e.get("event") == "check.done"
                     and w0 <= e["_t"] <= w1 and "duration_s" in e]
        return {"noticed": noticed, "changed": changed, "check_s": durations}


class Keepalived(Daemon):
    slug, name, checker = "keepalived", "keepalived", "`HTTP_GET`"

    def start(self) -> None:
        def reals(bs: list[Backend]) -> str:
            return "".join(f"""
    real_server {b.addr} {PORT} {{
        weight 1
        {"SSL_GET" if TLS else "HTTP_GET"} {{
            url {{
                path /
                status_code 200
            }}
            connect_timeout {TIMEOUT:g}
            retry 0
            delay_before_retry {self.interval:g}
        }}
    }}""" for b in bs)
        cfg = self.tmp / "keepalived.conf"
        cfg.write_text("global_defs {\n    router_id kbench\n}\n" + "".join(f"""\
virtual_server {vip} {PORT} {{
    delay_loop {self.interval:g}
    lb_algo wlc
    lb_kind DR
    protocol TCP
{reals(bs)}
}}
""" for vip, bs in self.services))
        self.pidf, self.cpidf = self.tmp / "keepalived.pid", self.tmp / "checkers.pid"
        self.spawn([KEEPALIVED, "-n", "-l", "-C", "-f", str(cfg), "-p", str(self.pidf), "-c", str(self.cpidf),
                    "-r", str(self.tmp / "vrrp.pid")])

    def pids(self) -> list[int]:
        assert self.proc
        return [self.proc.pid, int(self.cpidf.read_text().split()[0])]


class Mon(Daemon):
    slug, name, checker = "mon", "mon + lvs.alert", "`http.monitor`"

    def start(self) -> None:
        # the init script's part: the virtual services and their real servers, before mon starts
        rules = [f"-A -t {vip}:{PORT} -s wlc\n" + "".join(f"-a -t {vip}:{PORT} -r {b.addr}:{PORT} -g -w 1\n" for b in bs)
                 for vip, bs in self.services]
        sh("ipvsadm -R", input="".join(rules))
        alertdir = self.tmp / "alert.d"
        alertdir.mkdir()
        shutil.copy(LVS_ALERT, alertdir / "lvs.alert")
        lines = [f"mondir = {Path(HTTP_MONITOR).parent}", f"alertdir = {alertdir}", "dtlogging = no",
                 f"randstart = {round(self.interval)}s", ""]
        for b in self.backends:
            lines += [f"hostgroup rs{b.i} {b.addr}", ""]
        for vip, b in ((vip, b) for vip, bs in self.services for b in bs):
            args = f"-P tcp -V {vip}:{PORT} -R {b.addr}:{PORT} -W 1 -F dr"
            lines += [f"watch rs{b.i}", "    service http", f"        interval {round(self.interval)}s",
                      f"        monitor http.monitor -p {PORT} -t {round(TIMEOUT)}",
                      "        period wd {Sun-Sat}", f"            alert lvs.alert {args}",
                      f"            upalert lvs.alert {args}", ""]
        cf = self.tmp / "mon.cf"
        cf.write_text("\n".join(lines))
        st = self.tmp / "state"
        st.mkdir()
        self.spawn([MON, "-c", str(cf), "-L", str(st), "-D", str(st), "-P", str(st / "pid"),
                    "-p", "2583", "-t", "2584"])


def wait_until(pred: Callable[[], bool], timeout: float, step: float = POLL) -> float | None:
    """Seconds until pred() held (polled every `step`), or None after `timeout`."""
    start = time.monotonic()
    while True:
        if pred():
            return time.monotonic() - start
        if time.monotonic() - start > timeout:
            return None
        time.sleep(step)


def started(d: Daemon, a: argparse.Namespace) -> dict[str, Any]:
    """Start the daemon and wait until its table is complete."""
    r: dict[str, Any] = {"daemon": d.name, "checker": d.checker, "servers": len(d.backends),
                         "services": len(d.services), "interval": d.interval}
    t0 = time.monotonic()
    d.start()
    n = len(d.backends)
    said = [t0]

    def all_in() -> bool:
        d.alive()
        left = len(d.out_of_table())
        if left and time.monotonic() - said[0] > 30:  # a start with 1,000 TLS real servers takes minutes
            said[0] = time.monotonic()
            log(f"{d.name}: {n - left} of {n} real servers in the table after {said[0] - t0:.0f} s")
        return not left

    took = wait_until(all_in, a.start_timeout, step=0.2 if n <= 100 else 1.0)
    if took is None:
        raise RuntimeError(f"{d.name}: table not complete after {a.start_timeout} s: {len(d.out_of_table())} of {n} real "
                           f"servers missing\n{d.tail()}")
    r["start_s"] = time.monotonic() - t0
    log(f"{d.name}: all {n} real servers in the table {r['start_s']:.1f} s after start")
    return r


def window_s(ds: list[Daemon], a: argparse.Namespace) -> float:
    """`--window` rounded up to whole cycles (the longest of `ds`): every real server is checked
    as often in it, whatever its phase, and does as many full and resumed TLS handshakes."""
    step = max(d.cycle for d in ds)
    return -(-a.window // step) * step


def cpu_window(ds: list[Daemon], rs: list[dict[str, Any]], window: float) -> None:
    """CPU per check of each daemon over the same window (--tls: and nginx's handshakes in it),
    and the real servers seen out of its table in the window (every real server is up)."""
    pids = [d.pids() for d in ds]
    out: list[set[str]] = [set() for _ in ds]
    t0, w0, c0, n0 = time.time(), time.monotonic(), [proc_cpu(p) for p in pids], [syn_count(d.counter) for d in ds]
    while (left := w0 + window - time.monotonic()) > 0:
        time.sleep(min(OUT_POLL, left))
        for d, o in zip(ds, out):
            o.update(b.key for b in d.out_of_table())
    t1, w1, c1, n1 = time.time(), time.monotonic(), [proc_cpu(p) for p in pids], [syn_count(d.counter) for d in ds]
    for d, r, a0, a1, m0, m1, o in zip(ds, rs, c0, c1, n0, n1, out):
        d.alive()
        r.update(window_start=w0, window_s=w1 - w0, cpu_s=sum(a1) - sum(a0), sys_s=a1[1] - a0[1], checks=m1 - m0,
                 load=os.getloadavg()[0], out=len(o))
        r["checks_per_s"] = r["checks"] / r["window_s"]
        r["us_per_check"] = r["cpu_s"] / max(r["checks"], 1) * 1e6
        log(f"{d.name}: {r['checks']} checks in {r['window_s']:.1f} s ({r['checks_per_s']:.1f}/s, expected "
            f"{len(d.backends) / d.interval:.1f}/s), CPU {r['cpu_s']:.2f} s = {r['us_per_check']:.0f} µs/check, "
            f"{r['out']} real servers seen out of the table")
    if TLS:
        time.sleep(1.5)  # nginx's log flush
        for d, r in zip(ds, rs):
            r["handshakes"], r["resumed"] = tls_resumed(d.backends, t0, t1)
            log(f"{d.name}: nginx logged {r['handshakes']} handshakes in the window, {r['resumed']} resumed")


def side_by_side(ds: list[Daemon], a: argparse.Namespace) -> list[dict[str, Any]]:
    """All of `ds` at once, each with its own service and real servers, measured over one
    window: a change in the host's load during the run slows them alike."""
    rs = []
    try:
        for d in ds:
            rs.append(started(d, a))
        log(f"side by side: warm-up {a.warmup:g} s")
        time.sleep(a.warmup)
        cpu_window(ds, rs, window_s(ds, a))
    finally:
        for d in ds:
            d.stop()
    return rs


def measure(d: Daemon, a: argparse.Namespace, rng: random.Random) -> dict[str, Any]:
    r = started(d, a)
    log(f"{d.name}: warm-up {a.warmup:g} s")
    time.sleep(a.warmup)
    d.alive()
    # 1. CPU per check
    cpu_window([d], [r], window_s([d], a))
    if TLS:  # CPU per check only
        d.stop()
        return r
    # 2. detection latency
    det: list[float | None] = []
    rec: list[float | None] = []
    kills: list[tuple[str, float]] = []
    false_downs: list[list[str]] = []
    for t in range(a.trials):
        b = d.backends[(t * 7) % len(d.backends)]
        time.sleep(rng.uniform(0, d.interval))  # a random phase against the check schedule
        # every real server is up: an entry missing now is a false down (a check that failed
        # against a healthy server); wait for it to come back so that the trial is clean
        missing = [x.addr for x in d.out_of_table()]
        if missing and (not rec or rec[-1] is not None):
            false_downs.append(missing)
            log(f"{d.name}: FALSE DOWN before trial {t + 1}: {missing} missing from the table, all are up")
            wait_until(lambda: not d.out_of_table(), a.trial_timeout)
        b.kill()  # returns once it is reaped: connections are refused from here on
        kills.append((b.addr, time.time()))
        lat = wait_until(lambda: d.weights().get(b.key, 0) == 0, a.trial_timeout)
        det.append(lat)
        up_at = b.start()
        back = wait_until(lambda: d.weights().get(b.key, 0) > 0, a.trial_timeout)
        if back is not None:
            back = time.monotonic() - up_at
        rec.append(back)
        log(f"{d.name}: trial {t + 1}/{a.trials} {b.addr}: detected "
            f"{'MISSED' if lat is None else f'{lat * 1000:.0f} ms'}, back "
            f"{'MISSED' if back is None else f'{back * 1000:.0f} ms'}")
    d.alive()
    r["detect"], r["recover"], r["false_downs"] = det, rec, false_downs
    r.update(d.breakdown(kills, r["window_start"], r["window_s"]))
    d.stop()
    return r


def python_label(py: str) -> str:
    """An interpreter as the tables name it: its version and installation (sys.base_prefix:
    /usr for Debian's python3 and a venv made from it)."""
    got = sh(f"{shlex.quote(py)} -c 'import platform, sys; print(platform.python_version(), sys.base_prefix)'",
             check=False).split()
    return f"Python {got[0]} in {got[1]}" if len(got) == 2 else py


def inside(a: argparse.Namespace) -> int:
    tmp = Path(tempfile.mkdtemp(prefix="kbench-"))
    rng = random.Random(a.seed)
    info = {"kernel": os.uname().release, "cpus": os.cpu_count(), "python": sys.version.split()[0],
            "keepalived": sh(f"{KEEPALIVED} -v 2>&1", check=False).splitlines()[0].strip(),
            "date": time.strftime("%Y-%m-%d %H:%M %Z"),
            "clocksource": sh("cat /sys/devices/system/clocksource/clocksource0/current_clocksource",
                              check=False).strip()}
    log(f"inside the VM: {info}")
    names = a.daemons.split(",")
    pythons = a.pythons.split(",") if a.pythons else [os.environ.get("PYMON_PYTHON", sys.executable)]
    labels = {py: python_label(py) for py in pythons}
    if len(set(labels.values())) < len(labels):  # one interpreter, different settings: name them by path
        labels = {py: f"{py}, {labels[py]}" for py in pythons}
    info["pythons"] = labels

    resume_s = load("src/pymon/probes/http/exchange.py").RESUME_S

    def make(name: str, tmp: Path, bs: list[Backend], k: int = 0, counter: str = "syns",
             py: str = pythons[0]) -> Daemon:
        resume = not name.endswith("-full")
        cls = {"keepalived": Keepalived, "mon": Mon, "pymon": Pymon}[name.removesuffix("-full")]
        interval = a.resumed_interval if TLS and cls is Pymon and resume else a.interval
        d = cls(tmp, bs, k, counter, a.vs_servers, interval)
        if isinstance(d, Pymon):
            d.python, d.resume = py, resume
            if TLS and resume and interval <= resume_s:  # a full handshake, then the checks that resume it
                d.cycle = (resume_s // interval + 1) * interval
            if len(pythons) > 1:
                d.name = f"pymon ({labels[py]})"
            if TLS:
                d.name, d.checker = f"pymon ({'resumed' if resume else 'full handshakes'})", "native `http`, https"
        elif TLS:
            d.checker = "`SSL_GET`"
        return d

    # side by side: keepalived and one pymon per interpreter; --tls: the daemons named, side by
    # side or one after the other
    if TLS:
        pair, names = ([(name, pythons[0]) for name in names], []) if a.side_by_side else ([], names)
    else:
        pair = ([("keepalived", pythons[0])] if "keepalived" in names else []) + (
            [("pymon", py) for py in pythons] if "pymon" in names else [])
        pair = pair if a.side_by_side and len(pair) > 1 else []
    services = -(-a.servers // (a.vs_servers or a.servers))
    every = topology(a.servers, tmp / "www", sets=max(1, len(pair)), services=services)
    log(f"topology: VIP {VIP}:{PORT}, {len(every)} real servers ({'one nginx, TLS' if TLS else 'busybox httpd'}) "
        f"in netns {NS}, {services} virtual service(s) per daemon")
    results: list[dict[str, Any]] = []
    side: list[dict[str, Any]] = []
    try:
        if pair:
            (tmp / "side").mkdir()
            n = a.servers
            ds = [make(name, tmp / "side", every[k * n:(k + 1) * n], k, f"syns{k}", py)
                  for k, (name, py) in enumerate(pair)]
            try:
                side = side_by_side(ds, a)
            except Exception as e:  # noqa: BLE001 - the runs one after the other still count
                log(f"side by side: FAILED: {e}")
                side = [{"daemon": d.name, "checker": d.checker, "servers": n, "error": str(e)[:2000]} for d in ds]
        backends = every[:a.servers]  # one after the other: each daemon with the same real servers
        for i, name in enumerate(names):
            bs = backends[: a.mon_servers] if name == "mon" else backends
            (tmp / f"{i}{name}").mkdir()
            d = make(name, tmp / f"{i}{name}", bs)
            if name in names[:i]:  # measured again (--tls: keepalived, before and after pymon)
                d.name += " (again)"
            try:
                results.append(measure(d, a, rng))
            except Exception as e:  # noqa: BLE001 - one daemon failing must not lose the others
                log(f"{d.name}: FAILED: {e}")
                results.append({"daemon": d.name, "checker": d.checker, "servers": len(bs), "error": str(e)[:2000]})
                d.stop()
    finally:
        for b in every:
            if b.proc:
                b.kill()
    print(MARK + json.dumps({"info": info, "results": results, "side": side}), flush=True)
    return 0


# -- on the host --------------------------------------------------------------------------


def load(relpath: str) -> Any:
    """A module of this tree by its path (tests/kernel/vm.py; pymon's exchange.py, stdlib only),
    whatever pymon the host's Python would import."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("kbench_" + relpath.replace("/", "_").removesuffix(".py"),
                                                  ROOT / relpath)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def run_vm(command: str, timeout: float) -> tuple[int, str]:
    """tests/kernel/vm.py's boot, with the guest's output streamed here as it comes."""
    vm = load("tests/kernel/vm.py")
    reason = vm.unavailable_reason()
    if reason:
        raise SystemExit(f"cannot boot a VM here: {reason}")
    kernel = vm.find_kernel()
    rwdir = Path(tempfile.mkdtemp(prefix="pymon-kbench-"))
    try:
        script, out, status = rwdir / "run.sh", rwdir / "output", rwdir / "status"
        exports = {"PYMON_IN_VM": "1", "PYMON_PYTHON": sys.executable, "PYTHONDONTWRITEBYTECODE": "1"}
        lines = ["#!/bin/sh", f"cd {shlex.quote(str(ROOT))} || exit 125"]
        lines += [f"export {k}={shlex.quote(v)}" for k, v in exports.items()]
        lines += [f"( {command} ) > {shlex.quote(str(out))} 2>&1", "rc=$?",
                  f"echo $rc > {shlex.quote(str(status))}", "exit $rc"]
        script.write_text("\n".join(lines) + "\n")
        cmd = vm.vng_command(kernel, script, rwdir, cwd=ROOT)
        log(f"booting {kernel} (TCG): {shlex.join(cmd)}")
        vng_log = rwdir / "vng.log"
        with open(vng_log, "wb") as vf:
            p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=vf, stderr=subprocess.STDOUT,
                                 start_new_session=True)
        seen, end = 0, time.monotonic() + timeout
        try:
            while p.poll() is None:
                if time.monotonic() > end:
                    log(f"timeout after {timeout:.0f} s: stopping the VM")
                    break
                time.sleep(2)
                if out.exists():
                    text = out.read_text(errors="replace")
                    for line in text[seen:].splitlines(keepends=True):
                        if not line.endswith("\n"):
                            break
                        seen += len(line)
                        if not line.startswith(MARK):
                            print("  vm| " + line, end="", flush=True)
        finally:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
                try:
                    p.wait(20)
                except subprocess.TimeoutExpired:
                    os.killpg(p.pid, signal.SIGKILL)
                    p.wait()
            else:  # vng exited; make sure nothing of its group (qemu, virtiofsd) outlives it
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        text = out.read_text(errors="replace") if out.exists() else ""
        for line in text[seen:].splitlines():
            if not line.startswith(MARK):
                print("  vm| " + line, flush=True)
        if not status.exists():
            print(vng_log.read_text(errors="replace")[-4000:], file=sys.stderr)
            return 124, text
        return int(status.read_text().strip() or 1), text
    finally:
        shutil.rmtree(rwdir, ignore_errors=True)


def pymon_version() -> str:
    """The pymon the VM ran: the host's working tree (shared read-only), so say if it had edits."""
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True).stdout.strip()
    head = git("rev-parse", "--short", "HEAD") or "unknown"
    dirty = git("status", "--porcelain", "--", "src/pymon")
    return f"{head}" + (" + uncommitted changes in src/pymon" if dirty else "")


def starts_and_loads(rows: list[dict[str, Any]]) -> tuple[str, str]:
    """Per daemon: seconds until its table was complete, and the guest's load after its window."""
    return (", ".join(f"{r['daemon']} {r['start_s']:.0f} s" for r in rows if "start_s" in r),
            ", ".join(f"{r['daemon']} {r['load']:.1f}" for r in rows if "load" in r))


def ms(x: float) -> str:
    return f"{x * 1000:,.0f}"


def ratio(rs: list[dict[str, Any]], r: dict[str, Any]) -> float | None:
    """A row's CPU per check ÷ keepalived's in one set of results (the mean of its windows when
    it was measured before and after the others)."""
    ka = [x["us_per_check"] for x in rs if x["daemon"].startswith("keepalived") and x.get("us_per_check")]
    mine = r.get("us_per_check")
    return mine / (sum(ka) / len(ka)) if mine and ka else None


def cpu_table(rs: list[dict[str, Any]], intervals: bool = False) -> list[str]:
    """The CPU-per-check rows; `intervals`: with each row's check interval (they may differ)."""
    iv = " interval |" if intervals else ""
    out = [f"| daemon | checker | real servers |{iv} checks in window (nft SYNs) | of schedule | CPU s (sys) "
           "| µs CPU / check | ÷ keepalived |", "|---|---|---:|" + ("---:|" if intervals else "") + "---:|---:|---:|---:|---:|"]
    for r in rs:
        each = f" {r.get('interval', INTERVAL):g} s |" if intervals else ""
        if "error" in r:
            out.append(f"| {r['daemon']} | {r['checker']} | {r['servers']:,} |{each} failed: {r['error'][:120]} | | | | |")
            continue
        x = ratio(rs, r)
        out.append(f"| {r['daemon']} | {r['checker']} | {r['servers']:,} |{each} {r['checks']:,} in {r['window_s']:.0f} s "
                   f"| {r['checks_per_s'] * r.get('interval', INTERVAL) / r['servers']:.0%} | {r['cpu_s']:.2f} "
                   f"({r['sys_s'] / (r['cpu_s'] or 1):.0%}) | {r['us_per_check']:,.0f} | {'' if x is None else f'{x:.2f}'} |")
    return out


def tls_report(data: dict[str, Any], a: argparse.Namespace, command: str) -> str:
    info, side = data["info"], data["side"]
    rs = side or data["results"]
    rows = cpu_table(rs, intervals=True)
    rows[0] += " TLS handshakes resumed (nginx) | real servers out of the table |"
    rows[1] += "---:|---:|"
    for i, r in enumerate(rs, 2):
        rows[i] += (f" {r['resumed']:,} of {r['handshakes']:,} | {r['out']} |" if "handshakes" in r else " | |")
    host_load = info["host_load"]
    ok = [r for r in rs if "error" not in r]
    n = rs[0]["servers"]
    services = max((r.get("services", 1) for r in rs), default=1)
    # keepalived runs a checker per real server, its first checks spread over delay_loop (`warmup`); pymon
    # checks a watch's hosts together, its watches' first checks spread over `randstart`
    split = (f"in {services} virtual services of {-(-n // services)} (pymon: one hostgroup and watch per virtual "
             f"service, the watches' checks spread over the interval; keepalived: the same virtual servers, a "
             f"checker per real server, spread over the interval)" if services > 1 else
             "in one virtual service (pymon: one hostgroup and watch, checked together once an interval; keepalived: "
             "a checker per real server, spread over the interval)")
    out = [
        TLS_ALONE_SECTION.format(servers=n) if not side else TLS_SECTION, "", f"    {command}", "",
        f"One qemu boot (TCG: every instruction emulated; ratios, not absolute figures, carry over), kernel "
        f"{info['kernel']}, {info['cpus']} vCPUs, clocksource {info['clocksource']}; {info['date']}; pymon at "
        f"{info['pymon']} on Python {info['python']}, {info['keepalived']}. Host 1-minute load average "
        f"{host_load[0]:.1f} before the boot, {host_load[1]:.1f} after it.", "",
        (f"Side by side over one window, each daemon with its own {n:,} real servers {split}" if side else
         f"Each daemon alone, one after the other, with the same {n:,} real servers {split}") +
        f": one nginx in the namespace serving TLS 1.3 on port {PORT} of every address (self-signed P-256 "
        f"certificate, session tickets); check interval per row, timeout {TIMEOUT:g} s, `retry 0` / `fall: 1`; no certificate "
        f"check on either side (keepalived's SSL_GET has none; pymon `verify: false`). CPU from /proc/PID/stat over "
        f"a window of whole intervals (`--window` rounded up), after the table was complete and `--warmup`; checks "
        f"counted by nftables (SYNs to port {PORT}), handshakes and resumptions by nginx, both in the window; real "
        f"servers out of the table: seen out of it (failed, all being up) in reads every {OUT_POLL:g} s in the window.", "",
        *rows, ""]
    if not side:
        by = {r["daemon"]: r for r in ok}
        mix, full = by.get("pymon (resumed)"), by.get("pymon (full handshakes)")
        rates = ", ".join(f"{r['daemon']} {r['servers'] / r['interval']:.1f}/s" for r in ok if "(again)" not in r["daemon"])
        notes = [f"- Why the intervals are stretched: under TCG one TLS check costs tens of ms of emulated CPU on "
                 f"each side (the elliptic-curve arithmetic of every handshake is emulated), so {n:,} checks a "
                 f"second would need tens of vCPUs where the guest has {info['cpus']}; the rates here: {rates} "
                 f"(`of schedule` shows a row the guest could not keep up with)."]
        if mix and mix.get("handshakes"):
            f = mix["resumed"] / mix["handshakes"]
            resume_s = load("src/pymon/probes/http/exchange.py").RESUME_S
            k = resume_s // mix["interval"]  # resumed checks after each full handshake
            notes.append(f"- pymon resumes a real server's session for {resume_s:g} s after its last full handshake "
                         f"(`exchange.RESUME_S`), so its resumed row checks every {mix['interval']:g} s: after each full "
                         f"handshake {'the next check' if k == 1 else f'the next {k:.0f} checks'} of a server "
                         f"resume{'s' if k == 1 else ''}, {k / (k + 1):.0%} of them over whole cycles (nginx counted {f:.0%}); to resume more, an interval below "
                         f"{resume_s / 2:g} s, {n / (resume_s / 2):.0f} checks a second and more. keepalived's `SSL_GET` "
                         f"never resumes.")
            if full and f > 0:
                alone_us = (mix["us_per_check"] - (1 - f) * full["us_per_check"]) / f
                x = ratio(ok, {"daemon": "", "us_per_check": alone_us})
                notes.append(f"- A resumed check alone, from the two pymon rows (µs of the resumed row minus its "
                             f"full-handshake share at the full row's cost, over the resumed share): about "
                             f"{alone_us:,.0f} µs" + (f", {x:.2f}× keepalived's full handshake" if x else "")
                             + " (an estimate: the two rows ran at different rates, in different windows).")
        kas = [r for r in ok if r["daemon"].startswith("keepalived")]
        if len(kas) > 1:
            notes.append(f"- keepalived measured first and last: {kas[0]['us_per_check']:,.0f} and "
                         f"{kas[-1]['us_per_check']:,.0f} µs per check ({kas[-1]['us_per_check'] / kas[0]['us_per_check'] - 1:+.0%}), "
                         f"the same work measured twice: the spread from window to window under emulation; the "
                         f"ratios are against the mean of the two.")
        starts, loads = starts_and_loads(ok)
        notes.append(f"- Table complete after start (pymon: after its first checks, within one interval): {starts}; "
                     f"then `--warmup` {a.warmup:g} s. Guest 1-minute load average after each window: {loads}.")
        out += ["Notes:", "", *notes, ""]
    return "\n".join(out)


def report(data: dict[str, Any], a: argparse.Namespace, command: str) -> str:
    info, results = data["info"], data["results"]
    bound = INTERVAL + TIMEOUT + 0.05  # detection: the wait for the next check, its timeout, 50 ms to act
    by = {r["daemon"]: r for r in results}
    pm = next((r for r in results if r["daemon"].startswith("pymon")), {})
    pythons = list((info.get("pythons") or {}).values())
    out = [SECTION, ""]
    out.append(
        f"One qemu boot (virtme-ng, **TCG**, no KVM: every instruction is emulated, so absolute CPU "
        f"figures are many times the native ones, for every daemon alike), Debian kernel {info['kernel']}, "
        f"{info['cpus']} vCPUs on a 2-core host shared with other jobs, clocksource "
        f"{info.get('clocksource', '?')}; {info['date']}; pymon at "
        f"{info.get('pymon', '?')} on {' and on '.join(pythons) or 'Python ' + info['python']}, "
        f"{info['keepalived']}, Debian mon 1.3 with `http.monitor`. Host 1-minute load average "
        f"{info['host_load'][0]:.1f} before the boot, {info['host_load'][1]:.1f} after it (the VM's own two "
        f"emulated CPUs count in it; other jobs on the host slow the emulated CPUs and make the guest's CPU "
        f"figures noisy: repeat runs differ by tens of per cent).")
    out += ["", f"    {command}", ""]
    out.append(
        f"Same for all three: IPVS service `TCP {VIP}:{PORT} wlc`, DR, real servers = one `busybox httpd` per "
        f"address in a network namespace behind a veth; check every {INTERVAL:g} s (pymon `interval`, keepalived "
        f"`delay_loop`, mon `interval`), timeout {TIMEOUT:g} s (pymon `timeout`, keepalived `connect_timeout`, "
        f"`http.monitor -t`), down after **one** failed check (pymon `fall: 1`, keepalived `retry 0`, mon's first "
        f"failure alerts), up after one good check (pymon `rise: 1`, keepalived's default, mon's upalert); first "
        f"checks spread over one interval (pymon/mon `randstart`, keepalived's default `warmup`).")
    side = data.get("side") or []
    if side:
        out += ["", f"**CPU per HTTP check, side by side**: {' and '.join(r['daemon'] for r in side)} at once, each "
                f"with its own service ({', '.join(side_vip(k) for k in range(len(side)))}) and its own "
                f"{a.servers} real servers, over one window", ""]
        out += cpu_table(side)
    out += ["", "**CPU per HTTP check, one after the other**" + (" (each alone, the same real servers)" if side else ""),
            ""]
    out += cpu_table(results)
    out += ["", f"**Detection latency** (httpd killed → entry gone from `/proc/net/ip_vs`, polled every "
            f"{POLL * 1000:.0f} ms; bound = interval + timeout + 50 ms = {ms(bound)} ms)", ""]
    out.append("| daemon | trials | detected | median ms | p95 ms | max ms | p95 ≤ bound | recovery median / p95 ms "
               "| false downs |")
    out.append("|---|---:|---:|---:|---:|---:|---|---:|---:|")
    for r in results:
        if "error" in r:
            continue
        det = [x for x in r["detect"] if x is not None]
        rec = [x for x in r["recover"] if x is not None]
        missed = len(r["detect"]) - len(det)
        p95 = pct(det, 95) if not missed else float("inf")
        meets = "yes" if p95 <= bound else "**no**"
        out.append(f"| {r['daemon']} | {len(r['detect'])} | {len(det)} | {ms(pct(det, 50))} | "
                   f"{'> timeout' if missed else ms(p95)} | {ms(max(det)) if det else ''} | {meets} | "
                   f"{ms(pct(rec, 50))} / {ms(pct(rec, 95))} | {len(r.get('false_downs', []))} |")
    said = [f"{r['daemon']}: **{x:.2f}** {how}" for how, rs in (("side by side", side), ("one after the other", results))
            for r in rs if r["daemon"].startswith("pymon") and (x := ratio(rs, r)) is not None]
    if said:
        out += ["", f"pymon / keepalived CPU per check (target ≤ 1.0): {'; '.join(said)}."]
    out += ["", "Notes:", ""]
    out.append("- CPU = utime+stime+cutime+cstime from `/proc/PID/stat` over the window (in brackets: the system part, stime+cstime): pymon's daemon process; "
               "keepalived's parent and its checker child (`-C`, no VRRP process); mon itself plus its reaped "
               "children (every `http.monitor` run). Checks are counted outside the daemons: an nftables counter "
               "on SYNs from the director to the real servers' port. CPU ticks are 10 ms.")
    out.append("- False downs: before each trial every real server is up; an entry missing from the table then is "
               "counted (and waited for, so that every trial starts from a full table).")
    out.append("- keepalived's recovery includes one more `delay_loop` after the first good check: without "
               "`fast_recovery` (not set here, its default) it re-checks the URLs with a delay after a failure "
               "(man keepalived.conf). pymon `rise: 1` and mon's upalert act on the first good check.")
    out.append("- Detection: from the reap of the killed httpd (from then on connections are refused at once, so "
               "the timeout does not come into it); the latency is the wait for the next check (uniform over "
               "one interval: trials start at random phases) plus the reaction. Recovery: from the restarted "
               "httpd's first accepted connection to the entry being back.")
    mon = by.get("mon + lvs.alert", {})
    if a.mon_servers < a.servers and mon.get("us_per_check"):
        out.append(f"- mon ran with {a.mon_servers} of the {a.servers} real servers (`--mon-servers`): under TCG "
                   f"every `http.monitor` run is a Perl start of {mon['us_per_check'] / 1e6:.1f} s of CPU, so even "
                   f"for {a.mon_servers} servers mon did {mon['checks_per_s'] * INTERVAL / mon['servers']:.0%} of its "
                   f"1 s schedule (mon starts a watch's next run only after the last one ended); with "
                   f"{a.servers} it would fall further behind. Its CPU per check hardly depends on N (one "
                   f"fork+exec per check); its detection latency here is mostly that lag, not mon's design "
                   f"(natively `http.monitor` costs ~18 ms of CPU: *Probes* above).")
    out.append("- TCG inflates every daemon's CPU, and not by the same factor (Python's interpreter loop, Perl's "
               "start over 9p, keepalived's C), so the ratio is the ratio *under emulation*; keepalived cannot run "
               "its checkers on this host (no ip_vs) for a native figure. pymon and mon on real hardware: the "
               "*Probes* and *Throughput* sections. Latency: the wait for the next check (median half an interval) "
               "is real time, but the reaction after it is emulated CPU work, inflated like the CPU figures.")
    if pm.get("noticed"):
        checks = pm.get("check_s") or []
        check = (f"; one check of the watch (all {pm['servers']} real servers' probes, gathered: the verdict waits "
                 f"for the last one) took {ms(pct(checks, 50))} ms median, {ms(pct(checks, 95))} ms p95 in the "
                 f"CPU window ({len(checks)} logged)") if checks else ""
        out.append(f"- pymon's latency, split with its own log (timestamps of `host.state` down and `ipvs.change`): "
                   f"failure known {ms(pct(pm['noticed'], 50))} ms median after the kill ({ms(pct(pm['noticed'], 95))} "
                   f"p95), table change logged {ms(pct(pm['changed'], 50))} ms median ({ms(pct(pm['changed'], 95))} "
                   f"p95){check}.")
    starts, loads = starts_and_loads(results)
    out.append(f"- Table complete after start: {starts} (a Python start costs about a minute under TCG); "
               f"then `--warmup` {a.warmup:g} s before the window. Guest 1-minute load average after each "
               f"window: {loads}.")
    return "\n".join(out) + "\n"


def main() -> int:
    global TLS, PORT, INTERVAL
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--servers", type=int, default=20, help="real servers (default 20)")
    ap.add_argument("--mon-servers", type=int, default=2,
                    help="real servers for mon (default 2: under TCG mon cannot keep a 1 s schedule for more)")
    ap.add_argument("--trials", type=int, default=20, help="detection trials per daemon (default 20)")
    ap.add_argument("--window", type=float, default=30.0, help="CPU window, seconds (default 30)")
    ap.add_argument("--warmup", type=float, default=10.0, help="seconds after the table is complete (default 10)")
    ap.add_argument("--daemons", help="which, in order (default keepalived,mon,pymon; --tls: keepalived,pymon,"
                                      "pymon-full, pymon-full being pymon without session resumption, and each "
                                      "alone: keepalived again at the end, the ratios against its mean)")
    ap.add_argument("--side-by-side", action=argparse.BooleanOptionalAction, default=True,
                    help="first measure keepalived's and pymon's CPU per check at once, in one window (default on); "
                         "--tls --no-side-by-side: each daemon alone, one after the other")
    ap.add_argument("--interval", type=float, default=INTERVAL,
                    help="check interval, seconds, of every daemon (pymon interval and randstart, keepalived "
                         "delay_loop, mon interval; default 1); the timeouts stay 1 s")
    ap.add_argument("--resumed-interval", type=float,
                    help="--tls: pymon with session resumption checks this often instead (default --interval); it "
                         "resumes a session for exchange.RESUME_S after its full handshake, so it needs an "
                         "interval below that")
    ap.add_argument("--vs-servers", type=int, default=0,
                    help="real servers per virtual service (default: all in one); pymon gets one hostgroup and watch "
                         "per virtual service, and a watch checks its hosts together")
    ap.add_argument("--pythons", default="",
                    help="comma-separated interpreters to run pymon on, each with pymon importable (default: the one "
                         "running this script); side by side, each runs its own pymon beside keepalived")
    ap.add_argument("--start-timeout", type=float, default=400.0, help="per daemon, until its table is complete")
    ap.add_argument("--trial-timeout", type=float, default=10.0)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--timeout", type=float, default=1500.0, help="for the whole VM run, seconds (default 1500)")
    ap.add_argument("--write", metavar="FILE", help=f"replace the '{SECTION}' section of FILE with the tables "
                                                    f"(--tls: '{TLS_SECTION}', or with --no-side-by-side the HTTPS "
                                                    f"section for N real servers)")
    ap.add_argument("--tls", action="store_true",
                    help="HTTPS: keepalived SSL_GET vs pymon with and without TLS session resumption, CPU per check only")
    ap.add_argument("--inside", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.tls:
        TLS, PORT = True, 443
    INTERVAL = a.interval
    a.resumed_interval = a.resumed_interval or a.interval
    a.daemons = a.daemons or ("keepalived,mon,pymon" if not a.tls else "keepalived,pymon,pymon-full" + (
        "" if a.side_by_side else ",keepalived"))
    a.mon_servers = min(a.mon_servers, a.servers)
    if a.inside:
        return inside(a)
    args = ["--servers", str(a.servers), "--mon-servers", str(a.mon_servers), "--trials", str(a.trials),
            "--window", f"{a.window:g}", "--warmup", f"{a.warmup:g}", "--daemons", a.daemons,
            "--start-timeout", f"{a.start_timeout:g}", "--trial-timeout", f"{a.trial_timeout:g}", "--seed", str(a.seed),
            "--side-by-side" if a.side_by_side else "--no-side-by-side", "--interval", f"{a.interval:g}",
            "--resumed-interval", f"{a.resumed_interval:g}", "--vs-servers", str(a.vs_servers)] + (
        ["--pythons", a.pythons] if a.pythons else []) + (["--tls"] if a.tls else [])
    inner = '"$PYMON_PYTHON" bench/kernel.py --inside ' + shlex.join(args)
    t0, load0 = time.monotonic(), os.getloadavg()[0]
    rc, text = run_vm(inner, a.timeout)
    log(f"VM finished: exit {rc}, {time.monotonic() - t0:.0f} s")
    found = [ln for ln in text.splitlines() if ln.startswith(MARK)]
    if not found:
        print("no result from the VM", file=sys.stderr)
        return 1
    data = json.loads(found[-1][len(MARK):])
    command = "python3 bench/kernel.py " + " ".join(sys.argv[1:])
    data["info"]["pymon"] = pymon_version()
    data["info"]["host_load"] = [load0, os.getloadavg()[0]]
    body = tls_report(data, a, command.strip()) if TLS else report(data, a, command.strip())
    section = body.split("\n", 1)[0]
    print()
    print(body)
    if a.write:
        write_section(Path(a.write), section, body)
        log(f"wrote the '{section}' section of {a.write}")
    return 0 if all("error" not in r for r in data["results"] + data["side"]) else 1


if __name__ == "__main__":
    sys.exit(main())
