"""The pure IPVS model: keys, diff() against MemoryTable, ipvsadm rendering."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pymon.ipvs.table import (
    SVC_F_ONEPACKET,
    Dest,
    IPVSError,
    MemoryTable,
    Op,
    Service,
    ServiceKey,
    Stats,
    Table,
    after,
    diff,
    format_ipvsadm,
    make_table,
)

WEB = Service(ServiceKey("tcp", "10.0.0.1", 80), "wrr")
DESTS = [Dest("10.0.0.2", 80, weight=1), Dest("10.0.0.3", 80, weight=2), Dest("10.0.0.4", 80, weight=3)]
FOREIGN = Service(ServiceKey("tcp", "192.0.2.1", 25), "rr")


# --- the model ------------------------------------------------------------------


def test_keys_are_canonical() -> None:
    assert ServiceKey("TCP", "2001:DB8:0::1", 80) == ServiceKey("tcp", "[2001:db8::1]", 80)
    assert ServiceKey("tcp", "10.0.0.1", 80).family == 4
    assert ServiceKey(fwmark=3).family == 4 and ServiceKey(fwmark=3).protocol is None
    assert ServiceKey(fwmark=3) != ServiceKey(fwmark=3, family=6)
    assert Dest("2001:DB8::2", 53).address == "2001:db8::2"
    assert Service(ServiceKey("udp", "::1", 53)).netmask == 128
    assert Service(ServiceKey("udp", "10.0.0.1", 53)).netmask == 32


@pytest.mark.parametrize(
    "make",
    [
        lambda: ServiceKey("tcp", "10.0.0.1"),
        lambda: ServiceKey("icmp", "10.0.0.1", 1),
        lambda: ServiceKey("tcp", "10.0.0.1", 70000),
        lambda: ServiceKey("tcp", "not-an-ip", 80),
        lambda: ServiceKey("udp", fwmark=1),
        lambda: ServiceKey(fwmark=0),
        lambda: ServiceKey("tcp", "10.0.0.1", 80, family=6),
        lambda: Service(ServiceKey("tcp", "10.0.0.1", 80), netmask=33),
        lambda: Dest("10.0.0.2", 80, "masq"),
        lambda: Dest("10.0.0.2", 80, weight=-1),
        lambda: Dest("10.0.0.2", 80, lower_threshold=5),  # lower above (no) upper
    ],
)
def test_invalid_values_rejected(make) -> None:
    with pytest.raises(ValueError):
        make()


def test_service_flags_exclude_kernel_bits() -> None:
    s = Service(WEB.key, persistence=300, flags=0x1 | 0x2 | SVC_F_ONEPACKET)
    assert s.flags == SVC_F_ONEPACKET
    assert s.kernel_flags == SVC_F_ONEPACKET | 0x1
    assert Service(WEB.key).kernel_flags == 0


def test_make_table_rejects_duplicates() -> None:
    with pytest.raises(ValueError, match="duplicate real server"):
        make_table([(WEB, [DESTS[0], DESTS[0]])])
    with pytest.raises(ValueError, match="duplicate service"):
        make_table([(WEB, []), (WEB, [])])


# --- diff -------------------------------------------------------------------------


def test_diff_of_equal_tables_is_empty() -> None:
    t = make_table([(WEB, DESTS), (FOREIGN, [])])
    assert diff(t, t) == []
    assert diff(t, t, owned=t.keys()) == []
    assert diff({}, {}) == []


def test_new_service_before_its_dests() -> None:
    ops = diff(make_table([(WEB, DESTS)]), {})
    assert [str(op) for op in ops] == [
        "add service TCP 10.0.0.1:80 wrr",
        "add dest TCP 10.0.0.1:80 -> 10.0.0.2:80 Route weight 1",
        "add dest TCP 10.0.0.1:80 -> 10.0.0.3:80 Route weight 2",
        "add dest TCP 10.0.0.1:80 -> 10.0.0.4:80 Route weight 3",
    ]


def test_weight_only_change_is_an_edit() -> None:
    actual = make_table([(WEB, DESTS)])
    wanted = make_table([(WEB, [DESTS[0], Dest("10.0.0.3", 80, weight=0), DESTS[2]])])
    ops = diff(wanted, actual)
    assert ops == [Op("edit", WEB, Dest("10.0.0.3", 80, weight=0))]


def test_forwarding_and_threshold_changes_are_edits() -> None:
    actual = make_table([(WEB, DESTS)])
    wanted = make_table([(WEB, [Dest("10.0.0.2", 80, "nat", 1, 100, 10), *DESTS[1:]])])
    assert [op.action for op in diff(wanted, actual)] == ["edit"]


def test_scheduler_change_is_a_service_edit() -> None:
    actual = make_table([(WEB, DESTS)])
    wanted = make_table([(Service(WEB.key, "rr", persistence=60), DESTS)])
    assert diff(wanted, actual) == [Op("edit", Service(WEB.key, "rr", persistence=60))]


def test_port_change_is_add_then_delete() -> None:
    actual = make_table([(WEB, DESTS[:1])])
    wanted = make_table([(WEB, [Dest("10.0.0.2", 8080, "nat")])])
    assert [str(op) for op in diff(wanted, actual)] == [
        "add dest TCP 10.0.0.1:80 -> 10.0.0.2:8080 Masq weight 1",
        "del dest TCP 10.0.0.1:80 -> 10.0.0.2:80",
    ]


def test_unowned_services_untouched() -> None:
    actual = make_table([(WEB, DESTS), (FOREIGN, [Dest("192.0.2.2", 25)])])
    assert diff(make_table([(WEB, DESTS)]), actual) == []
    assert diff({}, actual) == []
    # once owned (configured before, dropped from config now) it is removed
    ops = diff({}, actual, owned={WEB.key})
    assert [str(op) for op in ops] == [
        "del dest TCP 10.0.0.1:80 -> 10.0.0.2:80",
        "del dest TCP 10.0.0.1:80 -> 10.0.0.3:80",
        "del dest TCP 10.0.0.1:80 -> 10.0.0.4:80",
        "del service TCP 10.0.0.1:80",
    ]


def test_dests_of_unowned_services_untouched() -> None:
    actual = make_table([(FOREIGN, [Dest("192.0.2.2", 25)])])
    wanted = make_table([(WEB, DESTS)])
    assert all(op.service.key == WEB.key for op in diff(wanted, actual))


# --- MemoryTable --------------------------------------------------------------------


async def test_memory_table_applies_diff() -> None:
    mem = MemoryTable(make_table([(FOREIGN, [])]))
    wanted = make_table([(WEB, DESTS)])
    assert await mem.apply(diff(wanted, await mem.read())) == []
    assert await mem.read() == {**wanted, FOREIGN.key: (FOREIGN, {})}


async def test_memory_table_errors_are_lines_and_others_go_on() -> None:
    mem = MemoryTable(make_table([(WEB, DESTS[:1])]))
    errors = await mem.apply([
        Op("del", WEB, Dest("10.9.9.9", 80)),
        Op("add", WEB, Dest("10.0.0.3", 80, weight=7)),
        Op("add", WEB),
        Op("edit", Service(ServiceKey("tcp", "10.0.0.5", 80))),
        Op("add", Service(ServiceKey("tcp", "10.0.0.6", 80), scheduler="nosuch")),
        Op("add", Service(ServiceKey("tcp", "10.0.0.7", 80)), Dest("10.0.0.2", 80)),
        Op("del", Service(ServiceKey("tcp", "10.0.0.77", 80))),
    ])
    # the same words KernelIPVS gets from the real kernel (tests/kernel/inside)
    assert errors == [
        "del dest TCP 10.0.0.1:80 -> 10.9.9.9:80: No such destination",
        "add service TCP 10.0.0.1:80 wrr: Service already exists",
        "edit service TCP 10.0.0.5:80 wlc: No such service",
        "add service TCP 10.0.0.6:80 nosuch: Scheduler or persistence engine not found",
        "add dest TCP 10.0.0.7:80 -> 10.0.0.2:80 Route weight 1: Service not defined",
        "del service TCP 10.0.0.77:80: No such service",
    ]
    assert (await mem.read())[WEB.key][1][("10.0.0.3", 80)].weight == 7
    with pytest.raises(IPVSError) as err:
        mem.run(Op("del", WEB, Dest("10.9.9.9", 80)))
    assert err.value.code == 2


async def test_memory_table_read_is_a_copy() -> None:
    mem = MemoryTable(make_table([(WEB, DESTS)]))
    t = await mem.read()
    t[WEB.key][1].clear()
    assert len((await mem.read())[WEB.key][1]) == 3


async def test_memory_table_context_manager() -> None:
    async with MemoryTable() as mem:
        assert await mem.read() == {}
    assert mem.closed


# --- property: applying the diff reaches the wanted table ---------------------------

_v4 = st.sampled_from(["10.0.0.1", "10.0.0.2", "192.0.2.9", "10.1.2.3"])
_v6 = st.sampled_from(["2001:db8::1", "2001:db8::2", "fe80::1"])
_keys = st.one_of(
    st.builds(ServiceKey, st.sampled_from(["tcp", "udp", "sctp"]), _v4 | _v6, st.sampled_from([53, 80, 443])),
    st.builds(lambda m, f: ServiceKey(fwmark=m, family=f), st.integers(1, 3), st.sampled_from([4, 6])),
)
_dests = st.builds(
    Dest,
    _v4 | _v6,
    st.sampled_from([0, 80, 8080]),
    st.sampled_from(["dr", "nat", "tun"]),
    st.integers(0, 3),
)


@st.composite
def tables(draw) -> Table:
    keys = draw(st.lists(_keys, max_size=4, unique=True))
    entries = []
    for k in keys:
        svc = Service(k, draw(st.sampled_from(["rr", "wlc", "sh"])), draw(st.sampled_from([0, 300])),
                      flags=draw(st.sampled_from([0, SVC_F_ONEPACKET])))
        dests = draw(st.lists(_dests, max_size=4, unique_by=lambda d: d.key))
        entries.append((svc, dests))
    return make_table(entries)


@settings(max_examples=300, deadline=None)
@given(wanted=tables(), actual=tables(), extra_owned=st.lists(_keys, max_size=3))
def test_applying_diff_reaches_wanted(wanted: Table, actual: Table, extra_owned: list[ServiceKey]) -> None:
    owned = set(wanted) | set(extra_owned)
    mem = MemoryTable(actual)
    ops = diff(wanted, actual, owned)
    errors = asyncio.run(mem.apply(ops))
    assert errors == []  # every op is valid in order: no EEXIST/ENOENT/ESRCH
    result = asyncio.run(mem.read())
    # owned services are exactly as wanted ...
    assert {k: v for k, v in result.items() if k in owned} == wanted
    # ... and everything else is exactly as it was
    assert {k: v for k, v in result.items() if k not in owned} == {
        k: v for k, v in actual.items() if k not in owned
    }
    # and a second pass has nothing left to do
    assert diff(wanted, result, owned) == []
    # no dest is ever deleted and re-added: same (address, port) → edit
    for op in ops:
        if op.dest is not None and op.action == "del":
            assert not any(o.action == "add" and o.dest is not None and o.dest.key == op.dest.key
                           and o.service.key == op.service.key for o in ops)


@given(wanted=tables())
def test_diff_with_itself_is_empty(wanted: Table) -> None:
    assert diff(wanted, wanted, wanted.keys()) == []


# --- ipvsadm rendering ----------------------------------------------------------------


def test_format_ipvsadm_matches_ipvsadm() -> None:
    """Expected text copied from `ipvsadm -Ln` on Debian 12's kernel 6.1 (in the VM)."""
    table = make_table([
        (Service(ServiceKey("tcp", "10.0.0.1", 80), "rr"),
         [Dest("10.0.0.2", 80, weight=2), Dest("10.0.0.3", 8080, "nat", 0, 10, 5)]),
        (Service(ServiceKey("udp", "2001:db8::1", 53), "wrr", persistence=60), [Dest("2001:db8::2", 53)]),
        (Service(ServiceKey(fwmark=7), "sh", persistence=120, netmask=16, flags=0x8 | 0x10),
         [Dest("10.0.0.9", 0, "tun", 5)]),
        (Service(ServiceKey(fwmark=8, family=6), "rr", persistence=10, netmask=64, flags=SVC_F_ONEPACKET), []),
        (Service(ServiceKey("sctp", "10.0.0.1", 9), "lc"), []),
    ])
    assert format_ipvsadm(table) == (
        "IP Virtual Server version 1.2.1 (size=4096)\n"
        "Prot LocalAddress:Port Scheduler Flags\n"
        "  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n"
        "TCP  10.0.0.1:80 rr\n"
        "  -> 10.0.0.2:80                  Route   2      0          0         \n"
        "  -> 10.0.0.3:8080                Masq    0      0          0         \n"
        "SCTP 10.0.0.1:9 lc\n"
        "UDP  [2001:db8::1]:53 wrr persistent 60\n"
        "  -> [2001:db8::2]:53             Route   1      0          0         \n"
        "FWM  7 sh (sh-fallback,sh-port) persistent 120 mask 255.255.0.0\n"
        "  -> 10.0.0.9:0                   Tunnel  5      0          0         \n"
        "FWM  8 IPv6 rr persistent 10 mask 64 ops\n"
    )


