"""The pool policy on a real director (inside the VM), asserted with `ipvsadm -Ln` and
traffic through the VIPs. One daemon, one topology for the module:

    client ns pcli (10.70.0.2) ── director (VIPs 10.60.100.1, .2 on dpool) ── ns pool: rs1..rs10 (10.60.0.1-10)

VIP .1: wlc, NAT, `min_pooled: 50%`. VIP .2: mh with mh-fallback and mh-port, NAT (failed
servers quiesced by default). Both watch the same ten busybox HTTP servers.
"""

from __future__ import annotations

import json
import subprocess
import textwrap
import time
from pathlib import Path
from typing import Iterator

import pytest
from ipvsadm_reader import sh, vip_block
from pymon_process import PymonProcess
from topology import connects, routed_netns, start_httpd
from waiting import wait_until

VIP1, VIP2 = "10.60.100.1", "10.60.100.2"
RS = {f"rs{i}": f"10.60.0.{i}" for i in range(1, 11)}
GET = ("exec 3<>/dev/tcp/{addr}/80 && printf 'GET / HTTP/1.0\\r\\nHost: x\\r\\n\\r\\n' >&3 "
       "&& timeout 3 cat <&3")


def block(vip: str) -> tuple[str, dict[str, tuple[str, str]]]:
    """(service line, {real server address: (weight, active conns)}) of a VIP in `ipvsadm -Ln`."""
    line, dests = vip_block(vip)
    return line, {addr: (cols[1], cols[2]) for addr, cols in dests.items()}


class Servers:
    def __init__(self, root: Path):
        self.root = root
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str) -> None:
        self.procs[name] = start_httpd("pool", self.root / name, f"{name}\n", f"{RS[name]}:80")

    def stop(self, name: str) -> None:
        p = self.procs.pop(name)
        p.kill()
        p.wait()


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    sh("modprobe ip_vs && sysctl -qw net.ipv4.ip_forward=1")
    sh(f"ip link add dpool type dummy && ip link set dpool up && ip addr add {VIP1}/32 dev dpool "
       f"&& ip addr add {VIP2}/32 dev dpool")
    first, *more = RS.values()
    routed_netns("pool", "10.60.0.254", first, "vpool")
    for addr in more:
        sh(f"ip -n pool addr add {addr}/24 dev eth0")
    routed_netns("pcli", "10.70.0.1", "10.70.0.2", "vpcli")
    s = Servers(tmp_path_factory.mktemp("pool-www"))
    for name in RS:
        s.start(name)
    for addr in RS.values():
        wait_until(lambda: connects(addr), 20)
    yield s
    for name in list(s.procs):
        s.stop(name)
    sh("ip netns del pool; ip netns del pcli; ip link del dpool", check=False)
    sh("ipvsadm -C", check=False)


def write_config(tmp: Path) -> Path:
    reals = ", ".join(RS.values())
    cfg = tmp / "pymon.yaml"
    cfg.write_text(textwrap.dedent(f"""\
        globals: {{statedir: {tmp}, mondir: {tmp}, alertdir: {tmp}}}
        hostgroups: {{web: [{reals}]}}
        watch:
          web:
            http: {{monitor: {{name: http, port: 80}}, interval: 1s, timeout: 1s}}
        ipvs: {{resync: 1s}}
        virtual_services:
          - {{vip: "{VIP1}:80", scheduler: wlc, forwarding: nat, min_pooled: 50%, watch: "web:http",
             real_servers: [{reals}]}}
          - {{vip: "{VIP2}:80", scheduler: mh, scheduler_flags: [mh-fallback, mh-port], forwarding: nat,
             watch: "web:http", real_servers: [{reals}]}}
        """))
    return cfg


def hits(vip: str, n: int) -> dict[str, int]:
    seen: dict[str, int] = {}
    for _ in range(n):
        out = subprocess.run(["ip", "netns", "exec", "pcli", "bash", "-c", GET.format(addr=vip)],
                             capture_output=True, text=True)
        name = out.stdout.strip().splitlines()[-1] if out.stdout.strip() else "error"
        seen[name] = seen.get(name, 0) + 1
    return seen


@pytest.fixture(scope="module")
def pymon(servers: Servers, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PymonProcess]:
    sh("ipvsadm -C")
    p = PymonProcess(write_config(tmp_path_factory.mktemp("pool-pymon")))
    try:
        wait_until(lambda: all(w == ("1", "0") for w in block(VIP1)[1].values()) and len(block(VIP1)[1]) == 10,
                   300, step=0.5)
        yield p
    finally:
        p.stop()
        print("\n".join(json.dumps(e) for e in p.events if e.get("event", "").startswith(("pool", "ipvs.rep", "raw"))))


