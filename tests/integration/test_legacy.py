"""mon's exec protocol with Debian's real mon scripts and a classic Getopt::Std alert."""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from aiohttp import web

MON_D = Path("/usr/lib/mon/mon.d")
ALERT_D = Path("/usr/lib/mon/alert.d")
needs_mon = pytest.mark.skipif(not (MON_D / "tcp.monitor").exists(),
                               reason="Debian's mon package is not installed (apt-get install mon)")

# A classic lvs.alert-style alert: Getopt::Std with -P -V -R -W -F -X plus mon's flags.
GETOPT_ALERT = r"""#!/usr/bin/perl
use Getopt::Std;
my @orig = @ARGV;
getopts("s:g:h:t:uP:V:R:W:F:X:", \%o) or die "bad args";
my $stdin = do { local $/; <STDIN> };
open(OUT, ">>", $ENV{ALERT_OUT}) or die;
print OUT join("\x1f", "ARGV", @orig), "\n";
print OUT "OPTS ", join(" ", map { "$_=$o{$_}" } sort keys %o), "\n";
print OUT "ENV $ENV{MON_ALERTTYPE} $ENV{MON_GROUP} $ENV{MON_SERVICE} $ENV{MON_RETVAL}\n";
print OUT "STDIN $stdin\n";
close OUT;
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_cfg(tmp: Path, body: str) -> Path:
    cfg = tmp / "pymon.yaml"
    cfg.write_text(body)
    return cfg


def pymon(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pymon", *args], capture_output=True, text=True, timeout=timeout)


@needs_mon
def test_debian_tcp_monitor_via_pymon_test(tmp_path: Path) -> None:
    port = free_port()
    cfg = write_cfg(tmp_path, f"""
globals: {{mondir: {MON_D}, statedir: {tmp_path}}}
hostgroups: {{lo: [127.0.0.1]}}
watch: {{lo: {{tcp: {{monitor: tcp.monitor -p {port}, timeout: 10s}}}}}}
""")
    r = pymon("test", "-c", str(cfg), "lo", "tcp")
    assert r.returncode == 1, r.stdout + r.stderr
    assert "FAILED: 127.0.0.1" in r.stdout
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", port))
        srv.listen(5)
        r = pymon("test", "-c", str(cfg), "lo", "tcp")
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.strip().endswith("lo:tcp: ok")


@needs_mon
def test_debian_http_monitor_against_aiohttp(tmp_path: Path) -> None:
    port = free_port()

    async def main() -> tuple[str, str]:
        async def ok(request: web.Request) -> web.Response:
            return web.Response(text="fine")

        async def broken(request: web.Request) -> web.Response:
            return web.Response(status=500, text="boom")

        app = web.Application()
        app.router.add_get("/", ok)
        app.router.add_get("/broken", broken)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        outs = []
        for url in ("/", "/broken"):
            cfg = write_cfg(tmp_path, f"""
globals: {{mondir: {MON_D}, statedir: {tmp_path}}}
hostgroups: {{lo: [127.0.0.1]}}
watch: {{lo: {{www: {{monitor: "http.monitor -p {port} -u {url}"}}}}}}
""")
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "pymon", "test", "-c", str(cfg), "lo", "www",
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
            out, _ = await proc.communicate()
            outs.append(f"{proc.returncode} {out.decode()}")
        await runner.cleanup()
        return outs[0], outs[1]

    good, bad = asyncio.run(main())
    assert good.startswith("0 "), good
    assert bad.startswith("1 ") and "FAILED: 127.0.0.1" in bad, bad


@needs_mon
def test_monitor_timeout_kills_process_group(tmp_path: Path) -> None:
    mondir = tmp_path / "mon.d"
    mondir.mkdir()
    script = mondir / "hang.monitor"
    pidfile = tmp_path / "child.pid"
    script.write_text(f"#!/bin/sh\nsleep 300 &\necho $! > {pidfile}\nwait\n")
    script.chmod(0o755)
    cfg = write_cfg(tmp_path, f"""
globals: {{mondir: {mondir}, statedir: {tmp_path}}}
hostgroups: {{g: [a, b]}}
watch: {{g: {{hang: {{monitor: hang.monitor, timeout: 1s}}}}}}
""")
    t0 = time.monotonic()
    r = pymon("test", "-c", str(cfg), "g", "hang")
    assert time.monotonic() - t0 < 10
    assert r.returncode == 1
    assert "timeout after 1s" in r.stdout
    child = int(pidfile.read_text())
    time.sleep(0.2)
    assert not _alive(child), "the monitor's child survived its timeout"


def test_monitor_argv_hosts_and_double_semicolon(tmp_path: Path) -> None:
    mondir = tmp_path / "mon.d"
    mondir.mkdir()
    script = mondir / "args.monitor"
    out = tmp_path / "argv"
    script.write_text(f"#!/bin/sh\nprintf '%s|' \"$@\" >> {out}\necho >> {out}\n"
                      f"echo \"$MON_GROUP $MON_SERVICE\" >> {out}\nexit 0\n")
    script.chmod(0o755)
    cfg = write_cfg(tmp_path, f"""
