"""The kernel's IPVS table, read and changed over generic netlink.

`KernelIPVS` is the only code that talks to the kernel's IP Virtual Server; it has
the same async interface as `pymon.ipvs.table.MemoryTable`:

    async with KernelIPVS() as ipvs:
        actual = await ipvs.read()                      # Table, with the kernel's counters
        errors = await ipvs.apply(diff(wanted, actual, owned))   # list[str]

Every failure is an `IPVSError` with a one-line message (no netlink traceback):
"IPVS unavailable: generic netlink family IPVS not found (is ip_vs loaded?)",
"del dest TCP 10.0.0.1:80 -> 10.0.0.2:80: No such destination", ...

The messages are built and parsed here with `struct` (linux/ip_vs.h, the same
attributes ipvsadm's libipvs sends), reading only the attributes the model holds:
a general netlink library costs 10-20x more per destination at thousands of them
(docs/performance.md, "IPVS at scale"). Changes go out many per sendmsg; the
kernel runs each on its own and answers each failure, so one failed op neither
stops nor hides the others.

Why plain blocking socket calls in async code: a netlink request to the kernel
is handled inside sendmsg() and a dump's next part is produced inside recv(), so
neither ever waits on anything but the CPU; the loop is given a turn between
services and between batches instead.

Wire details that matter:
- ADDR is a 16-byte union nf_inet_addr in the kernel; an IPv4 address may be sent
  as 4 bytes (the kernel zero-fills) and comes back as 16.
- The kernel requires a netmask with every full service message. For IPv4 it is
  the mask in network order; for IPv6 the kernel reads a prefix length as a raw
  (host order) u32.
- IPVS_CMD_*_DEST and dest dumps need only the service's key attributes.
"""

from __future__ import annotations

import asyncio
import errno
import operator
import socket
import struct
import sys
from typing import Any, Iterable, Iterator

from pymon.ipvs.table import (
    PROTOCOLS,
    SVC_F_HASHED,
    SVC_F_PERSISTENT,
    Dest,
    IPVSError,
    Op,
    Service,
    ServiceKey,
    Stats,
    Table,
    explain,
)

__all__ = ["KernelIPVS", "IPVSError"]

# linux/netlink.h, linux/genetlink.h
NETLINK_GENERIC = 16
NLM_F_REQUEST, NLM_F_ACK, NLM_F_DUMP = 0x1, 0x4, 0x300
NLMSG_ERROR, NLMSG_DONE = 2, 3
SOL_NETLINK, NETLINK_CAP_ACK = 270, 10
SO_RCVBUFFORCE = 33
GENL_ID_CTRL, CTRL_CMD_GETFAMILY, CTRL_ATTR_FAMILY_ID, CTRL_ATTR_FAMILY_NAME = 0x10, 3, 1, 2
NLA_TYPE_MASK = 0x3FFF  # without NLA_F_NESTED / NLA_F_NET_BYTEORDER

# linux/ip_vs.h
IPVS_GENL_NAME, IPVS_GENL_VERSION = b"IPVS", 1
CMD_NEW_SERVICE, CMD_SET_SERVICE, CMD_DEL_SERVICE, CMD_GET_SERVICE = 1, 2, 3, 4
CMD_NEW_DEST, CMD_SET_DEST, CMD_DEL_DEST, CMD_GET_DEST = 5, 6, 7, 8
CMD_ATTR_SERVICE, CMD_ATTR_DEST = 1, 2
SVC_AF, SVC_PROTOCOL, SVC_ADDR, SVC_PORT, SVC_FWMARK = 1, 2, 3, 4, 5
SVC_SCHED_NAME, SVC_FLAGS, SVC_TIMEOUT, SVC_NETMASK, SVC_STATS, SVC_STATS64 = 6, 7, 8, 9, 10, 12
DEST_ADDR, DEST_PORT, DEST_FWD_METHOD, DEST_WEIGHT, DEST_U_THRESH, DEST_L_THRESH = 1, 2, 3, 4, 5, 6
DEST_ACTIVE_CONNS, DEST_INACT_CONNS, DEST_PERSIST_CONNS, DEST_STATS = 7, 8, 9, 10
DEST_ADDR_FAMILY, DEST_STATS64 = 11, 12
# IPVS_STATS_ATTR_CONNS .. OUTBPS are 1 .. 10, in the order of Stats' first ten fields

