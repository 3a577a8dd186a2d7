#!/usr/bin/env python3
"""How pymon hands a VIP to BIRD 2: a kernel route vs a generated file + `birdc configure`.

    python3 bench/bgp_handover.py [--trials 20]

Needs root, `ip netns` and Debian's bird2 (no IPVS: runs on any kernel). Two namespaces
joined by a veth, each with its own BIRD:

    bx-d (director) 10.99.0.2, AS 65001 ──eBGP, hold 3 s── bx-r (router) 10.99.0.1, AS 65000

(a) kernel: a blackhole host route in table 100 (proto 252) of bx-d, learned by BIRD's
    `kernel table 100; learn;` protocol, exported over BGP (MED from the route's metric);
(b) file: a `protocol static` include file rewritten, then `birdc configure`.

For each trial the clock runs from the director-side action (the netlink call, or the
file write before `birdc configure`) until the route is in (or gone from) the router
namespace's kernel table (the router's BIRD exports BGP routes into its main table),
polled over netlink every millisecond. CPU: the director's BIRD (utime+stime) plus, for
(b), the `birdc` processes; pymon's own side (one netlink message) is not counted.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from pyroute2 import IPRoute

VIP = "10.99.100.1"
TABLE, PROTO = 100, 252

DIRECTOR = """\
router id 10.99.0.2;
protocol device {{ scan time 60; }}
protocol kernel kpymon {{
    ipv4 {{ import all; export none; }};
    kernel table {table};
    learn;
    scan time 60;
}}
include "{include}";
protocol bgp uplink {{
    local 10.99.0.2 as 65001;
    neighbor 10.99.0.1 as 65000;
    hold time 3; keepalive time 1; connect retry time 1;
    ipv4 {{
        import none;
        export filter {{
            if proto = "kpymon" then {{ bgp_med = krt_metric; accept; }}
            if proto = "spymon" then accept;
            reject;
        }};
        next hop self;
    }};
}}
"""
ROUTER = """\
router id 10.99.0.1;
protocol device { scan time 60; }
protocol kernel { ipv4 { import none; export all; }; merge paths on; }
protocol bgp d1 {
    local 10.99.0.1 as 65000;
    neighbor 10.99.0.2 as 65001;
    hold time 3; keepalive time 1; connect retry time 1;
    ipv4 { import all; export none; };
}
"""


def sh(cmd: str) -> str:
    return subprocess.run(cmd, shell=True, check=True, capture_output=True, text=True).stdout


def cpu(pid: int) -> float:
    f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")


def static_conf(announce: bool) -> str:
    route = f"    route {VIP}/32 blackhole {{ bgp_med = 100; }};\n" if announce else ""
    return f"protocol static spymon {{\n    ipv4;\n{route}}}\n"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=20)
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bx-"))
    include = tmp / "pymon-routes.conf"
    include.write_text(static_conf(False))
    (tmp / "d.conf").write_text(DIRECTOR.format(table=TABLE, include=include))
    (tmp / "r.conf").write_text(ROUTER)
    sh("ip netns add bx-d && ip netns add bx-r && ip link add eth0 netns bx-d type veth peer name eth0 netns bx-r")
    sh("ip -n bx-d addr add 10.99.0.2/24 dev eth0 && ip -n bx-r addr add 10.99.0.1/24 dev eth0 && "
       "ip -n bx-d link set eth0 up && ip -n bx-r link set eth0 up && ip -n bx-d link set lo up")
    procs = {}
    for ns in ("d", "r"):
        procs[ns] = subprocess.Popen(["ip", "netns", "exec", f"bx-{ns}", "bird", "-f", "-c", str(tmp / f"{ns}.conf"),
                                      "-s", str(tmp / f"{ns}.ctl"), "-P", str(tmp / f"{ns}.pid")],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    d_ipr, r_ipr = IPRoute(netns="bx-d"), IPRoute(netns="bx-r")
    try:
        end = time.monotonic() + 30
        while "Established" not in subprocess.run(["birdc", "-s", str(tmp / "r.ctl"), "show", "protocols", "d1"],
                                                  capture_output=True, text=True).stdout:
            assert time.monotonic() < end, "BGP session not established"
            time.sleep(0.2)
        bird_pid = int((tmp / "d.pid").read_text())

        def present() -> bool:
            return bool(r_ipr.route("get", dst=VIP)[0].get_attr("RTA_GATEWAY") == "10.99.0.2")

        def wait(want: bool) -> float:
            t0 = time.monotonic()
            while True:
                try:
                    got = bool(r_ipr.route("dump", dst=VIP, table=254)) and any(
                        r["dst_len"] == 32 for r in r_ipr.route("dump", dst=VIP, table=254))
                except Exception:  # noqa: BLE001
                    got = False
                if got == want:
                    return time.monotonic()
                if time.monotonic() - t0 > 10:
                    raise AssertionError(f"router: {VIP} {'never came' if want else 'never went'}")
                time.sleep(0.001)

        def kernel(on: bool) -> None:
            d_ipr.route("replace" if on else "del", dst=f"{VIP}/32", table=TABLE, proto=PROTO, type="blackhole",
                        priority=100)

        def birdfile(on: bool) -> None:
            include.write_text(static_conf(on))
            subprocess.run(["birdc", "-s", str(tmp / "d.ctl"), "configure"], check=True, capture_output=True)

        results = {}
        for name, act in (("kernel route (a)", kernel), ("include + birdc configure (b)", birdfile)):
            ups, downs = [], []
            c0 = cpu(bird_pid) + resource.getrusage(resource.RUSAGE_CHILDREN).ru_utime \
                + resource.getrusage(resource.RUSAGE_CHILDREN).ru_stime
            for _ in range(a.trials):
                t = time.monotonic()
                act(True)
                ups.append(wait(True) - t)
                t = time.monotonic()
                act(False)
                downs.append(wait(False) - t)
                time.sleep(0.05)
            ch = resource.getrusage(resource.RUSAGE_CHILDREN)
            c1 = cpu(bird_pid) + ch.ru_utime + ch.ru_stime
            results[name] = (ups, downs, (c1 - c0) / (2 * a.trials))
        print(f"{a.trials} announce + withdraw cycles each, to the router's kernel table over eBGP:")
        for name, (ups, downs, c) in results.items():
            print(f"  {name:30s} announce median {statistics.median(ups) * 1000:6.1f} ms "
                  f"(max {max(ups) * 1000:6.1f}), withdraw median {statistics.median(downs) * 1000:6.1f} ms "
                  f"(max {max(downs) * 1000:6.1f}); CPU {c * 1000:.2f} ms per change")
    finally:
        d_ipr.close()
        r_ipr.close()
        for p in procs.values():
            p.terminate()
            p.wait()
        subprocess.run("ip netns del bx-d; ip netns del bx-r", shell=True)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
