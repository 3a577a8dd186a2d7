"""Live pool control against a running daemon (IPVS in dry run: the MemoryTable twin):
a real TCP agent on loopback steering a real server's weight (50 %, drain, down, then
silent and gone); and the pool API and CLI: add, reweight, disable, remove, bad input
refused without a change, kept across a restart, and the reload precedence."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from apiclient import Running
from daemons import Daemon, setup


class Agent:
    """A TCP agent on 127.0.0.1 answering `reply` (None: close without a word); `stop()`
    closes the listener, so connections are refused."""

    def __init__(self, reply: str | None = "100%\n", port: int = 0) -> None:
        self.reply = reply
        self.srv = socket.create_server(("127.0.0.1", port))
        self.port = self.srv.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.srv.accept()
            except OSError:
                return
            with conn:
                if self.reply is not None:
                    conn.sendall(self.reply.encode())

    def stop(self) -> None:
        self.srv.close()


def weights(r: Running) -> dict[str, Any]:
    code, st = r.call("GET", "/status")
    assert code == 200
    return {d["real_server"]: d["wanted_weight"] for d in st["ipvs"]["services"][0]["real_servers"]
            if d["wanted_weight"] is not None}


def until(r: Running, want: dict[str, Any], timeout: float = 10) -> None:
    end = time.monotonic() + timeout
    while (got := weights(r)) != want:
        assert time.monotonic() < end, f"IPVS wanted {got}, expected {want}"
        time.sleep(0.1)


def test_agent_steers_weight(tmp_path: Path) -> None:
    agent = Agent()
    cfg = setup(tmp_path, f"""  g:
    s:
      interval: 0.3s
      monitor: {{name: rec, dir: "{tmp_path}"}}
    agent:
      interval: 0.3s
      timeout: 1s
      monitor: {{name: agent, port: {agent.port}}}
      periods: [{{alert: [log]}}]
virtual_services:
  - {{name: www, vip: "192.0.2.1:80", watch: "g:s", real_servers: [{{address: 127.0.0.1, weight: 10}}]}}
ipvs: {{dry_run: true}}
""", groups="g: [127.0.0.1]")
    d = Daemon(cfg)
    try:
        r = Running(tmp_path, d, 0)
        until(r, {"127.0.0.1:80": 10})
        agent.reply = "50%\n"
        until(r, {"127.0.0.1:80": 5})
        agent.reply = "drain\n"
        until(r, {"127.0.0.1:80": 0})  # weight 0: kept in the table
        agent.reply = "down#maintenance\n"
        until(r, {})  # taken out
        failed = d.wait(lambda e: e["event"] == "host.state" and e["service"] == "agent" and e["state"] == "down")
        assert failed["summary"] == "agent: maintenance"
        agent.reply = None  # silent: no change, it stays out
        time.sleep(1.0)
        assert weights(r) == {}
        agent.stop()  # refused: no change either
        d.wait(lambda e: e["event"] == "host.state" and e["service"] == "agent" and e["state"] == "up")
        time.sleep(1.0)
        assert weights(r) == {}
        unreachable = r.svc("agent")["hosts"][0]["last"]["summary"]
        assert unreachable == "agent unreachable (connection refused): weight and state unchanged"
        # a new agent on the same port says ready: back at the last reported weight
        agent = Agent("ready\n", agent.port)
        until(r, {"127.0.0.1:80": 5})
        agent.stop()
    finally:
        assert d.stop() == 0


def test_pool_api_cli_restart_and_reload(tmp_path: Path) -> None:
    vs = "{name: www, vip: \"192.0.2.1:80\", watch: \"g:s\", real_servers: [127.0.0.1, {address: 127.0.0.2, weight: 3}]}"
    watch = f"""  g:
    s:
      interval: 0.3s
      monitor: {{name: rec, dir: "{tmp_path}"}}
virtual_services:
  - {vs}
