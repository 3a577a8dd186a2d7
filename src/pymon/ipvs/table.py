"""The IPVS table as plain data, and how to get from one table to another.

Pure model, no I/O: `ServiceKey`, `Service` and `Dest` describe what `ipvsadm -Ln`
shows; a `Table` maps each service key to its service and real servers. `diff()`
computes the operations that turn the kernel's table into the wanted one, touching
only the services pymon owns (reconcile, don't replay). `MemoryTable` is an
in-memory twin of the kernel backend (`pymon.ipvs.kernel.KernelIPVS`) with the same async
interface and the same error messages, for tests and dry runs. `format_ipvsadm()`
renders a table the way `ipvsadm -Ln` does.
"""

from __future__ import annotations

import copy
import errno
import functools
import ipaddress
from dataclasses import dataclass, field, replace
from typing import Iterable, Literal, Mapping, NamedTuple

Protocol = Literal["tcp", "udp", "sctp"]
Forwarding = Literal["dr", "nat", "tun"]
Action = Literal["add", "edit", "del"]

PROTOCOLS: dict[str, int] = {"tcp": 6, "udp": 17, "sctp": 132}
FORWARDING_NAMES: dict[str, str] = {"dr": "Route", "nat": "Masq", "tun": "Tunnel"}

# linux/ip_vs.h service flags
SVC_F_PERSISTENT = 0x0001
SVC_F_HASHED = 0x0002  # kernel-internal, never part of the model
SVC_F_ONEPACKET = 0x0004
SVC_F_SCHED1 = 0x0008  # sh-fallback / mh-fallback
SVC_F_SCHED2 = 0x0010  # sh-port / mh-port
SVC_F_SCHED3 = 0x0020


@functools.lru_cache(maxsize=65536)
def _norm_addr(address: str) -> tuple[str, int]:
    """Canonical text form and family (4 or 6) of an IP address.

    Cached: a kernel read builds one Dest per (service, real server), and a few
    real servers behind many services repeat the same few addresses.
    """
    ip = ipaddress.ip_address(address.strip("[]"))
    return ip.compressed, ip.version


@functools.lru_cache(maxsize=65536)
def _addr_int(address: str) -> int:
    return int(ipaddress.ip_address(address))


def _addr_port(address: str | None, port: int | None, version: int) -> str:
    if version == 6:
        return f"[{address}]:{port}"
    return f"{address}:{port}"


@dataclass(frozen=True)
class ServiceKey:
    """What identifies a virtual service: protocol+address+port, or a fwmark.

    `ServiceKey("tcp", "10.0.0.1", 80)`, `ServiceKey("udp", "2001:db8::1", 53)`,
    `ServiceKey(fwmark=1)` (IPv4) or `ServiceKey(fwmark=1, family=6)`. Addresses are
    stored in canonical form, so keys compare equal whatever spelling came in. A
    fwmark service has no protocol, address or port.
    """

    protocol: Protocol | None = None
    address: str | None = None
    port: int | None = None
    fwmark: int | None = None
    family: int | None = None  # 4 or 6; derived from the address unless fwmark

    def __post_init__(self) -> None:
        if self.fwmark is not None:
            if self.address is not None or self.port is not None or self.protocol is not None:
                raise ValueError("a fwmark service has no protocol, address or port")
            if not 0 < self.fwmark < 2**32:
                raise ValueError(f"fwmark out of range: {self.fwmark}")
            fam = self.family or 4
            if fam not in (4, 6):
                raise ValueError(f"family must be 4 or 6, not {fam}")
            object.__setattr__(self, "family", fam)
            object.__setattr__(self, "_hash", hash((None, None, None, self.fwmark, fam)))
            return
        if self.address is None or self.port is None:
            raise ValueError("a service needs an address and a port (or a fwmark)")
        proto = (self.protocol or "tcp").lower()
        if proto not in PROTOCOLS:
            raise ValueError(f"unknown protocol {self.protocol!r} (tcp, udp or sctp)")
        if not 0 <= self.port < 65536:
            raise ValueError(f"port out of range: {self.port}")
        addr, fam = _norm_addr(self.address)
        if self.family is not None and self.family != fam:
            raise ValueError(f"{self.address} is not an IPv{self.family} address")
        object.__setattr__(self, "protocol", proto)
        object.__setattr__(self, "address", addr)
        object.__setattr__(self, "family", fam)
        object.__setattr__(self, "_hash", hash((proto, addr, self.port, None, fam)))

    def __hash__(self) -> int:
        # computed once: a reconcile looks services up by key some twenty times each
        return self._hash  # type: ignore[attr-defined,no-any-return]

    def sort_key(self) -> tuple:
        """ipvsadm's order: fwmark 0 first, then family, protocol, address, port."""
        return (
            self.fwmark or 0,
            self.family,
            PROTOCOLS.get(self.protocol or "", 0),
            _addr_int(self.address) if self.address else 0,
            self.port or 0,
        )

    def __str__(self) -> str:
        if self.fwmark is not None:
            return f"FWM {self.fwmark}" + (" IPv6" if self.family == 6 else "")
        assert self.protocol is not None and self.family is not None
        return f"{self.protocol.upper()} {_addr_port(self.address, self.port, self.family)}"