_FWD_TO_KERNEL = {"nat": 0, "tun": 2, "dr": 3}  # IP_VS_CONN_F_MASQ/TUNNEL/DROUTE
_FWD_FROM_KERNEL = {v: k for k, v in _FWD_TO_KERNEL.items()}
_PROTO_FROM_NUM = {v: k for k, v in PROTOCOLS.items()}
_AF = {4: socket.AF_INET, 6: socket.AF_INET6}
_AF_FROM_KERNEL = {v: k for k, v in _AF.items()}
_MASK_ALL_FLAGS = 0xFFFFFFFF

BATCH = 256  # ops per sendmsg (~30 KiB); even if all fail, their error replies fit the receive buffer
_RECV = 1 << 16
_RCVBUF = 1 << 20

_HDR = struct.Struct("=IHHII")  # nlmsghdr: len, type, flags, seq, pid
_GENL = struct.Struct("=BBH")  # genlmsghdr: cmd, version, reserved
_NLA = struct.Struct("=HH")  # nlattr: len, type
_U16 = struct.Struct("=H")
_U32 = struct.Struct("=I")
_BE16 = struct.Struct("!H")
_ERR = struct.Struct("=i")


# --- encoding -------------------------------------------------------------------


def _nla(kind: int, payload: bytes) -> bytes:
    n = 4 + len(payload)
    return _NLA.pack(n, kind) + payload + b"\0" * (-n & 3)


def _addr(family: int, address: str) -> bytes:
    return socket.inet_pton(_AF[family], address)


def _netmask(svc: Service) -> bytes:
    if svc.key.family == 6:
        return _U32.pack(svc.netmask or 128)  # a prefix length, raw
    return struct.pack("!I", (0xFFFFFFFF << (32 - (svc.netmask or 32))) & 0xFFFFFFFF)


def service_key_attrs(key: ServiceKey) -> bytes:
    """The attributes that name a service (all a dest op or a dest dump needs)."""
    assert key.family is not None
    out = _nla(SVC_AF, _U16.pack(_AF[key.family]))
    if key.fwmark is not None:
        return out + _nla(SVC_FWMARK, _U32.pack(key.fwmark))
    assert key.protocol is not None and key.address is not None and key.port is not None
    return (out + _nla(SVC_PROTOCOL, _U16.pack(PROTOCOLS[key.protocol]))
            + _nla(SVC_ADDR, _addr(key.family, key.address)) + _nla(SVC_PORT, _BE16.pack(key.port)))


def service_attrs(svc: Service) -> bytes:
    """A full service (IPVS_CMD_NEW/SET_SERVICE): key, scheduler, flags, timeout, netmask."""
    return (service_key_attrs(svc.key)
            + _nla(SVC_SCHED_NAME, svc.scheduler.encode() + b"\0")
            + _nla(SVC_FLAGS, struct.pack("=II", svc.kernel_flags, _MASK_ALL_FLAGS))
            + _nla(SVC_TIMEOUT, _U32.pack(svc.persistence))
            + _nla(SVC_NETMASK, _netmask(svc)))


def dest_attrs(d: Dest, full: bool = True) -> bytes:
    """A real server: its key, and for NEW/SET_DEST how it forwards and weighs."""
    out = (_nla(DEST_ADDR, _addr(d.family, d.address)) + _nla(DEST_PORT, _BE16.pack(d.port))
           + _nla(DEST_ADDR_FAMILY, _U16.pack(_AF[d.family])))
    if full:
        out += (_nla(DEST_FWD_METHOD, _U32.pack(_FWD_TO_KERNEL[d.forwarding]))
                + _nla(DEST_WEIGHT, _U32.pack(d.weight))
                + _nla(DEST_U_THRESH, _U32.pack(d.upper_threshold))
                + _nla(DEST_L_THRESH, _U32.pack(d.lower_threshold)))
    return out


