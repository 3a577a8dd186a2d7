"""State across restarts: the file format, atomic writes under kill -9, a corrupt file,
an unwritable state dir, and a real daemon restarted with a disabled host, an ack and a
failing service."""

from __future__ import annotations

import asyncio
import gc
import json
import os
import random
import signal
import subprocess
import sys
import time
import weakref
from pathlib import Path
from typing import Any, AsyncIterator, Callable

import pytest

from apiclient import call, wait_socket
from daemons import Daemon, setup

from pymon.engine import gc_policy
from pymon.ops import control, persist
from pymon import logs
from pymon.model.config import parse_config
from pymon.app import Daemon as PymonDaemon
from pymon.plugin import Result
from pymon.engine.rules import ServiceState


class Log:
    def __init__(self) -> None:
        self.lines: list[tuple[str, str, dict[str, Any]]] = []

    def _add(self, level: str, event: str, **kw: Any) -> None:
        self.lines.append((level, event, kw))

    def info(self, event: str, **kw: Any) -> None:
        self._add("info", event, **kw)

    def warning(self, event: str, **kw: Any) -> None:
        self._add("warning", event, **kw)

    def error(self, event: str, **kw: Any) -> None:
        self._add("error", event, **kw)

    def events(self) -> list[str]:
        return [e for _, e, _ in self.lines]


CFG = """
hostgroups: {g: [h1, h2, h3]}
watch:
  g:
    s:
      monitor: ping
      fall: 2
      periods: [{alertevery: 1h, alert: [log]}, {period: "wd {Sun}", alert: [log]}]
"""


def test_service_snapshot_roundtrip() -> None:
    cfg = parse_config(CFG, "x.yaml")
    spec = cfg.services[("g", "s")]
    st = ServiceState(spec)
    for t in (1.0, 2.0, 3.0):
        st.observe(t, {"h1": Result(True, "fine"), "h2": Result(False, "refused"), "h3": Result(True, "ok")})
    st.acked = "on it"
    snap = json.loads(json.dumps(persist.snapshot_service(st)))
    back = ServiceState(spec)
    persist.restore_service(back, snap, ["h1", "h2", "h3"])
    assert back.status == "fail" and back.failing_hosts == ["h2"] and back.acked == "on it"
    assert (back.consec_failures, back.failure_count, back.first_failure) == (2, 2, 2.0)
    assert back.hosts["h2"].consec_fail == 3 and back.hosts["h2"].last_bad == Result(False, "refused")
    assert [p.alert_sent for p in back.periods] == [p.alert_sent for p in st.periods]
    # a host that left the group is dropped, and with it the failure
    gone = ServiceState(spec)
    persist.restore_service(gone, snap, ["h1", "h3"])
    assert "h2" not in gone.hosts and gone.status == "untested"


def test_services_encoded_in_slices_make_one_document() -> None:
    """The daemon encodes its services a slice per loop pass; the file must read back
    as if written at once (an empty slice included: every service removed by a reload)."""
    cfg = parse_config(CFG, "x.yaml")
    states = []
    for i in range(3):
        st = ServiceState(cfg.services[("g", "s")])
        st.observe(float(i), {"h1": Result(i != 1, f"try {i}")})
        states.append(((f"g{i}", "s"), st))
    data = persist.State().to_json()
    whole = {**data, "services": {persist.service_key(k): persist.snapshot_service(st) for k, st in states}}
    pieces = [persist.services_json(states[:1]), persist.services_json([]), persist.services_json(states[1:])]

    def read(slices: list[bytes]) -> Any:
        async def source() -> AsyncIterator[bytes]:
            for piece in slices:
                yield piece

        async def parts() -> list[bytes]:
            return [p async for p in persist.stream(data, source())]

        return json.loads(b"".join(asyncio.run(parts())))

    assert read(pieces) == json.loads(b"".join(persist.encode(whole)))
    assert read([])["services"] == {}
    assert read(pieces)["services"]["g1:s"]["hosts"]["h1"]["last"]["summary"] == "try 1"