class Stats(NamedTuple):
    """The kernel's counters of a virtual service or real server (`ipvsadm -Ln --stats --rate`).

    Totals since the entry was made (connections, packets, bytes) and the kernel's
    rate estimates per second (2 s estimator, like ipvsadm --rate). `active` and
    `inactive` are the connection table's current counts for a real server (what
    `ipvsadm -Ln` shows; 0 for a service). A tuple, not a dataclass: a read makes one
    per real server, and a frozen dataclass of 13 fields costs 20x more to build.
    """

    connections: int = 0
    packets_in: int = 0
    packets_out: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    cps: int = 0
    pps_in: int = 0
    pps_out: int = 0
    bps_in: int = 0
    bps_out: int = 0
    active: int = 0
    inactive: int = 0
    persistent: int = 0


@dataclass(frozen=True)
class Service:
    """A virtual service: its key and how it schedules.

    `persistence` is the persistence timeout in seconds (0: not persistent; sets
    the kernel's PERSISTENT flag). `netmask` is the persistence granularity as a
    prefix length (default: the whole address, 32 or 128). `flags` holds the other
    IP_VS_SVC_F_* bits (one-packet scheduling, scheduler flags); the kernel's own
    HASHED bit and the PERSISTENT bit are not stored here.
    """

    key: ServiceKey
    scheduler: str = "wlc"
    persistence: int = 0
    netmask: int | None = None
    flags: int = 0
    # the kernel's counters when read from it; never part of equality (diff compares config)
    stats: "Stats | None" = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        full = 128 if self.key.family == 6 else 32
        mask = full if self.netmask is None else self.netmask
        if not 0 < mask <= full:
            raise ValueError(f"netmask /{mask} out of range for IPv{self.key.family}")
        if self.persistence < 0:
            raise ValueError("persistence timeout must be >= 0")
        object.__setattr__(self, "netmask", mask)
        object.__setattr__(self, "flags", self.flags & ~(SVC_F_PERSISTENT | SVC_F_HASHED))

    @property
    def kernel_flags(self) -> int:
        """The flag word as the kernel wants it (PERSISTENT from `persistence`)."""
        return self.flags | (SVC_F_PERSISTENT if self.persistence else 0)

    def __str__(self) -> str:
        s = f"{self.key} {self.scheduler}"
        if self.persistence:
            s += f" persistent {self.persistence}"
            full = 128 if self.key.family == 6 else 32
            if self.netmask != full:
                s += f" mask /{self.netmask}"
        if self.flags & SVC_F_ONEPACKET:
            s += " ops"
        return s