def genl_message(family_id: int, cmd: int, flags: int, seq: int, attrs: bytes) -> bytes:
    body = _GENL.pack(cmd, IPVS_GENL_VERSION, 0) + attrs
    return _HDR.pack(16 + len(body), family_id, flags, seq, 0) + body


def op_message(family_id: int, seq: int, op: Op, ack: bool = True) -> bytes:
    """One op as an IPVS_CMD_{NEW,SET,DEL}_{SERVICE,DEST} request.

    Without `ack` the kernel answers only if the op fails (netlink_rcv_skb acks a
    success only when asked to).
    """
    flags = NLM_F_REQUEST | (NLM_F_ACK if ack else 0)
    if op.dest is None:
        cmd = {"add": CMD_NEW_SERVICE, "edit": CMD_SET_SERVICE, "del": CMD_DEL_SERVICE}[op.action]
        inner = service_key_attrs(op.service.key) if op.action == "del" else service_attrs(op.service)
        return genl_message(family_id, cmd, flags, seq, _nla(CMD_ATTR_SERVICE, inner))
    cmd = {"add": CMD_NEW_DEST, "edit": CMD_SET_DEST, "del": CMD_DEL_DEST}[op.action]
    return genl_message(family_id, cmd, flags, seq,
                        _nla(CMD_ATTR_SERVICE, service_key_attrs(op.service.key))
                        + _nla(CMD_ATTR_DEST, dest_attrs(op.dest, full=op.action != "del")))


# --- decoding -------------------------------------------------------------------

Fields = dict[tuple[int, ...], "int | bytes"]
"""A reply's attributes by path of types, e.g. (CMD_ATTR_DEST, DEST_WEIGHT) or
(CMD_ATTR_DEST, DEST_STATS64, 1); 1/2/4/8-byte values as host-order ints, others (and
addresses, ports, the flags struct and the scheduler name) as bytes."""


def _is_nest(depth: int, kind: int) -> bool:
    """Nests of IPVS replies: the command attribute, and its STATS/STATS64."""
    return depth == 0 or (depth == 1 and kind in (SVC_STATS, SVC_STATS64))  # == DEST_STATS/DEST_STATS64


def _walk(view: memoryview, start: int, end: int, path: tuple[int, ...],
          out: list[tuple[int, int, tuple[int, ...], bool]]) -> None:
    """(offset, length, path, is a nest) of every attribute, in order, nests before their members."""
    while start + 4 <= end:
        n, kind = _NLA.unpack_from(view, start)
        if n < 4 or start + n > end:
            raise ValueError(f"bad netlink attribute at {start}")
        here = path + (kind & NLA_TYPE_MASK,)
        nest = _is_nest(len(path), kind & NLA_TYPE_MASK)
        out.append((start, n, here, nest))
        if nest:
            _walk(view, start + 4, start + n, here, out)
        start += (n + 3) & ~3


_VALUE_FORMAT = {1: "B", 2: "H", 4: "I", 8: "Q"}  # host order; other lengths stay bytes
_RAW = {(CMD_ATTR_SERVICE, SVC_ADDR), (CMD_ATTR_DEST, DEST_ADDR),  # always bytes
        (CMD_ATTR_SERVICE, SVC_PORT), (CMD_ATTR_DEST, DEST_PORT),  # big-endian
        (CMD_ATTR_SERVICE, SVC_FLAGS), (CMD_ATTR_SERVICE, SVC_SCHED_NAME)}


def _format(path: tuple[int, ...], length: int) -> str:
    return f"{length}s" if path in _RAW else _VALUE_FORMAT.get(length, f"{length}s")


