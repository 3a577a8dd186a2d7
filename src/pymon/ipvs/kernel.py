"""The kernel's IPVS table, read and changed over generic netlink (pyroute2).

`KernelIPVS` is the only code that talks to the kernel's IP Virtual Server; it has
the same async interface as `pymon.ipvs.table.MemoryTable`:

    async with KernelIPVS() as ipvs:
        actual = await ipvs.read()                      # Table
        errors = await ipvs.apply(diff(wanted, actual, owned))   # list[str]

Every failure is an `IPVSError` with a one-line message (no netlink traceback):
"IPVS unavailable: generic netlink family IPVS not found (is ip_vs loaded?)",
"del dest TCP 10.0.0.1:80 -> 10.0.0.2:80: No such destination", ...

pyroute2 0.9 quirks handled here (see pyroute2/ipvs.py):
- `AsyncIPVS()` does not bind by itself: the genl family lookup happens in
  `setup_endpoint()`, which must be awaited before the first request, otherwise
  the request fails with RuntimeError("generic netlink protocol id is not
  obtained yet"). After a failed lookup the socket is useless (a second
  `setup_endpoint()` returns early without binding), so it is closed and a fresh
  one is made on the next call.
- `service("update")`/`dest("update")` map to IPVS_CMD_DEL_*; edits must use "set".
- The kernel requires a netmask with every full service message. pyroute2 fills it
  in only for IPv4 addresses; for IPv6 (and fwmark) services we send it ourselves.
  IPVS_SVC_ATTR_NETMASK is typed ip4addr, but for IPv6 the kernel reads a prefix
  length as a raw u32, so /128 travels as the "address" with those raw bytes.
- `IPVSService.from_message()` is not used: reading attributes straight off the
  netlink message is simpler and does not depend on its key rewriting.
"""

from __future__ import annotations

import asyncio
import errno
import socket
import struct
from typing import Any, Iterable

from pymon.ipvs.table import (
    PROTOCOLS,
    SVC_F_HASHED,
    SVC_F_PERSISTENT,
    Dest,
    IPVSError,
    Op,
    Service,
    ServiceKey,
    Table,
    explain,
)

__all__ = ["KernelIPVS", "IPVSError"]

_FWD_TO_KERNEL = {"nat": 0, "tun": 2, "dr": 3}  # IP_VS_CONN_F_MASQ/TUNNEL/DROUTE
_FWD_FROM_KERNEL = {v: k for k, v in _FWD_TO_KERNEL.items()}
_PROTO_FROM_NUM = {v: k for k, v in PROTOCOLS.items()}
_AF = {4: socket.AF_INET, 6: socket.AF_INET6}
_AF_FROM_KERNEL = {v: k for k, v in _AF.items()}
_MASK_ALL_FLAGS = 0xFFFFFFFF


def _errno_of(exc: BaseException) -> int | None:
    code = getattr(exc, "code", None)
    if isinstance(code, int):
        return code
    code = getattr(exc, "errno", None)
    return code if isinstance(code, int) else None


def _encode_netmask(svc: Service) -> str:
    if svc.key.family == 6:
        # the kernel takes an IPv6 "netmask" as a prefix length in a raw u32
        return socket.inet_ntoa(struct.pack("=I", svc.netmask or 128))
    return socket.inet_ntoa(struct.pack("!I", (0xFFFFFFFF << (32 - (svc.netmask or 32))) & 0xFFFFFFFF))


def _decode_netmask(value: Any, family: int) -> int | None:
    if value is None:
        return None
    raw = socket.inet_aton(value) if isinstance(value, str) else struct.pack("!I", int(value))
    if family == 6:
        return struct.unpack("=I", raw)[0] or None
    return bin(struct.unpack("!I", raw)[0]).count("1") or None


