"""The hand-over to the routing daemon: host routes in a kernel table BIRD learns.

An announced VIP is a blackhole host route (/32 or /128) in a table of its own
(`routing.table`, default 100), marked with its own protocol number (`routing.protocol`,
default 252: BIRD shows it as `krt_source`) so nothing else's routes are taken for
pymon's and pymon never touches anyone else's. The table is not in any `ip rule`: it
carries announcements, never packets. The state's attributes ride on the route's
metric (RTA_PRIORITY), BIRD's krt_metric: the director's BIRD filter makes it the BGP
MED and adds the GRACEFUL_SHUTDOWN community 65535:0 from the draining MED up
(etc/bgp/bird-director.conf). The metric, not the realm: IPv6 routes have no realm.

BIRD's `protocol kernel { kernel table 100; learn; }` sees a change through its netlink
listener at once (bench/bgp_handover.py: 1.9 ms median to the router's kernel table).
The table is the state: a restarted BIRD re-learns it at its first scan, and a pymon
that died leaves its routes there (ExecStopPost flushes them: docs/active-active.md).

pyroute2 0.9's AsyncIPRoute (its synchronous IPRoute runs an event loop of its own
and cannot be called from the daemon's): one netlink request per change, a dump per
evaluation, each well under a millisecond for a handful of VIPs.
"""

from __future__ import annotations

import ipaddress
from typing import Any

class RouteError(Exception):
    """One line: what failed and the kernel's word for it."""


def prefix(vip: str) -> str:
    addr = ipaddress.ip_address(vip)
    return f"{addr}/{addr.max_prefixlen}"


class KernelRoutes:
    def __init__(self, table: int, protocol: int, netns: str | None = None):
        self.table, self.protocol, self.netns = table, protocol, netns
        self._ipr: Any = None

    def _sock(self) -> Any:
        if self._ipr is None:
            try:
                from pyroute2 import AsyncIPRoute
            except ImportError as e:
                raise RouteError(f"pyroute2 not importable ({e})") from None
            self._ipr = AsyncIPRoute(netns=self.netns) if self.netns else AsyncIPRoute()
        return self._ipr

    async def _call(self, what: str, *args: Any, **kw: Any) -> list[Any]:
        try:
            out = await self._sock().route(*args, **kw)
            return [r async for r in out] if hasattr(out, "__aiter__") else list(out or [])
        except Exception as e:  # noqa: BLE001 - NetlinkError, OSError: a one-line error, the socket renewed
            self.close()
            msg = e.args[1] if len(getattr(e, "args", ())) > 1 else str(e)
            raise RouteError(f"{what}: {msg}") from None

    async def read(self) -> dict[str, int]:
        """pymon's routes in the table: {vip: metric}."""
        out: dict[str, int] = {}
        for family in (2, 10):  # AF_INET, AF_INET6
            for r in await self._call(f"read table {self.table}", "dump", family=family, table=self.table):
                if r.get("proto") != self.protocol or r.get_attr("RTA_TABLE") != self.table:
                    continue
                dst = r.get_attr("RTA_DST")
                if dst is None or r["dst_len"] != (32 if family == 2 else 128):
                    continue
                out[str(ipaddress.ip_address(dst))] = r.get_attr("RTA_PRIORITY") or 0
        return out

    async def announce(self, vip: str, metric: int) -> None:
        dst = prefix(vip)
        have = (await self.read()).get(str(ipaddress.ip_address(vip)))
        if have is not None and have != metric:
            # the metric is part of a route's key: `replace` with another metric would add a second route
            await self.withdraw(vip)
        await self._call(f"announce {dst} (table {self.table})", "replace", dst=dst, table=self.table, proto=self.protocol,
                   type="blackhole", priority=metric, family=2 if ":" not in vip else 10)

    async def withdraw(self, vip: str) -> None:
        dst = prefix(vip)
        have = (await self.read()).get(str(ipaddress.ip_address(vip)))
        if have is None:
            return
        await self._call(f"withdraw {dst} (table {self.table})", "del", dst=dst, table=self.table, proto=self.protocol,
                   type="blackhole", priority=have, family=2 if ":" not in vip else 10)

    def close(self) -> None:
        if self._ipr is not None:
            try:
                self._ipr.close()
            except Exception:  # noqa: BLE001
                pass
            self._ipr = None