@dataclass(frozen=True)
class Dest:
    """A real server of a virtual service.

    `forwarding`: 'dr' (direct routing, ipvsadm -g, "Route"), 'nat' (-m, "Masq"),
    'tun' (-i, "Tunnel"). Weight 0 quiesces the server (no new connections).
    Thresholds 0 mean unlimited. Like ipvsadm, give a DR/TUN real server the
    service's port: the kernel does not rewrite ports for them. `stats` are the kernel's
    counters when read from it (None otherwise); they are not part of the entry
    (`compare=False`), so a diff never rewrites a server for them.
    """

    address: str
    port: int
    forwarding: Forwarding = "dr"
    weight: int = 1
    upper_threshold: int = 0
    lower_threshold: int = 0
    stats: "Stats | None" = field(default=None, compare=False, repr=False)
    # (address, port), set by the constructors: the owner asks each entry for it several
    # times per reconcile, and a property built the tuple every time
    key: tuple[str, int] = field(init=False, compare=False, repr=False)

    @property
    def active_conns(self) -> int | None:
        """The kernel's active connections when read from it (a drain ends at 0: policy.py)."""
        return None if self.stats is None else self.stats.active

    def __post_init__(self) -> None:
        addr, _ = _norm_addr(self.address)
        object.__setattr__(self, "address", addr)
        object.__setattr__(self, "key", (addr, self.port))
        if self.forwarding not in FORWARDING_NAMES:
            raise ValueError(f"unknown forwarding {self.forwarding!r} (dr, nat or tun)")
        if not 0 <= self.port < 65536:
            raise ValueError(f"port out of range: {self.port}")
        if not 0 <= self.weight < 2**31:
            raise ValueError(f"weight out of range: {self.weight}")
        if self.lower_threshold < 0 or self.upper_threshold < 0:
            raise ValueError("thresholds must be >= 0 (0: none)")
        if self.lower_threshold > self.upper_threshold:
            raise ValueError("lower threshold above upper threshold (the kernel refuses it)")

    @classmethod
    def from_kernel(cls, address: str, port: int, forwarding: Forwarding, weight: int,
                    upper_threshold: int, lower_threshold: int, stats: Stats | None) -> "Dest":
        """A real server as the kernel holds it, without the checks: its values are valid
        by construction and `address` is canonical (`Dest.canonical`). A read builds one
        per (service, real server); the checked constructor doubled its cost."""
        d = object.__new__(cls)
        d.__dict__.update(address=address, port=port, forwarding=forwarding, weight=weight,
                          upper_threshold=upper_threshold, lower_threshold=lower_threshold, stats=stats,
                          key=(address, port))
        return d

    @staticmethod
    def canonical(address: str) -> str:
        """The text form a Dest stores for `address`."""
        return _norm_addr(address)[0]

    @property
    def family(self) -> int:
        return _norm_addr(self.address)[1]

    def sort_key(self) -> tuple:
        return (self.family, _addr_int(self.address), self.port)

    def __str__(self) -> str:
        s = f"{_addr_port(self.address, self.port, self.family)} {FORWARDING_NAMES[self.forwarding]} weight {self.weight}"
        if self.upper_threshold or self.lower_threshold:
            s += f" thresholds {self.lower_threshold}-{self.upper_threshold}"
        return s


DestKey = tuple[str, int]
Table = dict[ServiceKey, tuple[Service, dict[DestKey, Dest]]]
"""service key → (service, {(address, port): dest}). Plain dicts compare with ==."""


def make_table(entries: Iterable[tuple[Service, Iterable[Dest]]]) -> Table:
    """Build a Table from (service, dests) pairs; duplicates are an error."""
    table: Table = {}
    for svc, dests in entries:
        if svc.key in table:
            raise ValueError(f"duplicate service {svc.key}")
        ds: dict[DestKey, Dest] = {}
        for d in dests:
            if d.key in ds:
                raise ValueError(f"duplicate real server {d.address}:{d.port} in {svc.key}")
            ds[d.key] = d
        table[svc.key] = (svc, ds)
    return table


@dataclass(frozen=True)
class Op:
    """One change to the kernel table: add/edit/del a service or a real server.

    For dest ops `service` is the service the real server belongs to (its key is
    what matters). For 'del' ops the objects are the ones found in the kernel.
    """

    action: Action
    service: Service
    dest: Dest | None = None

    @property
    def target(self) -> Literal["service", "dest"]:
        return "service" if self.dest is None else "dest"

    def __str__(self) -> str:
        if self.dest is None:
            what = str(self.service) if self.action != "del" else str(self.service.key)
            return f"{self.action} service {what}"
        d = self.dest
        what = str(d) if self.action != "del" else _addr_port(d.address, d.port, d.family)
        return f"{self.action} dest {self.service.key} -> {what}"