def test_format_ipvsadm_connection_counts() -> None:
    t = make_table([(WEB, [replace(DESTS[0], stats=Stats(active=12, inactive=345))])])
    out = format_ipvsadm(t)
    assert out.splitlines()[-1] == "  -> 10.0.0.2:80                  Route   1      12         345       "


# --- kernel counters ------------------------------------------------------------


def test_counters_take_no_part_in_equality_or_diff() -> None:
    """A table read with counters diffs empty against the same config without them."""
    counted = make_table([(replace(WEB, stats=Stats(connections=9)),
                           [replace(d, stats=Stats(active=i, bytes_in=10 * i)) for i, d in enumerate(DESTS)])])
    plain = make_table([(WEB, DESTS)])
    assert counted == plain
    assert diff(plain, counted) == []
    assert hash(counted[WEB.key][1][DESTS[0].key]) == hash(DESTS[0])


def test_after_keeps_counters_of_edited_entries() -> None:
    counted = make_table([(WEB, [replace(DESTS[0], stats=Stats(active=3))])])
    ops = diff(make_table([(WEB, [replace(DESTS[0], weight=7)])]), counted)
    assert [str(op) for op in ops] == ["edit dest TCP 10.0.0.1:80 -> 10.0.0.2:80 Route weight 7"]
    new = after(counted, ops)
    d = new[WEB.key][1][DESTS[0].key]
    assert (d.weight, d.stats) == (7, Stats(active=3))
    assert counted[WEB.key][1][DESTS[0].key].weight == 1  # the input is unchanged