def decode(payload: memoryview) -> Fields:
    """Every attribute of one reply (past the genl header), walked one by one."""
    entries: list[tuple[int, int, tuple[int, ...], bool]] = []
    _walk(payload, 0, len(payload), (), entries)
    out: Fields = {}
    for start, n, path, nest in entries:
        if nest:
            continue
        raw = payload[start + 4:start + n]
        out[path] = bytes(raw) if _format(path, n - 4).endswith("s") else int.from_bytes(raw, sys.byteorder)
    return out


def _paths(top: int, *kinds: int) -> list[tuple[int, ...]]:
    return [(top, kind) for kind in kinds]


def _stats_paths(top: int, nest: int) -> list[tuple[int, ...]]:
    return [(top, nest, i) for i in range(1, 11)]


# What parse_service / parse_dest read, in their order; the ten counters come from
# STATS64 where the kernel sends it (all u64), else from STATS (u32, bytes u64).
SERVICE_FIELDS = _paths(CMD_ATTR_SERVICE, SVC_AF, SVC_PROTOCOL, SVC_ADDR, SVC_PORT, SVC_FWMARK, SVC_SCHED_NAME,
                        SVC_FLAGS, SVC_TIMEOUT, SVC_NETMASK)
DEST_FIELDS = _paths(CMD_ATTR_DEST, DEST_ADDR, DEST_PORT, DEST_FWD_METHOD, DEST_WEIGHT, DEST_U_THRESH,
                     DEST_L_THRESH, DEST_ADDR_FAMILY, DEST_ACTIVE_CONNS, DEST_INACT_CONNS, DEST_PERSIST_CONNS)
_STATS_PATHS = {CMD_ATTR_SERVICE: (_stats_paths(CMD_ATTR_SERVICE, SVC_STATS64), _stats_paths(CMD_ATTR_SERVICE, SVC_STATS)),
                CMD_ATTR_DEST: (_stats_paths(CMD_ATTR_DEST, DEST_STATS64), _stats_paths(CMD_ATTR_DEST, DEST_STATS))}


def _wanted(fields: list[tuple[int, ...]], present: Iterable[tuple[int, ...]]) -> list[tuple[int, ...]]:
    """`fields` and the ten counter paths of the stats nest the reply has."""
    stats64, stats32 = _STATS_PATHS[fields[0][0]]
    return fields + (stats64 if stats64[0] in set(present) else stats32)


def pick(fields: list[tuple[int, ...]], payload: memoryview) -> tuple["int | bytes | None", ...]:
    """The values of `fields` (then the ten counters) in one reply, walked attribute by attribute."""
    found = decode(payload)
    return tuple(found.get(p) for p in _wanted(fields, found))


class _Layout:
    """The shape of one reply, learned from it: the attribute types and lengths in order.

    The kernel writes every service (and every real server) of a dump with the same
    attributes in the same order, so one precompiled struct unpacks each of them in
    one call, after checking that its attribute headers are the learned ones
    (otherwise the reply is walked).
    """

    def __init__(self, fields: list[tuple[int, ...]], payload: memoryview):
        entries: list[tuple[int, int, tuple[int, ...], bool]] = []
        _walk(payload, 0, len(payload), (), entries)
        fmt, heads, at = ["="], [], {}
        i = 0
        for _start, n, path, nest in entries:
            fmt.append("HH")
            heads += [i, i + 1]
            i += 2
            if not nest:
                fmt.append(_format(path, n - 4) + "x" * (-n & 3))
                at[path] = i
                i += 1
        self.struct = struct.Struct("".join(fmt))
        self.heads = operator.itemgetter(*heads)
        # a field the reply lacks reads the None appended after the unpacked values
        self.values = operator.itemgetter(*[at.get(p, i) for p in _wanted(fields, at)])
        self.expected = self.heads(self.struct.unpack_from(payload)) if self.struct.size == len(payload) else None

    def pick(self, payload: memoryview) -> tuple["int | bytes | None", ...] | None:
        if len(payload) != self.struct.size:
            return None
        v = self.struct.unpack_from(payload)
        if self.heads(v) != self.expected:
            return None
        return self.values(v + (None,))


