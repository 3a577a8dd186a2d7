"""KernelIPVS against a real ip_vs, asserted with `ipvsadm -Ln` (an independent reader).

Runs only inside the VM booted by tests/kernel/test_kernel_ipvs.py, as root.
"""

from __future__ import annotations

import asyncio
import os

import pytest
from ipvsadm_reader import ipvsadm_blocks, ipvsadm_services, sh

from pymon.ipvs.kernel import IPVSError, KernelIPVS
from pymon.ipvs.table import (
    SVC_F_ONEPACKET,
    Dest,
    Op,
    Service,
    ServiceKey,
    diff,
    format_ipvsadm,
    make_table,
)

VIP = ServiceKey("tcp", "10.0.0.1", 80)
WEB = Service(VIP, scheduler="wrr")
DESTS = [Dest("10.0.0.2", 80, weight=1), Dest("10.0.0.3", 80, weight=2), Dest("10.0.0.4", 80, weight=3)]


def _loaded_ip_vs_modules() -> list[str]:
    with open("/proc/modules") as f:
        return [line.split()[0] for line in f if line.startswith("ip_vs")]


async def test_unavailable_without_module() -> None:
    """No ip_vs (and no autoload): one clear line, no traceback."""
    if _loaded_ip_vs_modules():  # an earlier test file loaded it: unload everything
        sh("ipvsadm -C", check=False)
        schedulers = [m for m in _loaded_ip_vs_modules() if m != "ip_vs"]
        for module in [*schedulers, "ip_vs"]:
            sh(f"modprobe -r {module}", check=False)
    if "ip_vs" in _loaded_ip_vs_modules():
        pytest.skip(f"ip_vs is loaded and in use, cannot unload: {_loaded_ip_vs_modules()}")
    # genl autoloads ip_vs through modprobe: point the kernel at /bin/true instead
    with open("/proc/sys/kernel/modprobe") as f:
        modprobe = f.read().strip()
    with open("/proc/sys/kernel/modprobe", "w") as f:
        f.write("/bin/true\n")
    try:
        async with KernelIPVS() as ipvs:
            with pytest.raises(IPVSError) as err:
                await ipvs.read()
    finally:
        with open("/proc/sys/kernel/modprobe", "w") as f:
            f.write(modprobe + "\n")
    assert str(err.value) == "IPVS unavailable: generic netlink family IPVS not found (is ip_vs loaded?)"


async def test_genl_autoloads_ip_vs() -> None:
    """On a modular kernel the IPVS genl lookup loads ip_vs by itself."""
    async with KernelIPVS() as ipvs:
        await ipvs.read()
    assert "ip_vs " in open("/proc/modules").read()


async def test_add_service_and_three_dests(clean_ipvs: None) -> None:
    async with KernelIPVS() as ipvs:
        ops = diff(make_table([(WEB, DESTS)]), await ipvs.read())
        assert [str(op).split(" ")[0:2] for op in ops] == [["add", "service"]] + [["add", "dest"]] * 3
        assert await ipvs.apply(ops) == []
    assert ipvsadm_services() == [
        "TCP  10.0.0.1:80 wrr",
        "  -> 10.0.0.2:80                  Route   1      0          0",
        "  -> 10.0.0.3:80                  Route   2      0          0",
        "  -> 10.0.0.4:80                  Route   3      0          0",
    ]


async def test_edit_weight_in_place(clean_ipvs: None) -> None:
    async with KernelIPVS() as ipvs:
        assert await ipvs.apply(diff(make_table([(WEB, DESTS)]), {})) == []
        wanted = make_table([(WEB, [DESTS[0], Dest("10.0.0.3", 80, weight=0), DESTS[2]])])
        ops = diff(wanted, await ipvs.read())
        assert [str(op) for op in ops] == ["edit dest TCP 10.0.0.1:80 -> 10.0.0.3:80 Route weight 0"]
        assert await ipvs.apply(ops) == []
        assert await ipvs.read() == wanted
    assert "  -> 10.0.0.3:80                  Route   0      0          0" in ipvsadm_services()