def test_store_roundtrip_and_tmp_cleanup(tmp_path: Path) -> None:
    log = Log()
    store = persist.Store(tmp_path, log)
    st = persist.State()
    st.disable("host", "web2", "maintenance", 10.0, 3610.0, "root")
    st.acks["g:s"] = persist.Ack("looking", 11.0, "root")
    for i in range(persist.HISTORY_MAX + 5):
        st.add_history({"i": i})
    assert store.save(persist.encode(st.to_json()))
    assert oct(tmp_path.joinpath("state.json").stat().st_mode & 0o777) == "0o600"
    (tmp_path / ".state.json.tmp999").write_text("half a wri")  # a crash mid-write
    back = store.load()
    assert back.is_disabled("host", "web2").reason == "maintenance"  # type: ignore[union-attr]
    assert back.is_disabled("host", "web2", now=4000.0) is None  # expired
    assert back.acks["g:s"].comment == "looking"
    assert len(back.history) == persist.HISTORY_MAX and back.history[-1] == {"i": persist.HISTORY_MAX + 4}
    assert not (tmp_path / ".state.json.tmp999").exists()
    assert log.events() == []


@pytest.mark.parametrize("content", [b"{not json", b"\xff\xfe", b'{"version": 99}', b"[]",
                                     b'{"version": 1, "disabled": {"host": {"x": 5}}}'])
def test_corrupt_file_is_moved_aside(tmp_path: Path, content: bytes) -> None:
    (tmp_path / "state.json").write_bytes(content)
    log = Log()
    st = persist.Store(tmp_path, log).load()
    assert st.to_json()["disabled"] == {"host": {}, "service": {}, "watch": {}}
    level, event, kw = log.lines[0]
    assert (level, event) == ("warning", "state.corrupt") and kw["action"] == "starting clean"
    aside = list(tmp_path.glob("state.json.corrupt-*"))
    assert len(aside) == 1 and aside[0].read_bytes() == content and kw["moved_to"] == str(aside[0])
    assert not (tmp_path / "state.json").exists()


def test_unwritable_dir_logs_once_and_recovers(tmp_path: Path) -> None:
    blocker = tmp_path / "notadir"
    blocker.write_text("")
    log = Log()
    store = persist.Store(blocker, log)  # every write fails with ENOTDIR, even as root
    assert not store.save(persist.encode({"version": 1}))
    assert not store.save(persist.encode({"version": 1}))
    assert log.events() == ["state.write_failed"]
    blocker.unlink()
    blocker.mkdir()
    assert store.save(persist.encode({"version": 1}))
    assert log.events() == ["state.write_failed", "state.write_recovered"]


WRITER = r"""
import sys, json
from pymon.ops import persist
class L:
    def __getattr__(self, n): return lambda *a, **k: None
store = persist.Store(sys.argv[1], L())
gen = 0
while True:
    gen += 1
    st = persist.State()
    st.history = [{"gen": gen, "pad": "x" * 200, "i": i} for i in range(3000)]  # ~700 kB per write
    d = st.to_json(); d["gen"] = gen
    store.save(persist.encode(d))
    print(gen, flush=True)
"""


def test_kill_9_during_writes_leaves_an_intact_file(tmp_path: Path) -> None:
    rng = random.Random(5)
    last_gen = 0
    for _ in range(12):
        p = subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path)], stdout=subprocess.PIPE, text=True)
        assert p.stdout is not None
        p.stdout.readline()  # at least one complete write
        time.sleep(rng.uniform(0.0, 0.3))
        p.send_signal(signal.SIGKILL)
        p.wait()
        raw = json.loads((tmp_path / "state.json").read_bytes())  # never torn
        assert raw["history"][0]["gen"] == raw["history"][-1]["gen"] == raw["gen"] and len(raw["history"]) == 3000
        assert raw["gen"] >= 1
        last_gen = raw["gen"]
        log = Log()
        persist.Store(tmp_path, log).load()
        assert log.events() == [] and not list(tmp_path.glob(".state.json.tmp*"))
    assert last_gen >= 1


# -- a real daemon, restarted ---------------------------------------------------------------


def _run(cfg: Path, daemons: list[Daemon]) -> Daemon:
    d = Daemon(cfg)
    daemons.append(d)
    return d


