"""The daemon on a real director (inside the VM): pymon keeps the kernel's IPVS table
in line with real HTTP backends in network namespaces. Asserted with `ipvsadm -Ln`
only, never with pymon's own view. One topology for the whole module:

    client ns (10.20.0.2) ── director (root ns: VIP 10.10.0.100 on dummy0) ── rs1..rs3 ns (10.10.N.2)
"""

from __future__ import annotations

import json
import signal
import subprocess
import textwrap
import threading
import time
from pathlib import Path
from typing import Callable, Iterator

import pytest
from ipvsadm_reader import sh, vip_weights
from pymon_process import PymonProcess
from topology import connects, routed_netns, start_httpd
from waiting import wait_until as _wait_until

VIP = "10.10.0.100"
RS = {f"rs{i}": f"10.10.{i}.2" for i in (1, 2, 3)}
SORRY = "10.10.9.9"
INTERVAL, TIMEOUT = 1.0, 1.0


def dests() -> dict[str, str]:
    """{real server address: weight} for our VIP, read with ipvsadm -Ln."""
    return vip_weights(VIP)


class Backend:
    def __init__(self, name: str, addr: str, root: Path):
        self.name, self.addr = name, addr
        self.dir = root / name
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = start_httpd(self.name, self.dir, f"{self.name}\n", f"{self.addr}:80")
        for _ in range(200):
            if connects(self.addr):
                return
            time.sleep(0.1)
        raise AssertionError(f"backend {self.name} did not start")

    def stop(self) -> None:
        if self.proc:
            self.proc.kill()
            self.proc.wait()
            self.proc = None


@pytest.fixture(scope="module")
def topology(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Backend]]:
    sh("modprobe ip_vs")
    sh("sysctl -qw net.ipv4.ip_forward=1")
    sh("ip link add dummy0 type dummy && ip link set dummy0 up "
       f"&& ip addr add {VIP}/32 dev dummy0")
    root = tmp_path_factory.mktemp("www")
    backends = {}
    for i, (name, addr) in enumerate(RS.items(), start=1):
        routed_netns(name, f"10.10.{i}.1", addr, f"v{name}")
        backends[name] = Backend(name, addr, root)
        backends[name].start()
    routed_netns("client", "10.20.0.1", "10.20.0.2", "vclient")
    yield backends
    for b in backends.values():
        b.stop()
    for ns in [*RS, "client"]:
        sh(f"ip netns del {ns}", check=False)
    sh("ip link del dummy0", check=False)
    sh("ipvsadm -C", check=False)


class Pymon(PymonProcess):
    """One daemon for the module: Python starts slowly under TCG (about a minute), so
    the scenarios reconfigure it with SIGHUP rather than restarting it."""

    def __init__(self, tmp: Path):
        self.current: tuple = ()
        super().__init__(tmp / "pymon.yaml", args=("--log-level", "debug"), start=False)
        self.write()

    def write(self, forwarding: str = "dr", weights: dict[str, int] | None = None, quiescent: bool = False) -> bool:
        """Write the config; True if it differs from the running one."""
        weights = weights or {}
        new = (forwarding, tuple(sorted(weights.items())), quiescent)
        reals = "\n".join(f"      - {{address: {a}, weight: {weights.get(a, 1)}}}" for a in RS.values())
        self.cfg.write_text(textwrap.dedent(f"""\
            globals: {{statedir: {self.dir}, mondir: {self.dir}, alertdir: {self.dir}}}
            hostgroups: {{web: [{", ".join(RS.values())}]}}
            watch:
              web:
                http: {{monitor: {{name: http, port: 80}}, interval: {INTERVAL}, timeout: {TIMEOUT}}}
            ipvs: {{resync: 1s}}
            virtual_services:
              - vip: {VIP}:80
                scheduler: wlc
                forwarding: {forwarding}
                quiescent: {str(quiescent).lower()}
                sorry_server: {SORRY}:80
                watch: web:http
                real_servers:
            """) + reals + "\n")
        changed, self.current = new != self.current, new
        return changed

    def start(self) -> None:
        n = len(self.events)
        super().start()
        self.wait_event("daemon.started", 300, since=n)

    def reconfigure(self, **kw: object) -> None:
        if self.write(**kw):  # type: ignore[arg-type]
            n = len(self.events)
            assert self.proc is not None
            self.proc.send_signal(signal.SIGHUP)
            self.wait_event("config.reloaded", 60, since=n)


def wait_until(pred: Callable[[], bool], timeout: float) -> float:
    return _wait_until(pred, timeout, step=0.05)


ALL = {a: "1" for a in RS.values()}
# an HTTP GET from bash alone: busybox-static's wget crashes in this guest, and a
# Python client takes tens of seconds to start under TCG
GET = ("exec 3<>/dev/tcp/{addr}/80 && printf 'GET / HTTP/1.0\\r\\nHost: x\\r\\n\\r\\n' >&3 "
       "&& timeout 3 cat <&3")
DETECT = INTERVAL + TIMEOUT + 1  # the bound for a change to reach the kernel


@pytest.fixture(scope="module")
def daemon(topology: dict[str, Backend], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pymon]:
    sh("ipvsadm -C")
    p = Pymon(tmp_path_factory.mktemp("pymon"))
    p.start()
    yield p
    p.stop()
    print("\n".join(json.dumps(e) for e in p.events if e.get("event", "").startswith(("ipvs", "raw", "config", "host.state",
                                                                                         "pool", "director"))))


@pytest.fixture
def pymon(daemon: Pymon, topology: dict[str, Backend]) -> Pymon:
    """Each scenario starts from the classic topology: base config, all backends up."""
    for b in topology.values():
        if b.proc is None:
            b.start()
    daemon.reconfigure()
    wait_until(lambda: dests() == ALL, 30)
    return daemon