async def test_edit_forwarding_and_scheduler(clean_ipvs: None) -> None:
    async with KernelIPVS() as ipvs:
        assert await ipvs.apply(diff(make_table([(WEB, DESTS)]), {})) == []
        wanted = make_table([(Service(VIP, scheduler="rr", persistence=300),
                              [Dest("10.0.0.2", 80, "nat", 5, upper_threshold=100, lower_threshold=10),
                               *DESTS[1:]])])
        ops = diff(wanted, await ipvs.read())
        assert [op.action for op in ops] == ["edit", "edit"]
        assert await ipvs.apply(ops) == []
        assert await ipvs.read() == wanted
    lines = ipvsadm_services()
    assert lines[0] == "TCP  10.0.0.1:80 rr persistent 300"
    assert lines[1] == "  -> 10.0.0.2:80                  Masq    5      0          0"
    # ipvsadm -Ln --thresholds: "-> addr:port Uthreshold Lthreshold ActiveConn InActConn"
    rows = [line.split() for line in sh("ipvsadm -Ln --thresholds").splitlines()]
    assert ["->", "10.0.0.2:80", "100", "10", "0", "0"] in rows


async def test_delete_dest(clean_ipvs: None) -> None:
    async with KernelIPVS() as ipvs:
        assert await ipvs.apply(diff(make_table([(WEB, DESTS)]), {})) == []
        wanted = make_table([(WEB, [DESTS[0], DESTS[2]])])
        ops = diff(wanted, await ipvs.read())
        assert [str(op) for op in ops] == ["del dest TCP 10.0.0.1:80 -> 10.0.0.3:80"]
        assert await ipvs.apply(ops) == []
    assert ipvsadm_services() == [
        "TCP  10.0.0.1:80 wrr",
        "  -> 10.0.0.2:80                  Route   1      0          0",
        "  -> 10.0.0.4:80                  Route   3      0          0",
    ]


async def test_read_adopts_table_made_by_ipvsadm(clean_ipvs: None) -> None:
    sh("ipvsadm -A -t 10.0.0.1:80 -s wrr")
    for d in DESTS:
        sh(f"ipvsadm -a -t 10.0.0.1:80 -r {d.address}:{d.port} -g -w {d.weight}")
    sh("ipvsadm -A -u [2001:db8::1]:53 -s rr -p 60")
    sh("ipvsadm -a -u [2001:db8::1]:53 -r [2001:db8::2]:53 -m -w 4")
    sh("ipvsadm -A -f 7 -s sh -b sh-port -p 120 -M 255.255.0.0")
    sh("ipvsadm -a -f 7 -r 10.0.0.9:0 -i -w 5")
    expected = make_table([
        (WEB, DESTS),
        (Service(ServiceKey("udp", "2001:db8::1", 53), "rr", persistence=60),
         [Dest("2001:db8::2", 53, "nat", 4)]),
        (Service(ServiceKey(fwmark=7), "sh", persistence=120, netmask=16, flags=0x10),
         [Dest("10.0.0.9", 0, "tun", 5)]),
    ])
    async with KernelIPVS() as ipvs:
        actual = await ipvs.read()
    assert actual == expected
    # adopting changes nothing: a restart never drops a healthy real server
    assert diff(expected, actual, owned=expected.keys()) == []
    # and pymon's rendering matches ipvsadm's, line for line
    assert [line.rstrip() for line in format_ipvsadm(actual).splitlines()[3:]] == ipvsadm_services()


async def test_diff_apply_restores_after_flush(clean_ipvs: None) -> None:
    wanted = make_table([
        (WEB, DESTS),
        (Service(ServiceKey("udp", "2001:db8::1", 53), "rr", persistence=60),
         [Dest("2001:db8::2", 53, "nat", 4), Dest("2001:db8::3", 53, "nat", 1)]),
        (Service(ServiceKey(fwmark=8, family=6), "rr", persistence=10, netmask=64, flags=SVC_F_ONEPACKET), []),
        (Service(ServiceKey("sctp", "10.0.0.1", 9), "lc"), [Dest("10.0.0.5", 9)]),
    ])
    async with KernelIPVS() as ipvs:
        assert await ipvs.apply(diff(wanted, await ipvs.read())) == []
        before = ipvsadm_services()
        sh("ipvsadm -C")
        assert ipvsadm_services() == []
        ops = diff(wanted, await ipvs.read())
        assert len(ops) == 4 + 3 + 2 + 0 + 1  # services + dests
        assert await ipvs.apply(ops) == []
        assert await ipvs.read() == wanted
        assert diff(wanted, await ipvs.read()) == []
    assert ipvsadm_services() == before
    assert "FWM  8 IPv6 rr persistent 10 mask 64 ops" in before
    assert "SCTP 10.0.0.1:9 lc" in before