class Decoder:
    """pick() with the last learned layout as a fast path (one per dump kind)."""

    def __init__(self, fields: list[tuple[int, ...]]) -> None:
        self.fields = fields
        self.layout: _Layout | None = None

    def __call__(self, payload: memoryview) -> tuple["int | bytes | None", ...]:
        if self.layout is not None:
            values = self.layout.pick(payload)
            if values is not None:
                return values
        self.layout = _Layout(self.fields, payload)
        return pick(self.fields, payload)


_TEXT: dict[bytes, str] = {}  # raw address -> canonical text; a few real servers recur in many services


def _text_addr(family: int, raw: bytes) -> str:
    raw = raw[:4] if family == 4 else raw[:16]
    text = _TEXT.get(raw)
    if text is None:
        if len(_TEXT) > 65536:
            _TEXT.clear()
        text = _TEXT[raw] = Dest.canonical(socket.inet_ntop(_AF[family], raw))
    return text


def parse_service(v: tuple[Any, ...]) -> Service:
    """A service from SERVICE_FIELDS (+ counters) of a reply to IPVS_CMD_GET_SERVICE."""
    af, proto, addr, port, fwmark, sched, raw_flags, timeout, raw_mask = v[:9]
    family = _AF_FROM_KERNEL.get(af, 4)
    if fwmark:
        key = ServiceKey(fwmark=fwmark, family=family)
    else:
        key = ServiceKey(_PROTO_FROM_NUM.get(proto, "tcp"), _text_addr(family, addr),  # type: ignore[arg-type]
                         int.from_bytes(port, "big"))
    flags = _U32.unpack_from(raw_flags)[0] if raw_flags else 0
    if family == 6:
        netmask = raw_mask or None
    else:  # the mask in network order, read as a host-order u32: count its bits either way
        netmask = bin(raw_mask or 0).count("1") or None
    return Service(
        key=key,
        scheduler=(sched or b"").rstrip(b"\0").decode(),
        persistence=(timeout or 0) if flags & SVC_F_PERSISTENT else 0,
        netmask=netmask,
        flags=flags & ~(SVC_F_PERSISTENT | SVC_F_HASHED),
        stats=Stats(*[x or 0 for x in v[9:]]),
    )


def parse_dest(v: tuple[Any, ...], family: int) -> Dest:
    """A real server and its counters from DEST_FIELDS (+ counters) of a reply to
    IPVS_CMD_GET_DEST; `family` is its service's (older kernels send no ADDR_FAMILY)."""
    addr, port, fwd, weight, uth, lth, af, active, inactive, persistent = v[:10]
    if af is not None:
        family = _AF_FROM_KERNEL.get(af, family)
    return Dest.from_kernel(
        _text_addr(family, addr), int.from_bytes(port, "big"),
        _FWD_FROM_KERNEL.get((fwd or 0) & 0x7, "dr"), weight or 0, uth or 0, lth or 0,  # type: ignore[arg-type]
        Stats(*[x or 0 for x in v[10:]], active or 0, inactive or 0, persistent or 0),
    )


def _family_id(attrs: memoryview) -> int:
    """CTRL_ATTR_FAMILY_ID from a CTRL_CMD_NEWFAMILY reply's attributes."""
    pos = 0
    while pos + 4 <= len(attrs):
        n, kind = _NLA.unpack_from(attrs, pos)
        if n < 4:
            break
        if kind & NLA_TYPE_MASK == CTRL_ATTR_FAMILY_ID:
            return _U16.unpack_from(attrs, pos + 4)[0]
        pos += (n + 3) & ~3
    raise OSError(errno.ENOENT, "no family id in the reply")