class KernelIPVS:
    """Read and change the kernel's IPVS table (needs CAP_NET_ADMIN and ip_vs).

    One instance holds one netlink socket, opened on first use; calls are
    serialized with a lock (one place owns the table). `apply()` runs each op on its
    own and returns the error lines of those that failed; `read()` raises IPVSError.
    """

    def __init__(self) -> None:
        self._sock: Any = None
        self._lock = asyncio.Lock()

    # --- connection -----------------------------------------------------------

    async def _open(self) -> Any:
        if self._sock is not None:
            return self._sock
        try:
            from pyroute2 import AsyncIPVS
        except ImportError as e:  # pragma: no cover - pyroute2 is a dependency
            raise IPVSError(f"IPVS unavailable: pyroute2 not importable ({e})") from None
        sock = AsyncIPVS()
        try:
            await sock.setup_endpoint()  # binds and resolves the "IPVS" genl family
        except Exception as e:
            sock.close()
            code = _errno_of(e)
            if code == errno.ENOENT:
                msg = "IPVS unavailable: generic netlink family IPVS not found (is ip_vs loaded?)"
            elif code == errno.EPERM:
                msg = "IPVS unavailable: permission denied (needs root or CAP_NET_ADMIN)"
            else:
                msg = f"IPVS unavailable: {type(e).__name__}: {e}"
            raise IPVSError(msg, code) from None
        self._sock = sock
        return sock

    async def close(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()

    async def __aenter__(self) -> "KernelIPVS":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # --- encoding -------------------------------------------------------------

    @staticmethod
    def _service_msg(svc: Service | ServiceKey, full: bool = True) -> Any:
        from pyroute2 import IPVSService

        key = svc if isinstance(svc, ServiceKey) else svc.key
        assert key.family is not None
        kw: dict[str, Any] = {"af": _AF[key.family]}
        if key.fwmark is not None:
            kw["fwmark"] = key.fwmark
        else:
            assert key.protocol is not None
            kw.update(protocol=PROTOCOLS[key.protocol], addr=key.address, port=key.port)
        if isinstance(svc, Service) and full:
            kw.update(
                sched_name=svc.scheduler,
                timeout=svc.persistence,
                netmask=_encode_netmask(svc),
                flags={"flags": svc.kernel_flags, "mask": _MASK_ALL_FLAGS},
            )
        else:
            # a key-only message (dest dumps): still valid as a full message
            full_mask = 128 if key.family == 6 else 32
            kw["netmask"] = _encode_netmask(Service(key, netmask=full_mask))
        return IPVSService(**kw)

    @staticmethod
    def _dest_msg(d: Dest) -> Any:
        from pyroute2 import IPVSDest

        return IPVSDest(
            addr=d.address,
            port=d.port,
            addr_family=_AF[d.family],
            fwd_method=_FWD_TO_KERNEL[d.forwarding],
            weight=d.weight,
            u_thresh=d.upper_threshold,
            l_thresh=d.lower_threshold,
        )

    # --- decoding -------------------------------------------------------------

    @staticmethod
    def _parse_service(msg: Any) -> Service:
        nla = msg.get_attr("IPVS_CMD_ATTR_SERVICE")
        get = nla.get_attr
        family = _AF_FROM_KERNEL.get(get("IPVS_SVC_ATTR_AF"), 4)
        fwmark = get("IPVS_SVC_ATTR_FWMARK") or None
        if fwmark:
            key = ServiceKey(fwmark=fwmark, family=family)
        else:
            proto = get("IPVS_SVC_ATTR_PROTOCOL")
            key = ServiceKey(
                _PROTO_FROM_NUM.get(proto, "tcp"),  # type: ignore[arg-type]
                get("IPVS_SVC_ATTR_ADDR"),
                get("IPVS_SVC_ATTR_PORT"),
            )
        flags_nla = get("IPVS_SVC_ATTR_FLAGS")
        flags = flags_nla["flags"] if flags_nla is not None else 0
        timeout = get("IPVS_SVC_ATTR_TIMEOUT") or 0
        return Service(
            key=key,
            scheduler=get("IPVS_SVC_ATTR_SCHED_NAME") or "",
            persistence=timeout if flags & SVC_F_PERSISTENT else 0,
            netmask=_decode_netmask(get("IPVS_SVC_ATTR_NETMASK"), family),
            flags=flags & ~(SVC_F_PERSISTENT | SVC_F_HASHED),
        )

    @staticmethod
    def _parse_dest(msg: Any) -> Dest:
        nla = msg.get_attr("IPVS_CMD_ATTR_DEST")
        get = nla.get_attr
        fwd = (get("IPVS_DEST_ATTR_FWD_METHOD") or 0) & 0x7
        return Dest(
            address=get("IPVS_DEST_ATTR_ADDR"),
            port=get("IPVS_DEST_ATTR_PORT"),
            forwarding=_FWD_FROM_KERNEL.get(fwd, "dr"),  # type: ignore[arg-type]
            weight=get("IPVS_DEST_ATTR_WEIGHT") or 0,
            upper_threshold=get("IPVS_DEST_ATTR_U_THRESH") or 0,
            lower_threshold=get("IPVS_DEST_ATTR_L_THRESH") or 0,
            active_conns=get("IPVS_DEST_ATTR_ACTIVE_CONNS"),  # drains end when it is 0 (policy.py)
        )

    # --- API ------------------------------------------------------------------

    async def read(self) -> Table:
        """The whole kernel table, every service (owned or not) and its dests."""
        async with self._lock:
            sock = await self._open()
            try:
                table: Table = {}
                for m in await sock.service("dump"):
                    svc = self._parse_service(m)
                    dests = {}
                    for dm in await sock.dest("dump", service=self._service_msg(svc.key, full=False)):
                        d = self._parse_dest(dm)
                        dests[d.key] = d
                    table[svc.key] = (svc, dests)
                return table
            except IPVSError:
                raise
            except Exception as e:
                code = _errno_of(e)
                reason = explain(code) if code is not None else f"{type(e).__name__}: {e}"
                raise IPVSError(f"reading the IPVS table: {reason}", code) from None

    async def run(self, op: Op) -> None:
        """Apply one op; raise IPVSError if the kernel refuses it."""
        async with self._lock:
            await self._run(await self._open(), op)

    async def _run(self, sock: Any, op: Op) -> None:
        cmd = {"add": "add", "edit": "set", "del": "del"}[op.action]  # never "update"
        try:
            if op.dest is None:
                await sock.service(cmd, service=self._service_msg(op.service, full=op.action != "del"))
            else:
                await sock.dest(cmd, service=self._service_msg(op.service.key, full=False),
                                dest=self._dest_msg(op.dest))
        except Exception as e:
            code = _errno_of(e)
            if code is None:
                raise IPVSError(f"{op}: {type(e).__name__}: {e}") from None
            raise IPVSError.for_op(op, code) from None

    async def apply(self, ops: Iterable[Op]) -> list[str]:
        """Apply each op independently; return one error line per failed op.

        Raises IPVSError only when IPVS itself cannot be reached.
        """
        errors: list[str] = []
        async with self._lock:
            sock = await self._open()
            for op in ops:
                try:
                    await self._run(sock, op)
                except IPVSError as e:
                    errors.append(str(e))
        return errors
