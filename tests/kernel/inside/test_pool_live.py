"""Live pool control on the real kernel (inside the VM), read back with `ipvsadm -Ln`
only: the pool API adds, reweights, disables and removes real servers of a running
daemon; bad requests change nothing; a restart keeps the overrides; a reload that
changes the same server applies the precedence (the config wins); an agent on loopback
sets a server's weight. One daemon start per phase: Python starts slowly under TCG.

The health probe is a drop-in that passes every host, so the real servers need no
network: DR destinations with documentation addresses are enough for the table.
"""

from __future__ import annotations

import signal
import socket
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

from ipvsadm_reader import sh, vip_weights
from pymon_process import PymonProcess

VIP = "10.40.0.100"
PROBE = '''
from pymon.plugin import monitor, Result

@monitor("pass")
async def passes(target, params):
    return Result(True, "fine")
'''


def dests() -> dict[str, str]:
    """{real server address: weight} for our VIP, from ipvsadm -Ln."""
    return vip_weights(VIP)


def until(want: dict[str, str], timeout: float = 20) -> None:
    end = time.monotonic() + timeout
    while dests() != want:
        assert time.monotonic() < end, f"ipvsadm -Ln has {dests()}, expected {want}"
        time.sleep(0.1)


class Daemon(PymonProcess):
    def __init__(self, tmp: Path):
        super().__init__(tmp / "pymon.yaml")
        self.wait_event("daemon.started", 300)

    def change(self, **body: Any) -> tuple[int, Any]:
        return self.api("POST", "/pool/change", {"virtual_service": "www", **body})


def write(tmp: Path, agent_port: int, reals: str, hosts: str = "192.0.2.1, 192.0.2.2, 127.0.0.1") -> None:
    (tmp / "pass.py").write_text(PROBE)
    (tmp / "pymon.yaml").write_text(textwrap.dedent(f"""\
        globals: {{statedir: {tmp}, mondir: {tmp}, alertdir: {tmp}}}
        hostgroups: {{web: [{hosts}]}}
        watch:
          web:
            ok: {{monitor: pass, interval: 0.5}}
            agent: {{monitor: {{name: agent, port: {agent_port}}}, interval: 0.5, timeout: 1}}
        ipvs: {{resync: 1s}}
        virtual_services:
          - name: www
            vip: {VIP}:80
            watch: web:ok
            real_servers: {reals}
        """))


def test_pool_api_restart_reload_and_agent_on_the_kernel(ip_vs_module: None, tmp_path: Path) -> None:
    sh("ipvsadm -C")
    agent = socket.create_server(("127.0.0.1", 0))
    reply = {"text": b"50%\n"}

    def serve() -> None:
        while True:
            try:
                conn, _ = agent.accept()
            except OSError:
                return
            with conn:
                conn.sendall(reply["text"])

    threading.Thread(target=serve, daemon=True).start()
    base = "[192.0.2.1, {address: 192.0.2.2, weight: 3}, {address: 192.0.2.9, host: 127.0.0.1, weight: 4}]"
    write(tmp_path, agent.getsockname()[1], base)
    d = Daemon(tmp_path)
    try:
        # the agent on 127.0.0.1 says 50 %: its server runs at half its weight of 4
        until({"192.0.2.1": "1", "192.0.2.2": "3", "192.0.2.9": "2"}, 60)
        code, _ = d.change(action="add", real_server="192.0.2.3", weight=6)
        assert code == 200
        until({"192.0.2.1": "1", "192.0.2.2": "3", "192.0.2.3": "6", "192.0.2.9": "2"})
        assert d.change(action="weight", real_server="192.0.2.2", weight=8)[0] == 200
        assert d.change(action="disable", real_server="192.0.2.1")[0] == 200
        until({"192.0.2.2": "8", "192.0.2.3": "6", "192.0.2.9": "2"})
        assert d.change(action="enable", real_server="192.0.2.1")[0] == 200
        assert d.change(action="remove", real_server="192.0.2.9")[0] == 200
        until({"192.0.2.1": "1", "192.0.2.2": "8", "192.0.2.3": "6"})
        before = sh("ipvsadm -Ln")
        for bad in ({"action": "add", "real_server": "192.0.2.3"}, {"action": "add", "real_server": "300.0.0.1"},
                    {"action": "weight", "real_server": "192.0.2.2", "weight": -5},
                    {"action": "add", "real_server": "192.0.2.4", "virtual_service": "nosuch"}):
            code, body = d.change(**bad)
            assert code == 400 and "\n" not in body["error"], body
        time.sleep(1.5)  # a resync later: nothing moved
        assert sh("ipvsadm -Ln") == before
    finally:
        d.stop()
    assert dests() == {"192.0.2.1": "1", "192.0.2.2": "8", "192.0.2.3": "6"}  # stop leaves the table
    d = Daemon(tmp_path)  # a restart keeps the overrides: nothing reverts to the file
    try:
        time.sleep(2)
        until({"192.0.2.1": "1", "192.0.2.2": "8", "192.0.2.3": "6"})
        # the config now changes 192.0.2.2's weight and lists 192.0.2.3: it wins for both;
        # 192.0.2.9 stays removed (the config did not change it)
        write(tmp_path, agent.getsockname()[1], base.replace("weight: 3}", "weight: 5}, 192.0.2.3"),
              "192.0.2.1, 192.0.2.2, 192.0.2.3, 127.0.0.1")
        assert d.proc is not None
        d.proc.send_signal(signal.SIGHUP)
        until({"192.0.2.1": "1", "192.0.2.2": "5", "192.0.2.3": "1"})
        dropped = {e["real_server"] for e in d.events if e.get("event") == "pool.override_dropped"}
        assert dropped == {"192.0.2.2:80", "192.0.2.3:80"}
        code, body = d.api("GET", "/pool")
        assert [o["address"] for o in body["overrides"]] == ["192.0.2.9:80"]
    finally:
        d.stop()
        agent.close()
        sh("ipvsadm -C")
