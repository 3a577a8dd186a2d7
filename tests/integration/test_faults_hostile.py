"""Hostile backends, clients, scripts, plugins and files: each fails only itself.

Every fault is real (servers and clients on loopback sockets, processes, files); the
test says what a user would see: the hostile one fails with a one-line reason, the
others keep their results, the schedule goes on."""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from pymon.probes.http import pool
from pymon.plugin import Target
from pymon.probes.http import lean as _http10
from pymon.probes import http as probe
from pymon.probes.http import verdict
from apiclient import Running
from daemons import Daemon, setup, starts
from httpserver import Server, free_port


class Canned:
    """A TCP server on loopback that answers every request with the same bytes and closes."""

    def __init__(self, answer: bytes, host: str = "127.0.0.1"):
        self.answer = answer
        self.sock = socket.create_server((host, 0))
        self.port = self.sock.getsockname()[1]
        self.stopped = False
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while not self.stopped:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                try:
                    conn.recv(65536)
                    conn.sendall(self.answer)
                except OSError:
                    pass

    def close(self) -> None:
        self.stopped = True
        self.sock.close()


HOSTILE_HEADS = {
    "superscript-two length": b"HTTP/1.0 503 X\r\nContent-Length: \xb2\r\n\r\n",
    "5000-digit length": b"HTTP/1.0 503 X\r\nContent-Length: " + b"9" * 5000 + b"\r\n\r\n",
    "5000-digit status": b"HTTP/1.0 " + b"5" * 5000 + b" X\r\n\r\n",
    "superscript length, 200": b"HTTP/1.0 200 OK\r\nContent-Length: \xb2\r\nX: y\r\n\r\n",
}
OK = b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nOK"


@pytest.fixture(params=[0, 1], ids=["in-loop", "one-worker"])
def workers(request: pytest.FixtureRequest) -> Iterator[int]:
    pool.configure(request.param, None)
    yield request.param
    pool.configure(0, None)


def test_parse_head_never_raises_on_a_hostile_length() -> None:
    assert _http10._parse_head(b"HTTP/1.0 503 X\r\nContent-Length: \xb2").content_length is None
    assert _http10._parse_head(b"HTTP/1.0 503 X\r\nContent-Length: " + b"9" * 5000).content_length is None


@pytest.mark.parametrize("name", list(HOSTILE_HEADS))
async def test_a_hostile_head_fails_its_host_and_not_the_others(workers: int, name: str) -> None:
    bad, good = Canned(HOSTILE_HEADS[name]), Canned(OK)
    try:
        bad_cfg = verdict.parse({"port": bad.port, "timeout": 2, "body_regex": "OK"})
        good_cfg = verdict.parse({"port": good.port, "timeout": 2})
        assert _http10.eligible(bad_cfg) and _http10.eligible(good_cfg)
        t = Target("127.0.0.1", "web", "http")
        pids = None
        for _ in range(3):  # the same batch, three rounds: the worker must survive each
            rb, rg = await asyncio.wait_for(asyncio.gather(_http10.check(t, bad_cfg), _http10.check(t, good_cfg)), 5)
            assert not rb.ok, rb
            assert "worker died" not in rb.summary
            assert rg.ok, rg
            now = [p.proc.pid for p in pool.POOL.places] if workers else []
            assert pids is None or now == pids  # the same worker: it never died
            pids = now
    finally:
        bad.close()
        good.close()


async def test_a_head_with_bare_lf_line_ends_is_read_as_aiohttp_reads_it(workers: int) -> None:
    srv = Canned(b"HTTP/1.0 200 OK\nContent-Type: text/plain\nContent-Length: 7\n\nall ok\n")
    try:
        for params in ({}, {"body_regex": "^all ok"}, {"header": {"content-type": "^text/plain$"}}):
            cfg = verdict.parse({"port": srv.port, "timeout": 2, **params})
            lean, full = await _http10.check(Target("127.0.0.1", "w", "h"), cfg), await probe.check(
                Target("127.0.0.1", "w", "h"), cfg)
            assert lean.ok and full.ok, (params, lean, full)
    finally:
        srv.close()


