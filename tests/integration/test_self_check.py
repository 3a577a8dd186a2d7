"""The director's self-check in the running daemon: four real HTTP servers on loopback
(python -m http.server), a canary that is a real address on an interface of its own (a
veth pair; it answers ICMP echo until its address is removed), IPVS as the dry-run twin.

Canary up when every server dies: it is them, the pool empties as before. Canary gone
too: the director is at fault: nothing is removed, the `director` alert runs, the
track file holds -254, `/status`, `pymon status` and the metrics say so; canary back:
upalert, track file 0, and after one more window the real failures depool again."""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from apiclient import Running
from daemons import Daemon
from httpserver import free_port


REALS = [f"127.0.0.{i}" for i in (41, 42, 43, 44)]


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


@pytest.fixture
def canary() -> Iterator[tuple[str, str]]:
    """(interface, address): a /32 on a veth of its own, answering ICMP echo."""
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("needs root and iproute2 for the canary's interface")
    tag = f"{os.getpid() % 10000:04d}{random.randrange(16**2):02x}"
    ifname, addr = f"pmcan{tag}", f"198.{random.randrange(18, 20)}.{random.randrange(256)}.{random.randrange(1, 255)}"
    ip("link", "add", ifname, "type", "veth", "peer", "name", ifname + "p")
    try:
        ip("link", "set", ifname + "p", "up")
        ip("link", "set", ifname, "up")
        ip("addr", "add", f"{addr}/32", "dev", ifname)
        yield ifname, addr
    finally:
        subprocess.run(["ip", "link", "del", ifname], capture_output=True)