globals: {{mondir: {mondir}, statedir: {tmp_path}}}
hostgroups: {{g: [h1, 'h2;rm -rf /', h3]}}
watch:
  g:
    a: {{monitor: [args.monitor, -x, "a b"], exclude_hosts: [h3]}}
    b: {{monitor: "args.monitor -y ;;"}}
""")
    assert pymon("test", "-c", str(cfg), "g", "a").returncode == 0
    assert pymon("test", "-c", str(cfg), "g", "b").returncode == 0
    lines = out.read_text().splitlines()
    assert lines == ["-x|a b|h1|h2;rm -rf /|", "g a", "-y|", "g b"]


def test_failing_summary_names_hosts(tmp_path: Path) -> None:
    mondir = tmp_path / "mon.d"
    mondir.mkdir()
    (mondir / "half.monitor").write_text("#!/bin/sh\necho h2\necho 'h2: broken'\nexit 3\n")
    (mondir / "half.monitor").chmod(0o755)
    cfg = write_cfg(tmp_path, f"""
globals: {{mondir: {mondir}, statedir: {tmp_path}}}
hostgroups: {{g: [h1, h2]}}
watch: {{g: {{half: {{monitor: half.monitor}}}}}}
""")
    r = pymon("test", "-c", str(cfg), "g", "half")
    assert r.returncode == 1
    rows = {ln.split()[0]: ln.split()[1] for ln in r.stdout.splitlines()[:2]}
    assert rows == {"h1": "ok", "h2": "FAIL"}


@needs_mon
@pytest.mark.skipif(shutil.which("perl") is None, reason="perl is not installed")
def test_daemon_alerts_reach_real_scripts(tmp_path: Path) -> None:
    """Real daemon, Debian's tcp.monitor + file.alert, and a Getopt::Std alert asserting its argv."""
    port = free_port()
    alertdir = tmp_path / "alert.d"
    alertdir.mkdir()
    (alertdir / "lvs.alert").write_text(GETOPT_ALERT)
    (alertdir / "lvs.alert").chmod(0o755)
    shutil.copy(ALERT_D / "file.alert", alertdir / "file.alert")
    out = tmp_path / "lvs.out"
    cfg = write_cfg(tmp_path, f"""
globals: {{mondir: {MON_D}, alertdir: {alertdir}, statedir: {tmp_path}}}
hostgroups: {{lo: [127.0.0.1]}}
watch:
  lo:
    web:
      interval: 1s
      timeout: 5s
      monitor: tcp.monitor -p {port}
      env: {{ALERT_OUT: "{out}"}}
      periods:
        - alertevery: 1h
          alert:
            - lvs.alert -P tcp -V 10.0.0.1:80 -R 127.0.0.1 -W 0 -F dr -X down
            - file.alert -d {tmp_path} alerts.log
          upalert:
            - lvs.alert -P tcp -V 10.0.0.1:80 -R 127.0.0.1 -W 1 -F dr
""")
    proc = subprocess.Popen([sys.executable, "-m", "pymon", "run", "-c", str(cfg)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        _wait_for(lambda: out.exists() and "-X" in out.read_text(), 15)
        with socket.socket() as srv:
            srv.bind(("127.0.0.1", port))
            srv.listen(5)
            _wait_for(lambda: "-u" in out.read_text(), 15)
    finally:
        proc.terminate()
        logs, _ = proc.communicate(timeout=20)
    assert proc.returncode == 0, logs
    text = out.read_text().splitlines()
    argvs = [ln.split("\x1f")[1:] for ln in text if ln.startswith("ARGV")]
    down, up = argvs[0], argvs[1]
    assert down[:6] == ["-s", "web", "-g", "lo", "-h", "127.0.0.1"]
    assert down[6] == "-t" and down[7].isdigit()
    assert down[8:] == ["-P", "tcp", "-V", "10.0.0.1:80", "-R", "127.0.0.1", "-W", "0", "-F", "dr", "-X", "down"]
    assert up[8:] == ["-u", "-P", "tcp", "-V", "10.0.0.1:80", "-R", "127.0.0.1", "-W", "1", "-F", "dr"]
    assert "ENV failure lo web 1" in text
    assert "ENV up lo web 0" in text
    stdin_lines = [ln for ln in text if ln.startswith("STDIN")]
    assert stdin_lines[0].startswith("STDIN 127.0.0.1")
    # alertevery 1h: exactly one down alert despite many failed checks
    assert sum(1 for a in argvs if "-u" not in a) == 1
    # Debian's file.alert wrote its record
    record = (tmp_path / "alerts.log").read_text()
    assert "failure lo web" in record and "could not connect" in record
    events = [json.loads(ln) for ln in logs.splitlines() if ln.startswith("{")]
    sent = [e for e in events if e["event"] == "alert.sent"]
    assert {(e["type"], e["alert"]) for e in sent} >= {("alert", "lvs.alert"), ("alert", "file.alert"),
                                                       ("upalert", "lvs.alert")}
    assert all("argv" in e and "exit" in e and "duration_s" in e for e in sent)


def _alive(pid: int) -> bool:
    """Running, as opposed to gone or a zombie waiting for a reaper."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "\nState:\tZ" not in status


def _wait_for(cond, timeout: float) -> None:  # type: ignore[no-untyped-def]
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return
        time.sleep(0.1)
    raise AssertionError("condition not met in time")