def test_restart_keeps_disabled_host_ack_and_failure(tmp_path: Path, daemons: list[Daemon]) -> None:
    cfg = setup(tmp_path, f"""  g:
    s:
      interval: 0.2s
      monitor: {{name: rec, dir: "{tmp_path}"}}
      periods: [{{alert: [log], upalert: [log]}}]
""", groups="g: [h1, h2, h3]")
    sock, token_file = tmp_path / "pymon.sock", tmp_path / "token"
    (tmp_path / "down-h2").touch()
    d = _run(cfg, daemons)
    d.wait(lambda e: e["event"] == "alert.log" and e["type"] == "alert")
    wait_socket(sock)
    token = token_file.read_text().strip()
    assert oct(token_file.stat().st_mode & 0o777) == "0o600" and len(token) >= 32
    assert call(sock, "POST", "/ack/g/s", token, {"comment": "replacing the disk"})[0] == 200
    code, body = call(sock, "POST", "/disable/host/h3", token, {"reason": "maintenance", "for": "1h"})
    assert code == 200 and body["disabled"]["reason"] == "maintenance"
    assert body["disabled"]["until"] == pytest.approx(time.time() + 3600, abs=5)
    assert d.stop() == 0
    saved = json.loads((tmp_path / "state.json").read_text())
    assert saved["services"]["g:s"]["status"] == "fail" and saved["acks"]["g:s"]["comment"] == "replacing the disk"
    alerts_before = sum(1 for e in d.events if e["event"] == "alert.log" and e["type"] == "alert")

    (tmp_path / "starts").unlink()
    d2 = _run(cfg, daemons)
    wait_socket(sock)
    assert token_file.read_text().strip() == token  # the same token across restarts
    code, st = call(sock, "GET", "/status", token)
    assert code == 200
    svc = st["services"][0]
    assert svc["status"] == "fail" and svc["failing"] == ["h2"] and svc["acked"] == "replacing the disk"
    hosts = {h["host"]: h for h in svc["hosts"]}
    assert hosts["h3"]["state"] == "disabled" and hosts["h3"]["disabled"]["reason"] == "maintenance"
    assert hosts["h2"]["state"] == "down" and hosts["h2"]["last_bad"]["summary"] == "flagged down"
    d2.wait(lambda e: e["event"] == "check.done" and e["failing"] == ["h2"])
    time.sleep(0.6)
    # the ack holds across the restart: checks go on failing, no failure alert is sent
    assert not [e for e in d2.events if e["event"] == "alert.log" and e["type"] == "alert"]
    # the disabled host is not checked at all
    assert not [ln for ln in (tmp_path / "starts").read_text().splitlines() if ln.split()[1] == "h3"]
    code, hist = call(sock, "GET", "/history", token)
    assert code == 200 and len([h for h in hist["history"] if h["type"] == "alert"]) == alerts_before
    # recovery: the ack ends (mon), the outage is logged with its duration, upalert sent
    (tmp_path / "down-h2").unlink()
    d2.wait(lambda e: e["event"] == "alert.log" and e["type"] == "upalert")
    code, dt = call(sock, "GET", "/downtime", token)
    host_outage = [o for o in dt["downtime"] if o["host"] == "h2"]
    assert host_outage and host_outage[0]["duration_s"] > 0.5 and host_outage[0]["summary"] == "flagged down"
    assert [o for o in dt["downtime"] if o["host"] is None]  # the service-level outage (mon's dtlog)
    assert d2.stop() == 0
    saved = json.loads((tmp_path / "state.json").read_text())
    assert saved["acks"] == {} and "h3" in saved["disabled"]["host"]


def test_corrupt_state_file_daemon_starts_clean(tmp_path: Path, daemons: list[Daemon]) -> None:
    cfg = setup(tmp_path, f"""  g:
    s:
      interval: 0.2s
      monitor: {{name: rec, dir: "{tmp_path}"}}
""")
    (tmp_path / "state.json").write_text('{"version": 1, "services": {"g:s": ')
    d = _run(cfg, daemons)
    w = d.wait(lambda e: e["event"] == "state.corrupt")
    assert w["level"] == "warning" and w["action"] == "starting clean"
    d.wait(lambda e: e["event"] == "check.done" and e["ok"])
    assert d.stop() == 0
    assert json.loads((tmp_path / "state.json").read_text())["services"]["g:s"]["status"] == "ok"
    assert len(list(tmp_path.glob("state.json.corrupt-*"))) == 1