def test_classic_topology(pymon: Pymon) -> None:
    out = sh("ipvsadm -Ln")
    assert f"TCP  {VIP}:80 wlc" in out
    rs_lines = [ln.split() for ln in out.splitlines()[3:] if ln.startswith("  ->")]
    assert sorted(f[1] for f in rs_lines) == sorted(f"{a}:80" for a in RS.values())
    assert all(f[2] == "Route" and f[3] == "1" for f in rs_lines)


def test_failure_and_recovery_reach_the_kernel(pymon: Pymon, topology: dict[str, Backend]) -> None:
    topology["rs2"].stop()
    latency = wait_until(lambda: RS["rs2"] not in dests(), DETECT)
    print(f"\ndetection latency (backend stopped -> ipvs entry gone): {latency * 1000:.0f} ms (bound {DETECT:.0f} s)")
    assert dests() == {RS["rs1"]: "1", RS["rs3"]: "1"}
    topology["rs2"].start()
    back = wait_until(lambda: dests() == ALL, DETECT)
    print(f"recovery latency (backend started -> ipvs entry back): {back * 1000:.0f} ms")


def test_quiescent_sets_weight_zero(pymon: Pymon, topology: dict[str, Backend]) -> None:
    pymon.reconfigure(quiescent=True)
    topology["rs3"].stop()
    wait_until(lambda: dests().get(RS["rs3"]) == "0", DETECT)
    assert dests() == {RS["rs1"]: "1", RS["rs2"]: "1", RS["rs3"]: "0"}
    topology["rs3"].start()
    wait_until(lambda: dests() == ALL, DETECT)


def test_sighup_weight_change_touches_only_that_entry(pymon: Pymon) -> None:
    before = sh("ipvsadm -Ln").splitlines()
    n = len(pymon.events)
    pymon.reconfigure(weights={RS["rs2"]: 5})
    wait_until(lambda: dests().get(RS["rs2"]) == "5", 10)
    after = sh("ipvsadm -Ln").splitlines()
    changed = [(a, b) for a, b in zip(before, after) if a != b]
    assert len(before) == len(after) and len(changed) == 1, changed
    assert RS["rs2"] in changed[0][1] and changed[0][1].split()[3] == "5"
    ops = [e["op"] for e in pymon.events[n:] if e.get("event") == "ipvs.change"]
    assert ops == [f"edit dest TCP {VIP}:80 -> {RS['rs2']}:80 Route weight 5"]


def test_sorry_server_in_when_all_down_out_when_one_back(pymon: Pymon, topology: dict[str, Backend]) -> None:
    for b in topology.values():
        b.stop()
    wait_until(lambda: dests() == {SORRY: "1"}, DETECT + 1)
    topology["rs1"].start()
    wait_until(lambda: dests() == {RS["rs1"]: "1"}, DETECT + 1)


def test_ipvsadm_clear_is_repaired(pymon: Pymon) -> None:
    n = len(pymon.events)
    sh("ipvsadm -C")
    took = wait_until(lambda: dests() == ALL, 5)
    print(f"\ndrift repaired {took * 1000:.0f} ms after ipvsadm -C")
    assert any(e.get("event") == "ipvs.repaired" for e in pymon.events[n:])


def test_nat_traffic_spreads_over_healthy_backends(pymon: Pymon, topology: dict[str, Backend]) -> None:
    pymon.reconfigure(forwarding="nat")
    wait_until(lambda: "Masq" in sh("ipvsadm -Ln"), 10)

    def hits(n: int) -> dict[str, int]:
        seen: dict[str, int] = {}
        for _ in range(n):
            out = subprocess.run(["ip", "netns", "exec", "client", "bash", "-c", GET.format(addr=VIP)],
                                 capture_output=True, text=True)
            name = out.stdout.strip().splitlines()[-1] if out.stdout.strip() else \
                f"error {out.returncode}: {out.stderr.strip()[-80:]}"
            seen[name] = seen.get(name, 0) + 1
        return seen

    direct = subprocess.run(["bash", "-c", GET.format(addr=RS["rs1"])], capture_output=True, text=True)
    assert direct.stdout.strip().endswith("rs1"), (direct.returncode, direct.stdout, direct.stderr)
    seen = hits(9)
    print(f"\nNAT through the VIP, all healthy: {seen}")
    assert set(seen) == {"rs1", "rs2", "rs3"}, (seen, sh("ipvsadm -Lnc"), sh("ip route; ip -n client route"))
    topology["rs1"].stop()
    wait_until(lambda: RS["rs1"] not in dests(), DETECT)
    seen = hits(6)
    print(f"NAT through the VIP, rs1 down: {seen}")
    assert set(seen) == {"rs2", "rs3"}, seen


def test_restart_never_drops_a_healthy_server(pymon: Pymon) -> None:
    polls: list[dict[str, str]] = []
    stop = threading.Event()

    def poll() -> None:
        while not stop.is_set():
            polls.append(dests())
            time.sleep(0.05)

    t = threading.Thread(target=poll)
    t.start()
    try:
        pymon.stop()
        assert dests() == ALL, "stop must leave the table (no cleanstop)"
        n = len(pymon.events)
        pymon.start()
        pymon.wait_event("check.done", 120, since=n)
        time.sleep(2 * INTERVAL)
    finally:
        stop.set()
        t.join()
    assert len(polls) > 20
    missing = [p for p in polls if p != ALL]
    assert not missing, f"{len(missing)} of {len(polls)} polls lacked a healthy server: {missing[:3]}"