async def test_unowned_services_untouched(clean_ipvs: None) -> None:
    sh("ipvsadm -A -t 192.0.2.1:25 -s rr")
    sh("ipvsadm -a -t 192.0.2.1:25 -r 192.0.2.2:25 -g")
    sh("ipvsadm -A -t 10.0.0.1:443 -s rr")  # owned, no longer configured: goes
    async with KernelIPVS() as ipvs:
        owned = {VIP, ServiceKey("tcp", "10.0.0.1", 443)}
        ops = diff(make_table([(WEB, DESTS[:1])]), await ipvs.read(), owned)
        assert await ipvs.apply(ops) == []
    # (ipvsadm sorts with a wrapping u32 subtraction: 192.0.2.1 comes before 10.0.0.1)
    assert ipvsadm_blocks() == {
        "TCP  10.0.0.1:80 wrr": ["  -> 10.0.0.2:80                  Route   1      0          0"],
        "TCP  192.0.2.1:25 rr": ["  -> 192.0.2.2:25                 Route   1      0          0"],
    }


async def test_errors_are_lines_and_others_go_on(clean_ipvs: None) -> None:
    async with KernelIPVS() as ipvs:
        assert await ipvs.apply(diff(make_table([(WEB, DESTS[:1])]), {})) == []
        ops = [
            Op("del", WEB, Dest("10.9.9.9", 80)),  # missing dest
            Op("add", WEB, Dest("10.0.0.3", 80, weight=7)),  # fine
            Op("add", WEB),  # exists
            Op("edit", Service(ServiceKey("tcp", "10.0.0.5", 80))),  # missing service
            Op("add", Service(ServiceKey("tcp", "10.0.0.6", 80), scheduler="nosuch")),
            Op("add", Service(ServiceKey("tcp", "10.0.0.7", 80)), Dest("10.0.0.2", 80)),
            Op("add", WEB, Dest("2001:db8::5", 80, "dr")),  # IPv6 dest in IPv4 service: EINVAL
        ]
        errors = await ipvs.apply(ops)
        assert errors == [
            "del dest TCP 10.0.0.1:80 -> 10.9.9.9:80: No such destination",
            "add service TCP 10.0.0.1:80 wrr: Service already exists",
            "edit service TCP 10.0.0.5:80 wlc: No such service",
            "add service TCP 10.0.0.6:80 nosuch: Scheduler or persistence engine not found",
            "add dest TCP 10.0.0.7:80 -> 10.0.0.2:80 Route weight 1: Service not defined",
            "add dest TCP 10.0.0.1:80 -> [2001:db8::5]:80 Route weight 1: "
            "Invalid argument (IPv4/IPv6 mix other than tunnel, bad address or value)",
        ]
    assert "  -> 10.0.0.3:80                  Route   7      0          0" in ipvsadm_services()


def test_permission_denied_is_one_line(clean_ipvs: None) -> None:
    """Without CAP_NET_ADMIN (uid 65534, forked so no new interpreter boots)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: drop root, which drops every capability
        try:
            os.close(r)
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)

            async def main() -> str:
                try:
                    await KernelIPVS().read()
                    return "no error"
                except IPVSError as e:
                    return str(e)
                except BaseException as e:  # noqa: BLE001 - report anything to the parent
                    return f"unexpected {type(e).__name__}: {e}"

            os.write(w, asyncio.run(main()).encode())
        finally:
            os._exit(0)
    os.close(w)
    with os.fdopen(r) as f:
        message = f.read()
    os.waitpid(pid, 0)
    assert message == "reading the IPVS table: Permission denied (pymon must run as root or with CAP_NET_ADMIN)"