ipvs: {{dry_run: true}}
"""
    cfg = setup(tmp_path, watch, groups="g: [127.0.0.1, 127.0.0.2]")
    d = Daemon(cfg)
    try:
        r = Running(tmp_path, d, 0)
        until(r, {"127.0.0.1:80": 1, "127.0.0.2:80": 3})
        # add: its host joins the watched hostgroup and is checked
        code, body = r.call("POST", "/pool/change", {"action": "add", "virtual_service": "www",
                                                     "real_server": "127.0.0.3", "weight": 4})
        assert code == 200 and body["override"]["mark"] == "added (override)"
        until(r, {"127.0.0.1:80": 1, "127.0.0.2:80": 3, "127.0.0.3:80": 4})
        assert [h["host"] for h in r.svc("s")["hosts"]] == ["127.0.0.1", "127.0.0.2", "127.0.0.3"]
        change = d.wait(lambda e: e["event"] == "pool.change")
        assert change["by"].endswith(")") and "uid" in change["by"] and change["action"] == "add"
        # reweight and disable through the CLI
        out = r.cli("pool", "weight", "www", "127.0.0.2", "7")
        assert out.returncode == 0 and "weight 3->7 (override)" in out.stdout, out.stderr
        assert r.cli("pool", "disable", "www", "127.0.0.1").returncode == 0
        until(r, {"127.0.0.2:80": 7, "127.0.0.3:80": 4})
        # bad input: 400, one line, nothing changed
        before = r.call("GET", "/pool")[1]
        for bad, msg in (({"action": "add", "virtual_service": "nosuch", "real_server": "127.0.0.9"},
                          "virtual_service: no such virtual service 'nosuch'"),
                         ({"action": "add", "virtual_service": "www", "real_server": "127.0.0.3"},
                          "real_server: 127.0.0.3:80 is already a real server of 'www'"),
                         ({"action": "add", "virtual_service": "www", "real_server": "999.1.1.1"}, "real_server: "),
                         ({"action": "weight", "virtual_service": "www", "real_server": "127.0.0.2",
                           "weight": "heavy"}, "weight: expected an integer")):
            code, body = r.call("POST", "/pool/change", bad)
            assert code == 400 and body["error"].startswith(msg) and "\n" not in body["error"], body
        assert r.call("GET", "/pool")[1] == before
        bad = r.cli("pool", "add", "nosuch", "127.0.0.9")
        assert bad.returncode == 1 and bad.stderr.startswith("pymon pool: virtual_service: no such virtual service")
        status = r.cli("status")
        assert "[weight 3->7 (override)]" in status.stdout and "POOL OVERRIDES" in status.stdout
        listed = r.cli("overrides").stdout
        assert "127.0.0.1:80" in listed and "disabled (override)" in listed and "added (override)" in listed
    finally:
        assert d.stop() == 0
    # a restart keeps them
    d = Daemon(cfg)
    try:
        r = Running(tmp_path, d, 0)
        until(r, {"127.0.0.2:80": 7, "127.0.0.3:80": 4})
        # a reload where the config now lists 127.0.0.3 and changes 127.0.0.2's weight: the
        # config wins for both; the disabled 127.0.0.1 keeps its override
        cfg.write_text(cfg.read_text().replace("[127.0.0.1, 127.0.0.2]}", "[127.0.0.1, 127.0.0.2, 127.0.0.3]}")
                       .replace("weight: 3}]", "weight: 5}, {address: 127.0.0.3, weight: 2}]"))
        assert r.call("POST", "/reload")[0] == 200
        until(r, {"127.0.0.2:80": 5, "127.0.0.3:80": 2})
        dropped = [e for e in d.events if e["event"] == "pool.override_dropped"]
        assert {e["real_server"]: e["reason"].split(":")[0] for e in dropped} == {
            "127.0.0.2:80": "the config changed this real server (weight 3 -> 5)",
            "127.0.0.3:80": "satisfied"}
        out = r.cli("overrides", "--clear", "www", "127.0.0.1")
        assert out.returncode == 0 and "cleared 1 override(s)" in out.stdout
        until(r, {"127.0.0.1:80": 1, "127.0.0.2:80": 5, "127.0.0.3:80": 2})
        assert r.call("GET", "/pool")[1] == {"overrides": []}
    finally:
        assert d.stop() == 0