def diff(wanted: Table, actual: Table, owned: Iterable[ServiceKey] = ()) -> list[Op]:
    """The operations that make `actual` look like `wanted` for owned services.

    A service is touched if it is in `wanted` or in `owned` (the services pymon is
    configured for; an owned service missing from `wanted` is deleted). Every other
    service in `actual` and its real servers are left alone. A real server that
    differs only in weight, forwarding or thresholds is edited in place, never
    deleted and re-added (that would drop its connections).

    Order, per service in ipvsadm order: a new service is added before its real
    servers; on a kept service new real servers are added before old ones are
    deleted (so it never runs empty on a swap); a removed service loses its real
    servers first, then itself.
    """
    touched = set(wanted) | set(owned)
    ops: list[Op] = []
    for key in sorted(touched, key=ServiceKey.sort_key):
        want = wanted.get(key)
        have = actual.get(key)
        if want is None and have is None:
            continue
        if want is None:
            assert have is not None
            svc, dests = have
            for d in sorted(dests.values(), key=Dest.sort_key):
                ops.append(Op("del", svc, d))
            ops.append(Op("del", svc))
            continue
        wsvc, wdests = want
        if have is None:
            ops.append(Op("add", wsvc))
            for d in sorted(wdests.values(), key=Dest.sort_key):
                ops.append(Op("add", wsvc, d))
            continue
        hsvc, hdests = have
        if hsvc is not wsvc and hsvc != wsvc:
            ops.append(Op("edit", wsvc))
        adds, edits, dels = [], [], []
        for dk, d in wdests.items():
            h = hdests.get(dk)
            if h is None:
                adds.append(Op("add", wsvc, d))
            elif h is not d and h != d:  # most entries are the very objects the last apply put there
                edits.append(Op("edit", wsvc, d))
        for dk, h in hdests.items():
            if dk not in wdests:
                dels.append(Op("del", wsvc, h))
        for group in (adds, edits, dels):
            group.sort(key=lambda op: op.dest.sort_key())  # type: ignore[union-attr]
            ops.extend(group)
    return ops


# ipvsadm's words for kernel errors, per operation (libipvs ipvs_strerror).
_ERRORS: dict[tuple[str, str, int], str] = {
    ("add", "service", errno.EEXIST): "Service already exists",
    ("add", "service", errno.ENOENT): "Scheduler or persistence engine not found",
    ("edit", "service", errno.ESRCH): "No such service",
    ("edit", "service", errno.ENOENT): "Scheduler or persistence engine not found",
    ("del", "service", errno.ESRCH): "No such service",
    ("add", "dest", errno.ESRCH): "Service not defined",
    ("add", "dest", errno.EEXIST): "Destination already exists",
    ("edit", "dest", errno.ESRCH): "Service not defined",
    ("edit", "dest", errno.ENOENT): "No such destination",
    ("del", "dest", errno.ESRCH): "Service not defined",
    ("del", "dest", errno.ENOENT): "No such destination",
}
_GENERIC_ERRORS: dict[int, str] = {
    errno.EPERM: "Permission denied (pymon must run as root or with CAP_NET_ADMIN)",
    errno.EINVAL: "Invalid argument (IPv4/IPv6 mix other than tunnel, bad address or value)",
    errno.ERANGE: "Value out of range (weight, or lower threshold above upper)",
    errno.ENOPROTOOPT: "Protocol not available",
    errno.ENOMEM: "Memory allocation problem",
    errno.EOPNOTSUPP: "Operation not supported with IPv6",
    errno.EAFNOSUPPORT: "Operation not supported with specified address family",
    errno.EMSGSIZE: "Module is wrong version",
}


def explain(code: int, op: Op | None = None) -> str:
    """One-line reason for a kernel errno, in ipvsadm's words where it has some."""
    if op is not None:
        msg = _ERRORS.get((op.action, op.target, code))
        if msg:
            return msg
    if code in _GENERIC_ERRORS:
        return _GENERIC_ERRORS[code]
    try:
        return f"{errno.errorcode[code]} ({code})"
    except KeyError:
        return f"error {code}"


