#!/usr/bin/env python3
"""CPU per check: pymon's native probes against Debian's mon monitor scripts.

    python3 bench/probes.py [-n N] [--mon-n N] [--write bench/RESULTS.md]

Each probe checks one loopback peer that runs in its own process (so the peer's CPU
is not counted): `python3 -m http.server` for http, an accept-and-close loop for tcp, dnsmasq on 127.0.0.2:53
for dns (dns.monitor has no port option; needs root), the kernel for fping (ICMP to
127.0.0.1), the root filesystem for freespace.

- native: N checks, one after another, each through `pymon.engine.checks.run_check` (the
  daemon's own path: param handling, hard timeout, result mapping); CPU is this
  process's user+system time (resource.RUSAGE_SELF, all threads) divided by N.
- mon: the matching script from /usr/lib/mon/mon.d (freespace.monitor from
  mon-local.d) run as mon runs it, a fork+exec per check with mon's argv and
  MON_* environment (through pymon's legacy runner); CPU is the children's
  user+system time (RUSAGE_CHILDREN) divided by N. The parent's cost of forking is
  not counted, so the ratio is, if anything, in mon's favour.

Every check must pass, or the run stops: a benchmark of failing checks measures
error paths. A probe whose peer or script is missing is reported as n/a.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from results import write_section  # bench/results.py (scripts run from bench/)

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from pymon.engine.checks import run_check  # noqa: E402
from pymon.loader import load_all  # noqa: E402
from pymon.engine.rules import ServiceState  # noqa: E402

MON_D = [Path("/usr/lib/mon/mon.d"), Path("/usr/lib/mon/mon-local.d")]
SECTION = "## Probes"
TCP_PEER = """
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1])))
s.listen(128)
while True:
    s.accept()[0].close()
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(host: str, port: int, proto: str = "tcp", timeout: float = 10) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            if proto == "tcp":
                socket.create_connection((host, port), 0.2).close()
                return
            import dns.message
            import dns.query

            dns.query.udp(dns.message.make_query("www.example.test", "A"), host, port=port, timeout=0.2)
            return
        except Exception:  # noqa: BLE001 - not up yet
            time.sleep(0.05)
    raise RuntimeError(f"{host}:{port} did not come up")