# -- the daemon, against hostile clients -------------------------------------------------


class Started(Daemon):
    """The daemon under `prlimit` (a soft fd limit like the default 1,024, only smaller)."""

    def __init__(self, cfg: Path, nofile: int = 0):
        argv = [sys.executable, "-m", "pymon", "run", "-c", str(cfg), "--log-level", "debug"]
        if nofile:
            argv = ["prlimit", f"--nofile={nofile}:{nofile}", *argv]
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.events: list[dict[str, Any]] = []
        self.raw: list[str] = []
        self._t = threading.Thread(target=self._read, daemon=True)
        self._t.start()


def http_config(tmp: Path, ports: dict[str, int], glob: str = "", extra: str = "") -> Path:
    cfg = tmp / "pymon.yaml"
    watch = "".join(f"    {name}: {{interval: 0.2s, monitor: {{name: http, port: {port}, timeout: 2}}, "
                    f"periods: [{{alert: [log], upalert: [log]}}]}}\n" for name, port in ports.items())
    cfg.write_text(f"globals: {{statedir: {tmp}, alertdir: {tmp}{glob}}}\n"
                   f"hostgroups: {{g: [127.0.0.1]}}\nwatch:\n  g:\n{watch}{extra}")
    return cfg


def test_idle_api_connections_cannot_exhaust_the_daemons_fds(tmp_path: Path, daemons: list[Daemon]) -> None:
    from pymon.ops import api

    good = Canned(OK)
    port = free_port()
    d = Started(http_config(tmp_path, {"web": good.port}, glob=f", control_port: {port}"), nofile=200)
    daemons.append(d)
    d.wait(lambda e: e["event"] == "daemon.ready")
    held = []
    for _ in range(400):  # twice the daemon's fd limit, never a byte sent
        s = socket.create_connection(("127.0.0.1", port))
        held.append(s)
    e = d.wait(lambda e: e["event"] == "api.too_many_connections")
    assert e["limit"] == api.MAX_CONNECTIONS
    t0 = time.monotonic()
    n = sum(1 for e in d.events if e.get("event") == "check.done")
    while sum(1 for e in d.events if e.get("event") == "check.done") < n + 5:  # checks go on
        assert time.monotonic() - t0 < 10, "checks stopped"
        time.sleep(0.1)
    # the idle connections the daemon kept are closed after IDLE_S
    time.sleep(api.IDLE_S + 2)
    for s in held:
        s.settimeout(0.5)
        try:
            assert s.recv(1) == b""
        except ConnectionResetError:
            pass
    for s in held:
        s.close()
    with socket.create_connection(("127.0.0.1", port)) as s:  # and a user gets in again
        s.sendall(b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        s.settimeout(5)
        assert s.recv(100).startswith(b"HTTP/1.0 200")
    downs = [e for e in d.events if e.get("event") == "host.state" and e.get("state") == "down"]
    assert not downs, [(e["summary"], e["timestamp"]) for e in downs]
    assert d.stop() == 0
    err = d.proc.stderr.read() if d.proc.stderr else ""
    assert "Traceback" not in err and "Too many open files" not in err, err[-2000:]
    good.close()


# -- legacy scripts ------------------------------------------------------------------------


def _script(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(0o755)
    return path


async def test_a_huge_last_output_does_not_break_the_next_exec(tmp_path: Path) -> None:
    from pymon.engine import legacy

    loud = _script(tmp_path / "loud.monitor", "#!/bin/sh\nhead -c 200000 /dev/zero | tr '\\0' x\nexit 1\n")
    first = await legacy.run([str(loud)], {}, 10)
    assert first.retval == 1 and len(first.output) == 200000
    env = legacy.monitor_env("g", "s", "", tmp_path, tmp_path, tmp_path, {}, {"MON_LAST_OUTPUT": first.output})
    show = _script(tmp_path / "show.monitor", "#!/bin/sh\nprintf %s \"$MON_LAST_OUTPUT\" | wc -c\n"
                   "printf %s \"$MON_LAST_OUTPUT\" | tail -c 60\n")
    second = await legacy.run([str(show)], env, 10)
    assert second.retval == 0 and not second.error, second  # before: "Argument list too long"
    size, tail = second.output.split("\n", 1)
    assert int(size) <= legacy.MAX_ENV_VALUE
    assert tail.endswith("[truncated by pymon: 200000 bytes in all]")


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def test_a_script_whose_child_leaves_its_session_leaks_nothing(tmp_path: Path) -> None:
    from pymon.engine import legacy

    pids = tmp_path / "pids"
    esc = _script(tmp_path / "escape.monitor",
                  f"#!/bin/sh\nsetsid sh -c 'echo $$ >> {pids}; exec sleep 300' &\necho started\nexit 0\n")
    before = _fds()
    for _ in range(3):
        r = await legacy.run([str(esc)], {}, 0.5)
        assert r.timed_out  # its output never ends while the escaped child holds it, as in mon
    await asyncio.sleep(0.2)
    assert _fds() <= before, "a pipe fd leaked per run"
    alive = []
    for pid in pids.read_text().split():
        try:
            st = Path(f"/proc/{pid}/status").read_text()
            if "\nState:\tZ" not in st:
                alive.append(pid)
        except FileNotFoundError:
            pass
    for pid in alive:
        os.kill(int(pid), 9)
    assert not alive, "the escaped children live on"


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_an_alert_script_that_exits_before_reading_its_input_is_reported(
        tmp_path: Path, loop: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """mon hands an alert its summary on stdin; a script that crashes before pymon gets
    to write it still has its end reported (on uvloop the write to the closed pipe
    raised, and the alert was never logged). The loop is held between the spawn and the
    write until the script has gone, as a busy loop holds it."""
    from pymon.engine import legacy

    gone = tmp_path / "gone"
    crash = _script(tmp_path / "crash.alert", f"#!/bin/sh\necho about to crash\ntouch {gone}\nkill -SEGV $$\n")
    spawn = asyncio.create_subprocess_exec

    async def spawn_then_wait(*args: Any, **kw: Any) -> asyncio.subprocess.Process:
        proc = await spawn(*args, **kw)
        while not gone.exists():
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.3)  # the loop sees the exit and the pipes close
        return proc

    monkeypatch.setattr(asyncio, "create_subprocess_exec", spawn_then_wait)
    run = legacy.run([str(crash)], {}, 5, stdin="host down\n" * 100)
    if loop == "uvloop":
        uvloop = pytest.importorskip("uvloop", reason="uvloop is in the test extra; not installed here")
        r = uvloop.run(run)
    else:
        r = asyncio.run(run)
    assert (r.retval, r.output, r.error) == (-11, "about to crash\n", "")
    assert legacy.exit_text(r.retval) == "killed by signal 11 (SIGSEGV)"


# -- config files ----------------------------------------------------------------------------


def _check_config(path: Path, timeout: float = 20) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pymon", "check-config", "-c", str(path)],
                          capture_output=True, text=True, timeout=timeout)


def test_a_duration_cannot_stall_the_reader() -> None:
    from pymon.model.config import parse_duration

    for s in ("1 " * 20 + "x", "1" * 40 + "x", "1 1 1 1 1 1 1 1 1 1 1 1x", "1 " * 5000):
        t0 = time.monotonic()
        with pytest.raises(ValueError):
            parse_duration(s)
        assert time.monotonic() - t0 < 0.1, s[:30]
    assert parse_duration("1h 30m") == 5400 and parse_duration("1 h 30 m") == 5400 and parse_duration("10ms") == 0.01
    for bad in (float("nan"), float("inf"), -1, "9" * 400 + "w"):
        with pytest.raises(ValueError):
            parse_duration(bad)


def test_a_fifo_a_huge_file_or_a_billion_laughs_is_a_one_line_error(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo.yaml"
    os.mkfifo(fifo)
    r = _check_config(fifo)
    assert r.returncode != 0 and f"{fifo}:1:1: cannot read config: not a regular file" in r.stderr + r.stdout
    huge = tmp_path / "huge.yaml"
    with open(huge, "wb") as f:
        f.truncate(40 * 1024 * 1024)
    r = _check_config(huge)
    assert r.returncode != 0 and "more than the limit of 33554432" in r.stderr + r.stdout
    laughs = tmp_path / "laughs.yaml"
    laughs.write_text('a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n' + "".join(
        f"{n}: &{n} [{', '.join(['*' + p] * 9)}]\n" for p, n in zip("abcdefgh", "bcdefghi")))
    assert len(laughs.read_bytes()) < 700
    p = subprocess.Popen([sys.executable, "-m", "pymon", "check-config", "-c", str(laughs)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = p.communicate(timeout=30)
    assert p.returncode != 0 and "aliases expand to more than 2,000,000 values" in out + err
    assert "Traceback" not in out + err


def _services(tmp: Path, n: int) -> str:
    return "  g:\n" + "".join(f"    s{i}:\n      interval: 0.3s\n      monitor: {{name: rec, dir: \"{tmp}\"}}\n"
                   f"      periods: [{{alert: [log]}}]\n" for i in range(n))


def test_a_plugin_that_hangs_at_import_fails_that_reload_only(tmp_path: Path, daemons: list[Daemon]) -> None:
    cfg = setup(tmp_path, _services(tmp_path, 1), glob=", config_timeout: 2s")
    d = Started(cfg)
    daemons.append(d)
    d.wait(lambda e: e["event"] == "daemon.started")
    hang = tmp_path / "monitors" / "hang.py"
    hang.write_text("import time\ntime.sleep(300)\n")
    d.proc.send_signal(signal.SIGHUP)
    e = d.wait(lambda e: e["event"] == "config.invalid", timeout=15)
    assert "took more than 2s; killed" in e["problems"][0]
    hang.unlink()
    cfg.write_text(cfg.read_text().replace("interval: 0.3s", "interval: 0.4s"))
    d.proc.send_signal(signal.SIGHUP)  # the next reload works
    d.wait(lambda e: e["event"] == "config.reloaded", timeout=15)
    assert d.proc.poll() is None


def test_a_slow_rewrite_is_not_taken_half_written(tmp_path: Path, daemons: list[Daemon]) -> None:
    cfg = setup(tmp_path, _services(tmp_path, 10))
    d = Started(cfg)
    daemons.append(d)
    d.wait(lambda e: e["event"] == "daemon.started")
    full = cfg.read_text().replace("interval: 0.3s", "interval: 0.35s")
    with open(cfg, "w") as f:  # in place, slowly, a SIGHUP halfway
        cut = full.index("    s2:")
        f.write(full[:cut])
        f.flush()
        d.proc.send_signal(signal.SIGHUP)
        time.sleep(0.3)
        f.write(full[cut:])
    e = d.wait(lambda e: e["event"] in ("config.reloaded", "config.invalid"), timeout=15)
    assert e["event"] == "config.reloaded" and e["services"] == 10, e
    # and a config with no service at all is refused while services run
    cfg.write_text(cfg.read_text().split("watch:")[0] + "watch: {}\n")
    d.proc.send_signal(signal.SIGHUP)
    e = d.wait(lambda e: e["event"] == "config.invalid", timeout=15)
    assert "the new config has no services, the running one has 10: refusing" in e["problems"][0]


# -- API clients with the token, careless or hostile ---------------------------------------


def test_api_for_cannot_block_the_loop_nor_poison_status(pymon: Running) -> None:  # noqa: F811
    pymon.d.wait(lambda e: e["event"] == "daemon.ready")
    for bad in ("1" * 25 + "x", "12" * 13 + "x"):
        t0 = time.monotonic()
        code, body = pymon.call("POST", "/disable/host/127.0.0.2", {"for": bad})
        assert code == 400 and "bad duration" in body["error"]
        assert time.monotonic() - t0 < 1.0
    # NaN and 1e999 (Python's json reads them as NaN and Infinity)
    for raw in (b'{"for": NaN}', b'{"for": 1e999}', b'{"for": -5}'):
        conn = http.client.HTTPConnection("127.0.0.1", pymon.port, timeout=10)
        conn.request("POST", "/disable/host/127.0.0.2", body=raw,
                     headers={"Authorization": f"Bearer {pymon.token}", "Content-Type": "application/json"})
        resp = conn.getresponse()
        assert resp.status == 400, (raw, resp.status, resp.read())
        conn.close()
    code, st = pymon.call("GET", "/status")
    assert code == 200
    json.loads(json.dumps(st), parse_constant=lambda c: pytest.fail(f"{c} in /status"))


def test_a_deeply_nested_json_body_is_a_400(pymon: Running) -> None:  # noqa: F811
    conn = http.client.HTTPConnection("127.0.0.1", pymon.port, timeout=10)
    conn.request("POST", "/disable/host/127.0.0.2", body=b"[" * 100000 + b"]" * 100000,
                 headers={"Authorization": f"Bearer {pymon.token}", "Content-Type": "application/json"})
    resp = conn.getresponse()
    assert resp.status == 400 and b"nested" in resp.read()
    assert pymon.call("GET", "/health")[0] == 200


# -- state files ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["state.json", "vrrp.json"])
def test_a_deeply_nested_state_file_is_moved_aside(tmp_path: Path, daemons: list[Daemon], name: str) -> None:
    cfg = setup(tmp_path, _services(tmp_path, 1))
    (tmp_path / name).write_text("[" * 200000 + "]" * 200000)
    d = Started(cfg)
    daemons.append(d)
    e = d.wait(lambda e: e["event"] in ("state.corrupt", "vrrp.state_corrupt"))
    assert "RecursionError" in e["error"] and e["moved_to"]
    assert Path(e["moved_to"]).exists() and not (tmp_path / name).exists()
    d.wait(lambda e: e["event"] == "daemon.started")
    assert d.stop() == 0


def test_a_vrrp_report_from_the_far_future_cannot_freeze_the_role(pymon: Running) -> None:  # noqa: F811
    code, body = pymon.call("POST", "/vrrp/VI_1", {"state": "MASTER", "time": 1e308})
    assert code == 400 and "clock" in body["error"]
    assert pymon.call("POST", "/vrrp/VI_1", {"state": "MASTER"})[0] == 200
    code, body = pymon.call("POST", "/vrrp/VI_1", {"state": "BACKUP"})
    assert code == 200 and body["state"] == "BACKUP" and body["changed"]


# -- plugins --------------------------------------------------------------------------------------


def test_a_symlink_to_a_world_writable_plugin_is_refused(tmp_path: Path) -> None:
    cfg = setup(tmp_path, _services(tmp_path, 1))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    target = elsewhere / "evil.py"
    ran = tmp_path / "evil-ran"
    target.write_text(f"open({str(ran)!r}, 'w').close()\n")
    target.chmod(0o666)
    (tmp_path / "monitors" / "evil.py").symlink_to(target)
    r = _check_config(cfg)
    assert r.returncode != 0 and f"-> {target} is world-writable" in r.stderr + r.stdout, r.stderr
    assert not ran.exists(), "the world-writable plugin ran"


def test_a_plugin_dir_under_a_world_writable_dir_is_refused(tmp_path: Path) -> None:
    open_dir = tmp_path / "open"
    open_dir.mkdir()
    open_dir.chmod(0o777)  # anyone may rename mondir away and put their own in its place
    (open_dir / "sub").mkdir()
    cfg = setup(open_dir / "sub", _services(open_dir / "sub", 1))
    r = _check_config(cfg)
    assert r.returncode != 0 and f"{open_dir} (above" in r.stderr + r.stdout, r.stderr
    open_dir.chmod(0o1777)  # sticky, like /tmp: accepted
    assert _check_config(cfg).returncode == 0


SWALLOW = '''
import asyncio
from pymon.plugin import monitor, Result

@monitor("swallow")
async def swallow(target, params):
    while True:
        try:
            await asyncio.sleep(100)
        except asyncio.CancelledError:
            pass

@monitor("leak")
async def leak(target, params):
    for _ in range(300):
        asyncio.get_running_loop().create_task(asyncio.sleep(3600))
    return Result(True, "fine")
'''


def test_a_probe_that_swallows_cancellation_is_abandoned(tmp_path: Path, daemons: list[Daemon]) -> None:
    cfg = setup(tmp_path, _services(tmp_path, 1) + "    stuck:\n      interval: 0.3s\n      timeout: 0.5s\n"
                "      monitor: {name: swallow}\n      periods: [{alert: [log]}]\n"
                "    leaky:\n      interval: 0.3s\n      monitor: {name: leak}\n      periods: [{alert: [log]}]\n")
    (tmp_path / "monitors" / "swallow.py").write_text(SWALLOW)
    d = Started(cfg)
    daemons.append(d)
    e = d.wait(lambda e: e["event"] == "check.abandoned", timeout=15)
    assert e["service"] == "stuck"
    d.wait(lambda e: e["event"] == "host.state" and e["service"] == "stuck" and e["state"] == "down", timeout=10)
    n = len(starts(tmp_path, "s0"))
    e = d.wait(lambda e: e["event"] == "loop.tasks_leaking", timeout=20)
    assert any(name.startswith("sleep") for name in e["most_common"]), e
    assert len(starts(tmp_path, "s0")) > n  # the other service goes on
    assert sum(1 for e in d.events if e["event"] == "check.abandoned") == 1  # said once
    t0 = time.monotonic()
    assert d.stop() == 0
    assert time.monotonic() - t0 < 15


# -- alerts ----------------------------------------------------------------------------------------

COUNTING = """#!/bin/sh
mkdir "$PIDS/run.$$"
ls -d "$PIDS"/run.* | wc -l >> "$PIDS/concurrent"
sleep 0.5
rmdir "$PIDS/run.$$"
echo done >> "$PIDS/alerts"
"""


def test_a_trap_storm_runs_at_most_max_alert_procs_alerts_at_once(tmp_path: Path, daemons: list[Daemon]) -> None:
    from apiclient import call, wait_socket

    pids = tmp_path / "pids"
    pids.mkdir()
    _script(tmp_path / "count.alert", COUNTING.replace("$PIDS", str(pids)))
    cfg = setup(tmp_path, "  g:\n    p:\n      traptimeout: 1h\n      periods: [{alert: [count.alert], "
                "upalert: [count.alert]}]\n", glob=", max_alert_procs: 2")
    d = Started(cfg)
    daemons.append(d)
    sock = tmp_path / "pymon.sock"
    wait_socket(sock)
    token = (tmp_path / "token").read_text().strip()
    for i in range(20):  # fail, ok, fail...: an alert or an upalert each
        code, _ = call(sock, "POST", "/trap/g/p", token, {"status": "ok" if i % 2 else "fail", "summary": f"t{i}"})
        assert code == 200
    end = time.monotonic() + 30
    while len((pids / "alerts").read_text().split()) < 20 if (pids / "alerts").exists() else True:
        assert time.monotonic() < end, "alerts were dropped"
        time.sleep(0.2)
    assert max(int(n) for n in (pids / "concurrent").read_text().split()) <= 2
    assert any(e["event"] == "alert.queued" for e in d.events)
    # a huge trap summary is kept bounded
    code, _ = call(sock, "POST", "/trap/g/p", token, {"status": "fail", "summary": "x" * 500_000,
                                                      "detail": "y" * 400_000})
    assert code == 200
    code, st = call(sock, "GET", "/status", token)
    p = next(s for s in st["services"] if s["service"] == "p")
    assert len(json.dumps(p)) < 40_000, len(json.dumps(p))


# -- m4 --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["import-mon", "check-config"])
def test_m4_never_runs_a_command_from_a_config(tmp_path: Path, how: str) -> None:
    inc = tmp_path / "inc.m4"
    inc.write_text(f"esyscmd(`touch {tmp_path}/ran-esyscmd')dnl\nbuiltin(`syscmd', `touch {tmp_path}/ran-builtin')\n")
    included = tmp_path / "included.cf"
    included.write_text(f"dnl an m4 config\ninclude(`{inc}')\nhostgroup g 127.0.0.1\n")
    direct = tmp_path / "direct.cf"
    direct.write_text(f"dnl an m4 config\nsyscmd(`touch {tmp_path}/ran-syscmd')\nhostgroup g 127.0.0.1\n")
    for cf in (direct, included):
        argv = ["import-mon", "--check", str(cf)] if how == "import-mon" else ["check-config", "-c", str(cf)]
        r = subprocess.run([sys.executable, "-m", "pymon", *argv], capture_output=True, text=True, timeout=60)
        assert "Traceback" not in r.stderr
    assert not list(tmp_path.glob("ran-*")), "m4 ran a command"
    r = subprocess.run([sys.executable, "-m", "pymon", "import-mon", "--check", str(direct)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and f"{direct}:2: m4: syscmd is refused" in r.stderr + r.stdout


def _req(port: int, method: str, path: str, headers: dict[str, str] | None = None,
         body: bytes | None = None) -> tuple[int, dict[str, str], bytes]:
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    c.request(method, path, body=body, headers=headers or {})
    r = c.getresponse()
    data = r.read()
    c.close()
    return r.status, {k.lower(): v for k, v in r.getheaders()}, data


def test_the_page_cookie_is_a_session_not_the_token(pymon: Running) -> None:  # noqa: F811
    code, headers, _ = _req(pymon.port, "GET", f"/login?token={pymon.token}")
    assert code == 303
    cookie = headers["set-cookie"].split(";")[0]
    assert pymon.token not in cookie
    assert _req(pymon.port, "GET", "/status", {"Cookie": cookie})[0] == 200
    # the token itself as the cookie is not a session
    assert _req(pymon.port, "GET", "/status", {"Cookie": f"pymon_token={pymon.token}"})[0] == 401


def test_a_foreign_host_header_is_refused_on_tcp(pymon: Running) -> None:  # noqa: F811
    auth = {"Authorization": f"Bearer {pymon.token}"}
    for host in ("evil.example", "evil.example:%d" % pymon.port, "127.0.0.1.nip.io"):
        code, _, body = _req(pymon.port, "GET", "/status", {**auth, "Host": host})
        assert code == 421 and b"is not this daemon's" in body, (host, code)
    for host in ("localhost", f"127.0.0.1:{pymon.port}", "[::1]", f"LOCALHOST:{pymon.port}"):
        assert _req(pymon.port, "GET", "/status", {**auth, "Host": host})[0] == 200, host


def test_follow_redirects_is_the_documented_name(server: Server) -> None:  # noqa: F811
    cfg = verdict.parse({"port": server.port, "path": "/redirect", "follow_redirects": True})
    assert cfg.redirects == 10
    with pytest.raises(Exception, match="same param"):
        verdict.parse({"port": server.port, "follow_redirects": True, "redirects": 2})


@pytest.mark.parametrize("token, mode", [("x", 0o600), ("a-long-enough-token-0123456789", 0o644)])
def test_a_weak_or_exposed_token_file_is_refused_loudly(tmp_path: Path, daemons: list[Daemon], token: str,
                                                        mode: int) -> None:
    from apiclient import wait_socket

    (tmp_path / "token").write_text(token + "\n")
    (tmp_path / "token").chmod(mode)
    port = free_port()
    d = Started(setup(tmp_path, _services(tmp_path, 1), glob=f", control_port: {port}"))
    daemons.append(d)
    e = d.wait(lambda e: e["event"] == "api.token_refused")
    assert e["level"] == "error" and e["file"] == str(tmp_path / "token")
    wait_socket(tmp_path / "pymon.sock")
    # the token is what TCP callers need (the socket knows its peers by their credentials)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", "/status", headers={"Authorization": f"Bearer {token}"})
    assert conn.getresponse().status == 401
    conn.close()


def test_a_change_that_cannot_be_saved_is_not_a_200(tmp_path: Path, daemons: list[Daemon],
                                                    mount_tmpfs: Any, fill_disk: Any) -> None:
    from apiclient import call, wait_socket

    small = mount_tmpfs("small", "size=256k")
    cfg = setup(tmp_path, _services(tmp_path, 1))
    cfg.write_text(cfg.read_text().replace(f"statedir: {tmp_path}", f"statedir: {small}"))
    d = Started(cfg)
    daemons.append(d)
    sock = small / "pymon.sock"
    wait_socket(sock)
    token = (small / "token").read_text().strip()
    assert call(sock, "POST", "/disable/host/h1", token, {"reason": "fine"})[0] == 200
    fill_disk(small / "filler")
    code, body = call(sock, "POST", "/disable/host/h2", token, {"reason": "lost at restart"})
    assert code == 507 and body["persisted"] is False and "could not be written" in body["error"]
    (small / "filler").unlink()
    assert call(sock, "POST", "/enable/host/h2", token)[0] == 200


# -- capabilities -------------------------------------------------------------------------------

CAPCHECK = """
import asyncio
from pymon.engine import legacy

async def main():
    for keep in (False, True):
        r = await legacy.run(["/bin/grep", "^CapEff", "/proc/self/status"], {}, 5, keep_caps=keep)
        print(keep, r.output.split()[1])

asyncio.run(main())
"""


def test_legacy_scripts_lose_the_daemons_capabilities_unless_keep_caps() -> None:
    """As under systemd: a non-root daemon with CAP_NET_ADMIN ambient (setpriv plays systemd)."""
    import shutil

    from pymon.engine import legacy

    py = "/usr/bin/python3"
    if os.geteuid() != 0 or not shutil.which("setpriv") or not os.access(py, os.X_OK):
        pytest.skip("needs root, setpriv and a system python3 for an unprivileged user")
    src = str(Path(legacy.__file__).parents[2])
    r = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=+net_admin",
                        "--ambient-caps=+net_admin", "env", f"PYTHONPATH={src}", py, "-c", CAPCHECK],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    eff = dict(ln.split() for ln in r.stdout.splitlines())
    assert int(eff["False"], 16) == 0, "a script kept CAP_NET_ADMIN"
    assert int(eff["True"], 16) & (1 << 12), "keep_caps: true must keep CAP_NET_ADMIN"


def test_keep_caps_is_a_monitor_and_alert_flag(tmp_path: Path) -> None:
    from pymon.loader import load_config

    mon = tmp_path / "x.monitor"
    _script(mon, "#!/bin/sh\nexit 0\n")
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"globals: {{mondir: {tmp_path}, alertdir: {tmp_path}, statedir: {tmp_path}}}\n"
                   "hostgroups: {g: [h]}\nwatch:\n  g:\n    s:\n      monitor: {name: x.monitor, keep_caps: true}\n"
                   "      periods: [{alert: [{name: log, keep_caps: false}]}]\n")
    c = load_config(cfg)
    s = c.services[("g", "s")]
    assert s.monitor.keep_caps is True and "keep_caps" not in s.monitor.params
    assert s.periods[0].alert[0].keep_caps is False


def test_with_one_probe_worker_a_hostile_backend_changes_no_other_result(tmp_path: Path,
                                                                          daemons: list[Daemon]) -> None:
    bad = Canned(HOSTILE_HEADS["superscript-two length"])
    worse = Canned(HOSTILE_HEADS["5000-digit status"])
    good = Canned(OK)
    cfg = http_config(tmp_path, {"bad": bad.port, "worse": worse.port, "good": good.port}, glob=", probe_workers: 1")
    d = Started(cfg)
    daemons.append(d)
    for name in ("bad", "worse"):  # each goes down for its own answer, and nothing else does
        e = d.wait(lambda e, name=name: e["event"] == "host.state" and e["service"] == name and e["state"] == "down",
                   timeout=15)
    time.sleep(3)
    downs = [e for e in d.events if e["event"] == "host.state" and e["state"] == "down"]
    assert sorted(e["service"] for e in downs) == ["bad", "worse"], downs
    assert not [e for e in d.events if e["event"] == "probe.worker_died"]
    assert sum(1 for e in d.events if e["event"] == "check.done" and e["service"] == "good" and e["ok"]) >= 5
    assert d.stop() == 0
    for s in (bad, worse, good):
        s.close()