def test_read_only_state_dir_keeps_running(tmp_path: Path, daemons: list[Daemon],
                                           mount_tmpfs: Callable[[str, str], Path]) -> None:
    ro = mount_tmpfs("ro", "ro,size=64k")
    cfg = setup(tmp_path, f"""  g:
    s:
      interval: 0.1s
      monitor: {{name: rec, dir: "{tmp_path}"}}
""")
    cfg.write_text(cfg.read_text().replace(f"statedir: {tmp_path}", f"statedir: {ro}, "
                                           f"control_socket: {tmp_path}/pymon.sock"))
    d = _run(cfg, daemons)
    d.wait(lambda e: e["event"] == "state.write_failed", timeout=10)
    (tmp_path / "down-h1").touch()
    d.wait(lambda e: e["event"] == "host.state" and e["state"] == "down")
    time.sleep(1.5)
    assert d.proc.poll() is None
    assert sum(1 for e in d.events if e["event"] == "state.write_failed") == 1
    assert d.stop() == 0


def test_a_daemon_with_nothing_to_save_sleeps(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Checks an hour apart leave nothing to save; past the steady-state save's time the
    housekeeping loop must still wait (it spun, using half a core)."""
    monkeypatch.setattr(control, "STALE_SAVE_S", 0.2)
    cfg = tmp_path / "pymon.yaml"
    cfg.write_text(f"globals: {{statedir: {tmp_path}, mondir: {tmp_path}, alertdir: {tmp_path}}}\n"
                   "hostgroups: {web: [127.0.0.1]}\n"
                   "watch: {web: {tcp: {interval: 3600s, monitor: {name: tcp, port: 9}}}}\n")

    async def run() -> float:
        d = PymonDaemon(str(cfg), logs.setup("json", "info", stream=open(os.devnull, "w")))
        task = asyncio.get_running_loop().create_task(d.run())
        await asyncio.sleep(1.5)  # started, checked once, saved; then past STALE_SAVE_S
        used = time.thread_time()
        await asyncio.sleep(1.0)
        used = time.thread_time() - used
        d.stopping.set()
        await asyncio.wait_for(task, 10)
        return used

    assert asyncio.run(run()) < 0.1


def test_garbage_cycles_frozen_between_collections_are_still_freed(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Once a second a check's bookkeeping freezes the young objects without collecting
    them (gc_policy.YOUNG_FREEZE_S): garbage cycles made in between are frozen too, and
    when they have grown the frozen objects enough (GROWTH_MIN) the next look (FREEZE_S
    apart) must collect and free them, or every cycle a plugin leaves would stay for good."""
    monkeypatch.setattr(gc_policy, "YOUNG_FREEZE_S", 0.05)
    monkeypatch.setattr(gc_policy, "FREEZE_S", 1.0)
    monkeypatch.setattr(gc_policy, "GROWTH", 0.0)
    monkeypatch.setattr(gc_policy, "GROWTH_MIN", 1000)
    cfg = tmp_path / "pymon.yaml"
    cfg.write_text(f"globals: {{statedir: {tmp_path}, mondir: {tmp_path}, alertdir: {tmp_path}}}\n"
                   "hostgroups: {web: [127.0.0.1]}\n"
                   "watch: {web: {tcp: {interval: 0.1s, monitor: {name: tcp, port: 9}}}}\n")

    class Cycle:
        pass

    async def run() -> tuple[bool, bool]:
        d = PymonDaemon(str(cfg), logs.setup("json", "info", stream=open(os.devnull, "w")))
        task = asyncio.get_running_loop().create_task(d.run())
        while not d.readiness.ready:  # started and ready: the full collection at start is behind us
            await asyncio.sleep(0.02)
        full_at = d.gc.frozen_at
        await asyncio.sleep(1.5)  # looks at the growth came and found none: no collection
        assert d.gc.frozen_at == full_at
        for _ in range(2000):  # a plugin's leak: 2,000 cycles, 4,000 objects
            c = Cycle()
            c.me = c  # type: ignore[attr-defined]
        ref = weakref.ref(c)
        del c
        young_at = d.gc.young_at
        while d.gc.young_at == young_at:  # a check's bookkeeping froze the young objects, the cycle too
            await asyncio.sleep(0.02)
        frozen = ref() is not None and gc.get_freeze_count() > 0
        full_at = d.gc.frozen_at
        for _ in range(200):  # the look after they grew the frozen objects: a full collection
            if d.gc.frozen_at != full_at:
                break
            await asyncio.sleep(0.05)
        d.stopping.set()
        await asyncio.wait_for(task, 10)
        return frozen, ref() is None

    assert asyncio.run(run()) == (True, True)