class IPVSError(Exception):
    """An IPVS operation failed; str() is one line fit for a log, no traceback."""

    def __init__(self, message: str, code: int | None = None, op: Op | None = None):
        super().__init__(message)
        self.code = code
        self.op = op

    @classmethod
    def for_op(cls, op: Op, code: int) -> "IPVSError":
        return cls(f"{op}: {explain(code, op)}", code, op)


def run_op(table: Table, op: Op) -> None:
    """Apply one op to `table` in place as the kernel would, or raise its IPVSError.

    Adding an existing service or real server fails (EEXIST), editing or deleting a
    missing one fails (ESRCH/ENOENT), deleting a service drops its real servers. An
    edit keeps the entry's counters (the kernel keeps them too).
    """
    key = op.service.key
    entry = table.get(key)
    if op.dest is None:
        if op.action == "add":
            if entry is not None:
                raise IPVSError.for_op(op, errno.EEXIST)
            table[key] = (op.service, {})
        elif entry is None:
            raise IPVSError.for_op(op, errno.ESRCH)
        elif op.action == "edit":
            svc = op.service if entry[0].stats is None else replace(op.service, stats=entry[0].stats)
            table[key] = (svc, entry[1])
        else:
            del table[key]
        return
    if entry is None:
        raise IPVSError.for_op(op, errno.ESRCH)
    dests = entry[1]
    old = dests.get(op.dest.key)
    if op.action == "add":
        if old is not None:
            raise IPVSError.for_op(op, errno.EEXIST)
        dests[op.dest.key] = op.dest
    elif old is None:
        raise IPVSError.for_op(op, errno.ENOENT)
    elif op.action == "edit":
        dests[op.dest.key] = op.dest if old.stats is None else replace(op.dest, stats=old.stats)
    else:
        del dests[op.dest.key]


def after(table: Table, ops: Iterable[Op]) -> Table:
    """The table once all `ops` succeeded on it (a new table; `table` is unchanged).

    What the kernel holds after an apply whose every op was acknowledged, so the
    owner need not read it back. A service no op touches keeps its entry (the same
    object): the owner tells the services a change touched by identity, and copying
    every entry would cost the whole table for a change to a few.
    """
    out: Table = dict(table)
    copied: set[ServiceKey] = set()
    for op in ops:
        key = op.service.key
        if key not in copied:
            copied.add(key)
            if key in out:
                svc, dests = out[key]
                out[key] = (svc, dict(dests))
        run_op(out, op)
    return out


class MemoryTable:
    """In-memory twin of `pymon.ipvs.kernel.KernelIPVS`: same async interface, same errors.

    Behaves like the kernel where it matters to callers (`run_op`), refuses an
    unknown scheduler like the kernel (ENOENT), and tries every op of an `apply()`
    on its own. It has no counters: its entries' `stats` stay None.
    """

    def __init__(self, initial: Table | None = None, *, schedulers: Iterable[str] | None = None):
        self._table: Table = copy.deepcopy(initial) if initial else {}
        self.schedulers = set(schedulers) if schedulers is not None else {
            "rr", "wrr", "lc", "wlc", "lblc", "lblcr", "dh", "sh", "sed", "nq", "fo", "ovf", "mh", "twos",
        }
        self.applied: list[Op] = []  # every op that succeeded, in order
        self.closed = False

    async def read(self) -> Table:
        return copy.deepcopy(self._table)

    def run(self, op: Op) -> None:
        """Apply one op or raise IPVSError."""
        exists = op.service.key in self._table
        # the kernel looks the service up first (EEXIST/ESRCH), then the scheduler
        if op.dest is None and (op.action, exists) in (("add", False), ("edit", True)) \
                and op.service.scheduler not in self.schedulers:
            raise IPVSError.for_op(op, errno.ENOENT)
        run_op(self._table, op)
        self.applied.append(op)

    async def apply(self, ops: Iterable[Op]) -> list[str]:
        errors: list[str] = []
        for op in ops:
            try:
                self.run(op)
            except IPVSError as e:
                errors.append(str(e))
        return errors

    async def close(self) -> None:
        self.closed = True

    async def __aenter__(self) -> "MemoryTable":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def _sched_flag_names(svc: Service) -> list[str]:
    """ipvsadm's names for the scheduler flags (-b), in its order."""
    if svc.scheduler in ("sh", "mh"):
        names = [f"{svc.scheduler}-fallback", f"{svc.scheduler}-port", "flag-3"]
    else:
        names = ["flag-1", "flag-2", "flag-3"]
    bits = (SVC_F_SCHED1, SVC_F_SCHED2, SVC_F_SCHED3)
    return [n for n, b in zip(names, bits) if svc.flags & b]