class Servers:
    """One `python -m http.server` per real server: a real HTTP server that can be stopped."""

    def __init__(self, port: int, root: Path, addresses: list[str] = REALS):
        self.port, self.root, self.addresses = port, root, addresses
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self) -> None:
        self.procs = [subprocess.Popen([sys.executable, "-m", "http.server", str(self.port), "--bind", a],
                                       cwd=self.root, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                      for a in self.addresses]

    def stop(self) -> None:
        for p in self.procs:
            p.terminate()
        for p in self.procs:
            p.wait(10)


def dests(r: Running) -> list[str]:
    code, st = r.call("GET", "/status")
    assert code == 200
    return [d["real_server"] for vs in st["ipvs"]["services"] for d in vs["real_servers"]
            if d["actual_weight"] is not None]


def removals(events: list[dict[str, Any]]) -> list[str]:
    return [e["op"] for e in events if e["event"] == "ipvs.would_change" and e["op"].startswith("del dest")]


def self_check(r: Running) -> dict[str, Any]:
    code, st = r.call("GET", "/status")
    assert code == 200
    return st["self_check"]


def test_director_fault_freezes_the_pool_and_them_depools(tmp_path: Path, canary: tuple[str, str]) -> None:
    ifname, addr = canary
    port, api_port = free_port(), free_port()
    (tmp_path / "www").mkdir()
    (tmp_path / "www" / "index.html").write_text("ok\n")
    servers = Servers(port, tmp_path / "www")
    servers.start()
    cfg = tmp_path / "pymon.yaml"
    cfg.write_text(f"""globals: {{statedir: {tmp_path}, alertdir: {tmp_path}, control_port: {api_port}}}
hostgroups: {{web: [{', '.join(REALS)}]}}
watch:
  web:
    http:
      interval: 0.3s
      timeout: 0.5s
      monitor: {{name: http, port: {port}, path: /}}
virtual_services:
  - vip: 10.9.9.9:80
    watch: web:http
    real_servers: [{', '.join(REALS)}]
ipvs: {{dry_run: true}}
self_check:
  enabled: true
  window: 3s
  canaries: [{addr}]
  gateway: false
  links: false
  canary_timeout: 0.5s
  recheck: 0.5s
  alert: [log]
  track_file: director-fault
""")
    d = Daemon(cfg)
    track = tmp_path / "director-fault"
    try:
        r = Running(tmp_path, d, api_port)
        d.wait(lambda e: e["event"] == "daemon.started")
        d.wait(lambda e: e["event"] == "ipvs.table" and len([x for x in e["table"] if "->" in x]) >= 5)
        assert track.read_text() == "0\n"
        full = dests(r)
        assert len(full) == 4

        # them: the canary answers while every server dies -> normal depools
        servers.stop()
        d.wait(lambda e: e["event"] == "director.suspect")
        them = d.wait(lambda e: e["event"] == "director.them")
        assert them["canaries"] == [f"canary {addr}"]
        deadline = time.monotonic() + 10
        while dests(r) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert dests(r) == [] and len(removals(d.events)) == 4
        assert not any(e["event"] == "alert.log" and e["group"] == "director" for e in d.events)
        assert track.read_text() == "0\n" and self_check(r)["state"] == "ok"

        servers.start()
        deadline = time.monotonic() + 15
        while len(dests(r)) < 4 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert dests(r) == full

        # me: the canary goes away with the servers -> frozen, alert, track file
        mark = len(d.events)
        ip("addr", "del", f"{addr}/32", "dev", ifname)
        servers.stop()
        fault = d.wait(lambda e: e["event"] == "director.fault")
        assert fault["failing"] == [f"canary {addr}"] and fault["went_down"] >= 2
        alert = d.wait(lambda e: e["event"] == "alert.log" and e["group"] == "director")
        assert alert["type"] == "alert" and alert["service"] == "self_check"
        assert alert["summary"].startswith("director fault: canary")
        d.wait(lambda e: e["event"] == "host.state" and e["state"] == "down"
               and sum(1 for x in d.events[mark:] if x["event"] == "host.state") >= 4)
        time.sleep(1.0)  # reconciles while frozen
        assert dests(r) == full  # nothing removed
        assert removals(d.events[mark:]) == []
        assert track.read_text() == "-254\n"
        sc = self_check(r)
        assert sc["state"] == "fault" and sc["frozen"] and sc["canaries"] == {f"canary {addr}": False}
        out = r.cli("status").stdout
        assert "DIRECTOR SELF-CHECK: FAULT (IPVS frozen)" in out and f"canary {addr}: DOWN" in out
        metrics = subprocess.run(["curl", "-s", "-H", f"Authorization: Bearer {r.token}",
                                  f"http://127.0.0.1:{api_port}/metrics"], capture_output=True, text=True).stdout
        assert "pymon_director_fault 1.0" in metrics
        assert f'pymon_director_canary_up{{canary="canary {addr}"}} 0.0' in metrics

        # a reload that changes self_check keeps the verdict: still frozen, nothing removed
        reloads = sum(1 for e in d.events if e["event"] == "config.reloaded")
        cfg.write_text(cfg.read_text().replace("recheck: 0.5s", "recheck: 0.4s"))
        d.proc.send_signal(signal.SIGHUP)
        d.wait(lambda e: sum(1 for x in d.events if x["event"] == "config.reloaded") > reloads)
        time.sleep(1.0)
        assert self_check(r)["state"] == "fault" and dests(r) == full and track.read_text() == "-254\n"
        assert removals(d.events[mark:]) == []

        # the canary answers again: upalert and track file at once, the pool follows health a window later
        ip("addr", "add", f"{addr}/32", "dev", ifname)
        d.wait(lambda e: e["event"] == "director.recovered")
        d.wait(lambda e: e["event"] == "alert.log" and e["group"] == "director" and e["type"] == "upalert")
        assert track.read_text() == "0\n"
        assert self_check(r)["frozen"] and dests(r) == full
        d.wait(lambda e: e["event"] == "director.unfrozen")
        deadline = time.monotonic() + 10
        while dests(r) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert dests(r) == []  # the servers are really down: they depool now
        assert d.stop() == 0
    finally:
        servers.stop()
        if d.proc.poll() is None:
            d.proc.kill()
            d.proc.wait()


def test_hosts_depooled_before_the_share_was_reached_come_back_at_fault(tmp_path: Path,
                                                                       canary: tuple[str, str]) -> None:
    """A fast service sees the director's cut first and its hosts are depooled (2 of 6 is
    no burst yet); when the slow service's hosts follow within the window and the canary
    is gone, the director is at fault and the first two come back: the table as before."""
    ifname, addr = canary
    port, api_port = free_port(), free_port()
    fast, slow = [f"127.0.0.{i}" for i in (51, 52)], [f"127.0.0.{i}" for i in (53, 54, 55, 56)]
    (tmp_path / "www").mkdir()
    (tmp_path / "www" / "index.html").write_text("ok\n")
    fast_servers, slow_servers = Servers(port, tmp_path / "www", fast), Servers(port, tmp_path / "www", slow)
    fast_servers.start()
    slow_servers.start()
    cfg = tmp_path / "pymon.yaml"
    cfg.write_text(f"""globals: {{statedir: {tmp_path}, alertdir: {tmp_path}, control_port: {api_port}}}
hostgroups: {{fast: [{', '.join(fast)}], slow: [{', '.join(slow)}]}}
watch:
  fast: {{http: {{interval: 0.3s, timeout: 0.5s, monitor: {{name: http, port: {port}}}}}}}
  slow: {{http: {{interval: 2s, timeout: 0.5s, monitor: {{name: http, port: {port}}}}}}}
virtual_services:
  - {{vip: "10.9.9.1:80", watch: "fast:http", real_servers: [{', '.join(fast)}]}}
  - {{vip: "10.9.9.2:80", watch: "slow:http", real_servers: [{', '.join(slow)}]}}
ipvs: {{dry_run: true}}
self_check: {{enabled: true, window: 6s, canaries: [{addr}], gateway: false, links: false,
             canary_timeout: 0.5s, recheck: 0.5s}}
""")
    d = Daemon(cfg)
    try:
        r = Running(tmp_path, d, api_port)
        d.wait(lambda e: e["event"] == "daemon.started")
        deadline = time.monotonic() + 15
        while len(dests(r)) < 6 and time.monotonic() < deadline:
            time.sleep(0.2)
        full = dests(r)
        assert len(full) == 6
        fast_servers.stop()
        deadline = time.monotonic() + 5
        while len(dests(r)) > 4 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(dests(r)) == 4 and len(removals(d.events)) == 2  # depooled: 2 of 6 is no burst
        ip("addr", "del", f"{addr}/32", "dev", ifname)
        slow_servers.stop()
        fault = d.wait(lambda e: e["event"] == "director.fault")
        assert fault["went_down"] >= 3  # half of the six: the first slow host completes the burst
        deadline = time.monotonic() + 5
        while dests(r) != full and time.monotonic() < deadline:
            time.sleep(0.1)
        assert dests(r) == full  # the two depooled early are back, the other four never left
        assert len(removals(d.events)) == 2
        assert d.stop() == 0
    finally:
        fast_servers.stop()
        slow_servers.stop()
        if d.proc.poll() is None:
            d.proc.kill()
            d.proc.wait()


def test_reload_turns_the_self_check_on_and_off(tmp_path: Path) -> None:
    api_port = free_port()
    cfg = tmp_path / "pymon.yaml"
    base = f"""globals: {{statedir: {tmp_path}, control_port: {api_port}}}
hostgroups: {{web: [127.0.0.1]}}
watch: {{web: {{tcp: {{interval: 1s, monitor: {{name: tcp, port: {free_port()}}}}}}}}}
"""
    cfg.write_text(base)
    d = Daemon(cfg)
    try:
        r = Running(tmp_path, d, api_port)
        d.wait(lambda e: e["event"] == "daemon.started")
        assert self_check(r) is None
        assert "DIRECTOR SELF-CHECK" not in r.cli("status").stdout
        cfg.write_text(base + "self_check: {enabled: true, gateway: false, links: false, track_file: fault}\n")
        d.proc.send_signal(signal.SIGHUP)
        d.wait(lambda e: e["event"] == "config.reloaded")
        inactive = d.wait(lambda e: e["event"] == "director.inactive")
        assert inactive["hosts"] == 1 and inactive["min_hosts"] == 4
        assert self_check(r)["state"] == "ok" and (tmp_path / "fault").read_text() == "0\n"
        assert "DIRECTOR SELF-CHECK: ok" in r.cli("status").stdout
        mark = len(d.events)
        cfg.write_text(base)
        d.proc.send_signal(signal.SIGHUP)
        d.wait(lambda e: e["event"] == "config.reloaded" and d.events.index(e) >= mark)
        assert self_check(r) is None
        assert d.stop() == 0
    finally:
        if d.proc.poll() is None:
            d.proc.kill()
            d.proc.wait()