class Peers:
    def __init__(self, tmp: Path) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []
        (tmp / "www").mkdir()
        (tmp / "www" / "index.html").write_text("hello\n")
        self.http_port = free_port()
        self.procs.append(subprocess.Popen(
            [sys.executable, "-m", "http.server", "--bind", "127.0.0.1", "-d", str(tmp / "www"), str(self.http_port)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        wait_port("127.0.0.1", self.http_port)
        # http.server takes ~100 ms to accept a connection that sends nothing; the tcp
        # peer is a plain accept-and-close loop instead.
        self.tcp_port = free_port()
        self.procs.append(subprocess.Popen([sys.executable, "-c", TCP_PEER, str(self.tcp_port)]))
        wait_port("127.0.0.1", self.tcp_port)
        self.dns = False
        if shutil.which("dnsmasq"):
            p = subprocess.Popen(
                ["dnsmasq", "--no-daemon", "--conf-file=/dev/null", "--pid-file=", "--no-resolv", "--no-hosts",
                 "--port=53", "--listen-address=127.0.0.2", "--bind-interfaces",
                 "--address=/www.example.test/127.0.0.9"],
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            try:
                wait_port("127.0.0.2", 53, "udp", 5)
                self.dns = True
                self.procs.append(p)
            except RuntimeError:
                p.kill()
                print(f"dns: dnsmasq could not serve 127.0.0.2:53: {p.communicate()[1]!r}", file=sys.stderr)

    def stop(self) -> None:
        for p in self.procs:
            p.terminate()
            p.wait(5)


def cases(peers: Peers) -> list[dict[str, Any]]:
    """(probe, native monitor, mon script command line, host)."""
    port = peers.http_port
    out = [
        {"probe": "http", "native": f"{{name: http, port: {port}, path: /}}",
         "mon": f"http.monitor -p {port} -u /", "host": "127.0.0.1"},
        {"probe": "tcp", "native": f"{{name: tcp, port: {peers.tcp_port}}}", "mon": f"tcp.monitor -p {peers.tcp_port}",
         "host": "127.0.0.1"},
        {"probe": "dns", "native": "{name: dns, query: www.example.test, type: A}",
         "mon": "dns.monitor -caching_only -query www.example.test:A", "host": "127.0.0.2",
         "skip": None if peers.dns else "no dnsmasq on 127.0.0.2:53"},
        {"probe": "fping", "native": "{name: fping, count: 1}", "mon": "fping.monitor", "host": "127.0.0.1",
         "skip_mon": None if shutil.which("fping") else "fping not installed"},
        {"probe": "freespace", "native": "{name: freespace, argv: ['/:1024']}", "mon": "freespace.monitor /:1024 ;;",
         "host": "localhost"},
    ]
    return out


def config(tmp: Path, c: dict[str, Any], which: str) -> Path:
    monitor = repr(c["mon"]) if which == "mon" else c["native"]
    mondir = [str(d) for d in MON_D] if which == "mon" else [str(tmp / "none")]
    cfg = tmp / f"{c['probe']}-{which}.yaml"
    cfg.write_text(f"""globals: {{mondir: {mondir}, alertdir: {tmp}, statedir: {tmp}}}
hostgroups: {{g: [{c['host']}]}}
watch:
  g:
    {c['probe']}:
      timeout: 10s
      monitor: {monitor}
""")
    return cfg


def cpu(who: int) -> float:
    r = resource.getrusage(who)
    return r.ru_utime + r.ru_stime


async def measure(cfg_path: Path, n: int, who: int) -> tuple[float, float]:
    """(CPU seconds per check, wall seconds per check)."""
    cfg, plugins = load_all(str(cfg_path))
    (svc,) = cfg.services.values()
    st = ServiceState(svc)
    for _ in range(min(5, n)):  # warm-up: imports, first connections
        await run_check(cfg, plugins, svc, st)
    c0, t0 = cpu(who), time.perf_counter()
    for _ in range(n):
        check = await run_check(cfg, plugins, svc, st)
        bad = {h: r.summary for h, r in check.results.items() if not r.ok}
        if bad:
            raise SystemExit(f"{cfg_path.name}: check failed: {bad} {check.output or ''}")
    return (cpu(who) - c0) / n, (time.perf_counter() - t0) / n


def machine() -> str:
    model = ""
    try:
        model = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                      if ln.startswith("model name")), "")
    except OSError:
        pass
    load = os.getloadavg()[0]
    return (f"{model or platform.processor()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
            f"load average {load:.1f} at the start (CPU times hold up under load better than wall times)")


async def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", type=int, default=300, help="checks per native probe (default 300)")
    ap.add_argument("--mon-n", type=int, default=40, help="checks per mon script (default 40)")
    ap.add_argument("--write", metavar="FILE", help=f"replace the '{SECTION}' section of FILE with the table")
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="pymon-bench-"))
    peers = Peers(tmp)
    rows = []
    try:
        for c in cases(peers):
            if c.get("skip"):
                rows.append((c["probe"], None, None, c["mon"].split()[0], None, None, c["skip"]))
                continue
            n_cpu, n_wall = await measure(config(tmp, c, "native"), a.n, resource.RUSAGE_SELF)
            m_cpu = m_wall = None
            note = c.get("skip_mon") or ""
            script = c["mon"].split()[0]
            if not note and not any((d / script).exists() for d in MON_D):
                note = f"{script} not installed (apt-get install mon)"
            if not note:
                m_cpu, m_wall = await measure(config(tmp, c, "mon"), a.mon_n, resource.RUSAGE_CHILDREN)
            rows.append((c["probe"], n_cpu, n_wall, script, m_cpu, m_wall, note))
            print(f"{c['probe']:<10} done", file=sys.stderr)
    finally:
        peers.stop()
        shutil.rmtree(tmp, ignore_errors=True)

    def us(x: float | None) -> str:
        return "n/a" if x is None else f"{x * 1e6:,.0f}"

    def ms(x: float | None) -> str:
        return "n/a" if x is None else f"{x * 1e3:.1f}"

    lines = ["| probe | native CPU µs/check | native wall ms | mon script | mon CPU µs/check | mon wall ms "
             "| mon/native CPU |", "|---|---:|---:|---|---:|---:|---:|"]
    for probe, n_cpu, n_wall, script, m_cpu, m_wall, note in rows:
        ratio = f"{m_cpu / n_cpu:,.0f}×" if m_cpu and n_cpu else "n/a"
        lines.append(f"| {probe} | {us(n_cpu)} | {ms(n_wall)} | `{script}` | {us(m_cpu)} | {ms(m_wall)} | {ratio}"
                     + (f" ({note})" if note else "") + " |")
    table = "\n".join(lines)
    print(table)
    if a.write:
        cmd = "python3 bench/probes.py" + (f" -n {a.n}" if a.n != 300 else "") + \
            (f" --mon-n {a.mon_n}" if a.mon_n != 40 else "") + f" --write {a.write}"
        section = (f"{SECTION}\n\nCPU (user+system) per check of one loopback host: pymon's native probe "
                   f"through the daemon's check path, versus Debian's mon script run as mon runs it "
                   f"(fork+exec per check; children's CPU only). {a.n} native / {a.mon_n} mon checks each, "
                   f"every one passing; {time.strftime('%Y-%m-%d')}, {machine()}.\n\n"
                   f"    {cmd}\n\n{table}\n\n"
                   "fping: one echo per check on both sides (`count: 1`; fping.monitor sends one "
                   "when the host answers). dns: dns.monitor `-caching_only -query NAME:A` against "
                   "dnsmasq, native `dns` with the same name (both: an A answer with NOERROR). freespace: `/:1024` (1 MiB).\n")
        write_section(Path(a.write), SECTION, section)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