@given(wanted=tables(), actual=tables(), extra_owned=st.lists(_keys, max_size=3))
@settings(max_examples=150, deadline=None)
def test_after_is_what_memory_table_holds(wanted: Table, actual: Table, extra_owned: list[ServiceKey]) -> None:
    """after() (the owner's no-read-back view) agrees with MemoryTable applying the same ops."""
    ops = diff(wanted, actual, set(wanted) | set(extra_owned))
    mem = MemoryTable(actual)
    assert asyncio.run(mem.apply(ops)) == []
    assert after(actual, ops) == asyncio.run(mem.read())


def test_format_ipvsadm_stats_exact() -> None:
    """`ipvsadm -Ln --stats --exact`'s layout (checked against ipvsadm in tests/kernel)."""
    big = 12345678901
    t = make_table([(replace(WEB, stats=Stats(connections=3, packets_in=40, packets_out=30, bytes_in=big)),
                     [replace(DESTS[0], stats=Stats(connections=3, packets_in=40, bytes_out=2400))])])
    assert format_ipvsadm(t, stats=True).splitlines()[1:] == [
        "Prot LocalAddress:Port               Conns   InPkts  OutPkts  InBytes OutBytes",
        "  -> RemoteAddress:Port",
        "TCP  10.0.0.1:80                         3       40       30 12345678901        0",
        "  -> 10.0.0.2:80                         3       40        0        0     2400",
    ]