def messages(data: bytes | memoryview) -> Iterator[tuple[int, int, memoryview]]:
    """(type, seq, payload) of each netlink message in one datagram."""
    view = memoryview(data)
    pos = 0
    while pos + 16 <= len(view):
        n, kind, _flags, seq, _pid = _HDR.unpack_from(view, pos)
        if n < 16:
            return
        yield kind, seq, view[pos + 16:pos + n]
        pos += (n + 3) & ~3


# --- the socket -----------------------------------------------------------------


class _Genl:
    """One NETLINK_GENERIC socket bound to the IPVS family."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_GENERIC)
        self.seq = 0
        try:
            self.sock.bind((0, 0))
            self.sock.settimeout(30)  # a safety net only: the kernel answers inside the call
            self.sock.setsockopt(SOL_NETLINK, NETLINK_CAP_ACK, 1)  # error acks without the request
            try:  # room for a whole batch of error replies (~1 KiB each); root may exceed rmem_max
                self.sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, _RCVBUF)
            except OSError:
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _RCVBUF)
            self.family = self._resolve()
        except BaseException:
            self.sock.close()
            raise

    def close(self) -> None:
        self.sock.close()

    def _next(self) -> int:
        self.seq += 1
        return self.seq

    def _resolve(self) -> int:
        seq = self._next()
        self.sock.send(genl_message(GENL_ID_CTRL, CTRL_CMD_GETFAMILY, NLM_F_REQUEST, seq,
                                    _nla(CTRL_ATTR_FAMILY_NAME, IPVS_GENL_NAME + b"\0")))
        while True:
            for kind, mseq, payload in messages(self.sock.recv(_RECV)):
                if mseq != seq:
                    continue
                if kind == NLMSG_ERROR:
                    raise OSError(-_ERR.unpack_from(payload)[0], "genl family lookup")
                return _family_id(payload[4:])

    def dump(self, cmd: int, attrs_: bytes) -> list[memoryview]:
        """Every reply payload (past the genl header) of one dump request."""
        seq = self._next()
        self.sock.send(genl_message(self.family, cmd, NLM_F_REQUEST | NLM_F_DUMP, seq, attrs_))
        out: list[memoryview] = []
        while True:
            for kind, mseq, payload in messages(self.sock.recv(_RECV)):
                if mseq != seq:
                    continue
                if kind == NLMSG_DONE:
                    return out
                if kind == NLMSG_ERROR:
                    code = -_ERR.unpack_from(payload)[0]
                    if code:
                        raise OSError(code, "dump")
                    continue
                out.append(payload[4:])

    def batch(self, ops: list[Op]) -> list[int]:
        """Send `ops` in one sendmsg; each one's errno (0: done), in order.

        Only the last op asks for an ack: the kernel runs the messages in order inside
        sendmsg, so an error for any earlier op is queued before that ack, and a
        batch that succeeds costs one recv, not one per op.
        """
        first = self.seq + 1
        last = first + len(ops) - 1
        self.sock.send(b"".join(op_message(self.family, self._next(), op, ack=i == len(ops) - 1)
                                for i, op in enumerate(ops)))
        codes: dict[int, int] = {}
        while last not in codes:
            for kind, mseq, payload in messages(self.sock.recv(_RECV)):
                if kind == NLMSG_ERROR and first <= mseq <= last:
                    codes[mseq] = -_ERR.unpack_from(payload)[0]
        return [codes.get(first + i, 0) for i in range(len(ops))]


def _errno_of(exc: BaseException) -> int | None:
    code = getattr(exc, "errno", None)
    return code if isinstance(code, int) else None


class KernelIPVS:
    """Read and change the kernel's IPVS table (needs CAP_NET_ADMIN and ip_vs).

    One instance holds one netlink socket, opened on first use (and again after a
    failure); calls are serialized with a lock (one place owns the table).
    `apply()` tries every op on its own and returns the error lines of those that
    failed; `read()` raises IPVSError.
    """

    def __init__(self) -> None:
        self._genl: _Genl | None = None
        self._lock = asyncio.Lock()
        self._svc_fields, self._dest_fields = Decoder(SERVICE_FIELDS), Decoder(DEST_FIELDS)
        # the last read's replies (a service's alone, and with its real servers' appended),
        # parsed: an entry whose bytes, counters included, did not change is not parsed again
        self._seen: dict[bytes, tuple[Service, dict[tuple[str, int], Dest]]] = {}

    def _open(self) -> _Genl:
        if self._genl is not None:
            return self._genl
        try:
            self._genl = _Genl()  # the family lookup makes a modular kernel load ip_vs
        except OSError as e:
            code = _errno_of(e)
            if code == errno.ENOENT:
                msg = "IPVS unavailable: generic netlink family IPVS not found (is ip_vs loaded?)"
            elif code == errno.EPERM:
                msg = "IPVS unavailable: permission denied (needs root or CAP_NET_ADMIN)"
            else:
                msg = f"IPVS unavailable: {type(e).__name__}: {e}"
            raise IPVSError(msg, code) from None
        return self._genl

    def _drop(self) -> None:
        genl, self._genl = self._genl, None
        if genl is not None:
            genl.close()

    async def close(self) -> None:
        self._drop()

    async def __aenter__(self) -> "KernelIPVS":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def read(self) -> Table:
        """The whole kernel table, every service (owned or not), its real servers and counters.

        One service dump, then one dest dump per service (the kernel dumps dests
        only per service), giving the loop a turn after each. Replies identical to
        the last read's (idle entries) reuse what was parsed from them.
        """
        async with self._lock:
            genl = self._open()
            try:
                table: Table = {}
                seen: dict[bytes, tuple[Service, dict[tuple[str, int], Dest]]] = {}
                for payload in genl.dump(CMD_GET_SERVICE, b""):
                    raw_svc = bytes(payload)
                    svc = self._seen[raw_svc][0] if raw_svc in self._seen else parse_service(self._svc_fields(payload))
                    replies = genl.dump(CMD_GET_DEST, _nla(CMD_ATTR_SERVICE, service_key_attrs(svc.key)))
                    raw = raw_svc + b"".join(replies)
                    before = self._seen.get(raw)
                    if before is not None:  # not a byte changed since the last read, counters included
                        dests = before[1]
                    else:
                        family = svc.key.family or 4
                        dests = {}
                        for dp in replies:
                            d = parse_dest(self._dest_fields(dp), family)
                            dests[d.key] = d
                    seen[raw_svc] = seen[raw] = (svc, dests)
                    table[svc.key] = (svc, dict(dests))
                    await asyncio.sleep(0)
                self._seen = seen
                return table
            except (OSError, KeyError, ValueError, struct.error) as e:
                self._drop()
                code = _errno_of(e)
                reason = explain(code) if code is not None else f"{type(e).__name__}: {e}"
                raise IPVSError(f"reading the IPVS table: {reason}", code) from None

    async def apply(self, ops: Iterable[Op]) -> list[str]:
        """Apply each op independently; return one error line per failed op.

        Ops go out BATCH per sendmsg; the kernel runs them in order and answers
        each failed one (and the last one).
        Raises IPVSError only when IPVS itself cannot be reached.
        """
        todo = list(ops)
        errors: list[str] = []
        async with self._lock:
            genl = self._open()
            for i in range(0, len(todo), BATCH):
                chunk = todo[i:i + BATCH]
                try:
                    codes = genl.batch(chunk)
                except OSError as e:
                    self._drop()
                    code = _errno_of(e)
                    reason = explain(code) if code is not None else f"{type(e).__name__}: {e}"
                    errors += [f"{op}: {reason} (the kernel's answer was lost: outcome unknown)" for op in todo[i:]]
                    break
                errors += [str(IPVSError.for_op(op, code)) for op, code in zip(chunk, codes) if code]
                if i + BATCH < len(todo):
                    await asyncio.sleep(0)
        return errors