def test_min_pooled_keeps_half_and_mh_fallback_skips_quiesced(pymon: PymonProcess, servers: Servers,
                                                               dead_servers: list[str]) -> None:
    line, _ = block(VIP2)
    assert line.split()[2:] == ["mh", "(mh-fallback,mh-port)"], line
    dead = dead_servers
    for name in dead:
        servers.stop(name)
    alive = {RS["rs1"], RS["rs2"]}
    wait_until(lambda: all(block(VIP2)[1][RS[n]][0] == "0" for n in dead), 30)
    time.sleep(2)  # two more check rounds and resyncs: the threshold holds, nothing else leaves
    _, d1 = block(VIP1)
    assert len(d1) == 5 and alive <= set(d1), d1
    assert all(w == "1" for w, _ in d1.values())  # pooled_down servers keep their weight
    _, d2 = block(VIP2)
    assert len(d2) == 10 and {a for a, (w, _) in d2.items() if w == "1"} == alive  # slots kept, weight 0
    downs = [e for e in pymon.events if e.get("event") == "pool.pooled_down"]
    assert len(downs) == 3 and all("min_pooled 50% of 10 = 5" in e["detail"] for e in downs), downs
    seen = hits(VIP1, 8)
    print(f"\nwlc VIP, 2 of 10 alive, 5 pooled: {seen}")
    assert set(seen) - {"error"} <= {"rs1", "rs2"} and set(seen) & {"rs1", "rs2"}, seen
    seen = hits(VIP2, 8)
    print(f"mh VIP with mh-fallback, 8 quiesced: {seen}")
    assert set(seen) <= {"rs1", "rs2"}, seen  # every flow skips the weight-0 slots
    # ipvsadm -E without -b drops the scheduler flags: repaired at the next resync (1 s
    # here: the repair may come before ipvsadm -Ln can show the flags gone, so the
    # owner's log says what it found)
    repaired = len([e for e in pymon.events if e.get("event") == "ipvs.repaired"])
    sh(f"ipvsadm -E -t {VIP2}:80 -s mh")
    took = wait_until(lambda: len([e for e in pymon.events if e.get("event") == "ipvs.repaired"]) > repaired
                      and "(mh-fallback,mh-port)" in block(VIP2)[0], 10)
    fix = [e for e in pymon.events if e.get("event") == "ipvs.change" and e.get("reason") == "resync"][-1]
    assert fix["op"].startswith(f"edit service TCP {VIP2}:80 mh"), fix
    print(f"scheduler flags repaired {took * 1000:.0f} ms after ipvsadm -E")


@pytest.fixture
def dead_servers(servers: Servers) -> Iterator[list[str]]:
    """rs3..rs10, started again after the test whatever it found."""
    dead = [f"rs{i}" for i in range(3, 11)]
    yield dead
    for name in dead:
        servers.start(name)
    wait_until(lambda: len(block(VIP1)[1]) == 10 and all(w == "1" for w, _ in block(VIP2)[1].values()), 60)


def test_drain_waits_for_the_open_connection(pymon: PymonProcess) -> None:
    # a client holds a connection open through the wlc VIP (request never finished)
    holder = subprocess.Popen(["ip", "netns", "exec", "pcli", "bash", "-c",
                               f"exec 3<>/dev/tcp/{VIP1}/80 && printf 'GET / HTTP/1.0\\r\\n' >&3 && sleep 60"])
    try:
        wait_until(lambda: any(c == "1" for _, c in block(VIP1)[1].values()), 10)
        addr = next(a for a, (_, c) in block(VIP1)[1].items() if c == "1")
        code, body = pymon.api("POST", f"/drain/web/{addr}", {"reason": "kernel test"})
        assert code == 200, body
        assert block(VIP1)[1][addr][0] == "0"  # weight 0 at once (the API returns after the change)
        time.sleep(3)
        assert block(VIP1)[1][addr] == ("0", "1"), block(VIP1)  # still there: its connection is open
    finally:
        holder.kill()
        holder.wait()
    took = wait_until(lambda: addr not in block(VIP1)[1], 10)
    print(f"\ndrained server removed {took * 1000:.0f} ms after its last connection closed")
    assert any(e.get("event") == "pool.drained" and e["host"] == addr for e in pymon.events)
    # the drain covers every virtual service watching hostgroup web: under mh it ends quiesced, slot kept
    wait_until(lambda: block(VIP2)[1].get(addr, ("?",))[0] == "0", 10)