def _fmt_netmask(svc: Service) -> str | None:
    full = 128 if svc.key.family == 6 else 32
    if svc.netmask == full:
        return None
    if svc.key.family == 6:
        return str(svc.netmask)
    return str(ipaddress.IPv4Network(f"0.0.0.0/{svc.netmask}").netmask)


def format_ipvsadm(
    table: Mapping[ServiceKey, tuple[Service, Mapping[DestKey, Dest]]],
    *,
    version: str = "1.2.1",
    size: int = 4096,
    stats: bool = False,
) -> str:
    """The table as `ipvsadm -Ln` prints it (same order, columns and words).

    Connection counts come from each real server's `stats` (0 when the entry has
    none, as in a wanted table). `stats=True` prints the counters instead, as
    `ipvsadm -Ln --stats --exact` does. Services and real servers are in numeric
    order (fwmark 0 first, family, protocol number, address, port); ipvsadm means
    the same order but compares addresses by a wrapping u32 subtraction, so it
    differs from ipvsadm for addresses 2^31 or more apart (ipvsadm lists 192.0.2.1
    before 10.0.0.1).
    """
    lines = [f"IP Virtual Server version {version} (size={size})"]
    if stats:
        lines += ["Prot LocalAddress:Port               Conns   InPkts  OutPkts  InBytes OutBytes",
                  "  -> RemoteAddress:Port"]
    else:
        lines += ["Prot LocalAddress:Port Scheduler Flags",
                  "  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn"]
    for key in sorted(table, key=ServiceKey.sort_key):
        svc, dests = table[key]
        if key.fwmark is not None:
            name = f"FWM  {key.fwmark}" + (" IPv6" if key.family == 6 else "")
        else:
            assert key.protocol is not None and key.family is not None
            name = f"{key.protocol.upper():<4} {_addr_port(key.address, key.port, key.family)}"
        if stats:
            lines.append(f"{name:<33}{_exact_counters(svc.stats)}")
        else:
            lines.append(_service_line(name, svc))
        for d in sorted(dests.values(), key=Dest.sort_key):
            dname = _addr_port(d.address, d.port, d.family)
            if stats:
                lines.append(f"  -> {dname:<28}{_exact_counters(d.stats)}")
                continue
            st = d.stats or Stats()
            lines.append(
                f"  -> {dname:<28} {FORWARDING_NAMES[d.forwarding]:<7} {d.weight:<6} {st.active:<10} {st.inactive:<10}"
            )
    return "\n".join(lines) + "\n"


def _service_line(name: str, svc: Service) -> str:
    line = f"{name} {svc.scheduler}"
    sched_flags = _sched_flag_names(svc)
    if sched_flags:
        line += f" ({','.join(sched_flags)})"
    if svc.persistence:
        line += f" persistent {svc.persistence}"
        mask = _fmt_netmask(svc)
        if mask:
            line += f" mask {mask}"
    if svc.flags & SVC_F_ONEPACKET:
        line += " ops"
    return line


def _exact_counters(st: Stats | None) -> str:
    """ipvsadm's --exact numbers: right-aligned in 9 columns, wider numbers get one space."""
    st = st or Stats()
    return "".join(f"{n:>{max(9, len(str(n)) + 1)}}"
                   for n in (st.connections, st.packets_in, st.packets_out, st.bytes_in, st.bytes_out))


__all__ = [
    "Action", "Dest", "DestKey", "Forwarding", "IPVSError", "MemoryTable", "Op", "Protocol",
    "Service", "ServiceKey", "Stats", "Table", "after", "diff", "explain", "format_ipvsadm", "make_table",
    "run_op",
]
