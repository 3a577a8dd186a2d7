"""The fping group probe: loopback, a host in a network namespace, dropped and
unreachable addresses, and unprivileged datagram sockets."""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from pymon.plugin import Target
from pymon.probes import validate_params
from pymon.probes import icmp
from pymon.probes.icmp import fping as probe

needs_root_ip = pytest.mark.skipif(os.geteuid() != 0 or shutil.which("ip") is None,
                                   reason="needs root and iproute2 for network namespaces")

FAST = {"count": 2, "interval": 0.05, "wait": 0.5, "timeout": 3}


def targets(*hosts: str) -> list[Target]:
    return [Target(h, "routers", "ping") for h in hosts]


def ip(*args: str, ns: str | None = None) -> None:
    cmd = ["ip", "netns", "exec", ns, "ip", *args] if ns else ["ip", *args]
    subprocess.run(cmd, check=True, capture_output=True, text=True)


@dataclass
class Ns:
    name: str
    ok4: str  # answers
    drop4: str  # assigned in the namespace, but its replies are blackholed
    absent4: str  # on the link, assigned nowhere
    ok6: str
    drop6: str


@pytest.fixture(scope="module")
def netns() -> Iterator[Ns]:
    """A namespace behind a veth pair, on random 198.18/15 and fd00::/8 subnets."""
    tag = f"{os.getpid() % 10000:04d}{random.randrange(16**3):03x}"
    name, host_if, ns_if = f"pmping{tag}", f"pmp{tag}a", f"pmp{tag}b"
    a, b = random.randrange(18, 20), random.randrange(256)
    c = random.randrange(32) * 8
    net4 = f"198.{a}.{b}."
    net6 = f"fd{random.randrange(256):02x}:{random.randrange(65536):x}:{random.randrange(65536):x}::"
    ip("netns", "add", name)
    try:
        ip("link", "add", host_if, "type", "veth", "peer", "name", ns_if, "netns", name)
        ip("addr", "add", f"{net4}{c + 1}/29", "dev", host_if)
        ip("-6", "addr", "add", f"{net6}1/64", "dev", host_if, "nodad")
        ip("link", "set", host_if, "up")
        for cmd in (["link", "set", "lo", "up"], ["link", "set", ns_if, "up"],
                    ["addr", "add", f"{net4}{c + 2}/29", "dev", ns_if],
                    ["addr", "add", f"{net4}{c + 3}/29", "dev", ns_if],
                    ["-6", "addr", "add", f"{net6}2/64", "dev", ns_if, "nodad"],
                    ["-6", "addr", "add", f"{net6}3/64", "dev", ns_if, "nodad"],
                    # replies sourced from the "drop" addresses go to a blackhole
                    ["rule", "add", "from", f"{net4}{c + 3}", "lookup", "100"],
                    ["route", "add", "blackhole", "default", "table", "100"],
                    ["-6", "rule", "add", "from", f"{net6}3", "lookup", "100"],
                    ["-6", "route", "add", "blackhole", "default", "table", "100"]):
            ip(*cmd, ns=name)
        yield Ns(name, f"{net4}{c + 2}", f"{net4}{c + 3}", f"{net4}{c + 5}", f"{net6}2", f"{net6}3")
    finally:
        subprocess.run(["ip", "link", "del", host_if], capture_output=True)
        subprocess.run(["ip", "netns", "del", name], capture_output=True)


async def test_loopback() -> None:
    res = await probe(targets("127.0.0.1", "::1", "localhost"), FAST)
    for host, r in res.items():
        assert r.ok, (host, r)
        assert r.summary.startswith("0% loss, rtt ")
        assert r.value is not None and r.value < 100


@needs_root_ip
async def test_namespace_hosts(netns: Ns) -> None:
    start = time.monotonic()
    res = await probe(targets(netns.ok4, netns.ok6, netns.drop4, netns.drop6, netns.absent4, "203.0.113.1"),
                      FAST)
    assert time.monotonic() - start < 2.5
    assert res[netns.ok4].ok, res[netns.ok4]
    assert res[netns.ok6].ok, res[netns.ok6]
    for host in (netns.drop4, netns.drop6, netns.absent4, "203.0.113.1"):
        assert not res[host].ok
        assert res[host].summary == "100% loss (0/2 received)", (host, res[host])


@needs_root_ip
async def test_thresholds(netns: Ns) -> None:
    res = await probe(targets(netns.ok4), {**FAST, "rtt": 0.000001})
    assert not res[netns.ok4].ok
    assert res[netns.ok4].summary.startswith("rtt ") and "ms > 1e-06ms (2/2 received)" in res[netns.ok4].summary
    assert (await probe(targets(netns.ok4), {**FAST, "rtt": 1000}))[netns.ok4].ok
    # `loss` reached: a fraction of lost echoes fails the host (loss computed per host)
    partial = icmp._summary(icmp._parse({"count": 4, "loss": 50}), [0.1, 0.2])
    assert not partial.ok and partial.summary == "50% loss (2/4 received, rtt 0.15ms)"
    assert icmp._summary(icmp._parse({"count": 4}), [0.1, 0.2]).ok  # default: only total loss fails


@needs_root_ip
async def test_mon_args_and_only_all_down(netns: Ns) -> None:
    assert icmp.from_mon_args(["-r", "1", "-t", "500", "-s", "250", "-a", "-T"]) == {
        "count": 2, "wait": 0.5, "rtt": 250.0, "only_all_down": True}
    assert validate_params("fping", {"argv": ["-r", "x"]}) == [
        "argv: fping.monitor: invalid literal for int() with base 10: 'x'"]
    argv = ["-r", "1", "-t", "300", "-a"]
    res = await probe(targets(netns.ok4, netns.drop4), {"argv": argv, "interval": 0.05})
    assert res[netns.ok4].ok and res[netns.drop4].ok
    assert res[netns.drop4].summary == "100% loss (0/2 received) (ignored: not all hosts down)"
    res = await probe(targets(netns.drop4, netns.drop6), {"argv": argv, "interval": 0.05})
    assert not any(r.ok for r in res.values())


async def test_names_and_params() -> None:
    res = await probe(targets("no-such-host.invalid"), FAST)
    assert res["no-such-host.invalid"].summary == "cannot resolve no-such-host.invalid"
    assert validate_params("fping", {"count": 0, "loss": 101, "family": 5, "privileged": "maybe"}) == [
        "family: must be 4 or 6, got 5",
        "privileged: expected auto, true or false, got 'maybe'",
        "loss: a percentage (0-100), got 101",
        "count: must be > 0, got 0",
    ]
    assert validate_params("fping", {"count": 5, "interval": 1, "timeout": 3}) == [
        "timeout: 3s is too short for 5 echoes 1s apart"]
    # the per-echo wait shrinks so that all echoes fit in the scheduler's timeout
    assert icmp.reply_wait(icmp._parse({"count": 3, "interval": 0.5, "timeout": 2})) == pytest.approx(0.2667, 0.01)
    assert icmp.reply_wait(icmp._parse({})) == 1.0


@needs_root_ip
def test_unprivileged_datagram_sockets(netns: Ns, tmp_path: os.PathLike[str]) -> None:
    """In a namespace whose ping_group_range admits us, "auto" uses SOCK_DGRAM ICMP."""
    script = (
        "import asyncio, socket, icmplib.sockets as s\n"
        "from pymon.probes import icmp\n"
        "from pymon.plugin import Target\n"
        "assert icmp.unprivileged_allowed()\n"
        "made = []\n"
        "def spy(cls):\n"
        "    orig = cls._create_socket\n"
        "    cls._create_socket = lambda self, type: made.append(type) or orig(self, type)\n"
        "spy(s.ICMPv4Socket); spy(s.ICMPv6Socket)\n"
        "res = asyncio.run(icmp.fping([Target(h, 'g', 's') for h in ('127.0.0.1', '::1')],\n"
        "                  {'count': 2, 'interval': 0.05, 'wait': 0.5}))\n"
        "assert all(r.summary.startswith('0% loss') for r in res.values()), res\n"
        "assert set(made) == {socket.SOCK_DGRAM}, made\n"
        "print('ok')\n"
    )
    out = subprocess.run(
        ["ip", "netns", "exec", netns.name, "sh", "-c",
         'sysctl -qw net.ipv4.ping_group_range="0 2147483647" && exec "$0" -c "$1"', sys.executable, script],
        capture_output=True, text=True, timeout=30,
    )
    assert out.stdout.strip() == "ok", out.stderr
