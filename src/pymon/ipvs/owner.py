"""The one owner of the kernel's IPVS table: wanted = config × health, applied as a diff.

`wanted_table` and `quorum_step` are pure; `LvsOwner` does the I/O: it adopts what the
kernel holds at start (a server not yet checked keeps its kernel entry, so a restart
drops nothing), reconciles on every health change and reload, and re-reads the kernel
every `resync` seconds to repair drift (someone ran `ipvsadm -C`).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Protocol

from pymon.model.config import IpvsOptions, VirtualServiceSpec
from pymon.ipvs.table import Dest, IPVSError, MemoryTable, Op, Service, ServiceKey, Table, after, diff, format_ipvsadm

Health = Callable[[tuple[str, str], str], "bool | None"]  # (group, service), host -> up? None = unknown


class Backend(Protocol):
    async def read(self) -> Table: ...
    async def apply(self, ops: Any) -> list[str]: ...
    async def close(self) -> None: ...


@dataclass(frozen=True)
class Override:
    """A real server set up or down by the classic `lvs.alert` arguments."""

    service: Service
    dest: Dest
    up: bool
    quiesce: bool = False


def wanted_table(vss: list[VirtualServiceSpec], health: Health, actual: Table,
                 overrides: dict[tuple[ServiceKey, tuple[str, int]], Override] | None = None
                 ) -> tuple[Table, dict[str, int]]:
    """The table the kernel should hold, and each virtual service's healthy weight."""
    table: Table = {}
    healthy: dict[str, int] = {}
    for vs in vss:
        have = actual.get(vs.service.key, (vs.service, {}))[1]
        dests: dict[tuple[str, int], Dest] = {}
        weight = 0
        unknown = False
        for rs in vs.reals:
            up = health(vs.watch, rs.host)
            if up is None:  # not checked yet: adopt what the kernel has
                unknown = True
                if rs.dest.key in have:
                    dests[rs.dest.key] = have[rs.dest.key]
                continue
            if up:
                dests[rs.dest.key] = rs.dest
                weight += rs.dest.weight
            elif vs.quiescent:
                dests[rs.dest.key] = replace(rs.dest, weight=0)
        if vs.sorry is not None and weight == 0 and not unknown:
            dests[vs.sorry.key] = vs.sorry
        table[vs.service.key] = (vs.service, dests)
        healthy[vs.name] = weight
    for (skey, dkey), ov in (overrides or {}).items():
        svc, dests = table.get(skey) or actual.get(skey) or (ov.service, {})
        dests = dict(dests)
        if ov.up:
            dests[dkey] = ov.dest
        elif ov.quiesce:
            dests[dkey] = replace(ov.dest, weight=0)
        else:
            dests.pop(dkey, None)
        table[skey] = (svc, dests)
    return table, healthy


def quorum_step(has_quorum: bool, healthy: int, quorum: int, hysteresis: int) -> bool:
    """keepalived's rule: lost below quorum - hysteresis, regained at quorum + hysteresis."""
    if has_quorum:
        return healthy >= quorum - hysteresis
    return healthy >= quorum + hysteresis


@dataclass
class LvsOwner:
    opts: IpvsOptions
    backend: Backend
    log: Any
    dry_run: bool = False
    vss: list[VirtualServiceSpec] = field(default_factory=list)
    health: Health = lambda watch, host: None
    alert: Callable[[VirtualServiceSpec, bool, int], None] = lambda vs, ok, w: None

    def __post_init__(self) -> None:
        self.overrides: dict[tuple[ServiceKey, tuple[str, int]], Override] = {}
        self.quorum: dict[str, bool] = {}
        self.wake = asyncio.Event()
        self.lock = asyncio.Lock()
        self.last_wanted: Table = {}
        self.last_actual: Table = {}
        self.known = False  # last_actual is what the kernel holds (read, or applied without error)
        self.resync_preempted = False
        self.last_errors: list[str] = []
        self.healthy: dict[str, int] = {}
        # the kernel table could not be read: said once (ipvs.unavailable or ipvs.error),
        # not on every resync and health change, until it can be read again (ipvs.recovered)
        self.read_error: str | None = getattr(self.backend, "unavailable", None)

    @property
    def owned(self) -> set[ServiceKey]:
        return {vs.service.key for vs in self.vss} | {k for k, _ in self.overrides}

    def poke(self) -> None:
        self.wake.set()

    async def reconcile(self, reason: str) -> list[Op]:
        """Read the kernel, compute the wanted table, apply the difference, log it.

        A health change does not read: the kernel holds what the last read or clean
        apply left (`last_actual`), so it costs only its own ops; drift is the
        resync's to find.
        """
        async with self.lock:
            try:
                actual = await self._actual(reason)
            except IPVSError as e:
                if str(e) != self.read_error:
                    self.log.error("ipvs.error", error=str(e), reason=reason,
                                   action="will retry; checks and alerts keep running")
                self.read_error = str(e)
                self.last_errors = [str(e)]
                self.known = False
                return []
            if self.read_error is not None:
                self.log.info("ipvs.recovered", reason=reason, was=self.read_error)
                self.read_error = None
            if reason == "resync" and self.wake.is_set():
                # health changed while the kernel was read: what this applies is that change, not drift
                reason = "health"
                self.wake.clear()
            wanted, self.healthy = wanted_table(self.vss, self.health, actual, self.overrides)
            ops = diff(wanted, actual, self.owned)
            self.last_wanted, self.last_actual = wanted, actual
            for op in ops:
                self.log.info("ipvs.would_change" if self.dry_run else "ipvs.change", op=str(op), reason=reason)
            errors = await self.backend.apply(ops) if ops else []
            for err in errors:
                self.log.error("ipvs.error", error=err, reason=reason)
            if ops:
                self.log.info("ipvs.table", dry_run=self.dry_run, table=format_ipvsadm(wanted).splitlines())
            self.last_errors = errors
            if ops and reason == "resync":
                self.log.warning("ipvs.repaired", changes=len(ops) - len(errors),
                                 note="the kernel table differed from what pymon set (drift)")
            if errors:  # the kernel refused something: read back what it holds
                back = await self._read_quiet()
                self.last_actual, self.known = (back, True) if back is not None else (actual, False)
            else:  # every op acknowledged: the kernel holds exactly this
                self.last_actual, self.known = after(actual, ops), True
            self._quorum()
            return ops

    async def _actual(self, reason: str) -> Table:
        """What the kernel holds: `last_actual` for a health change, else a read.

        A resync's read gives way to a health change that comes in meanwhile (a read
        is a dump of the whole table; the change must not wait for it): the read is
        dropped, the change applied from `last_actual`, and the resync run again
        right after.
        """
        if reason == "health" and self.known:
            return self.last_actual
        if reason != "resync" or not self.known:
            return await self.backend.read()
        read = asyncio.ensure_future(self.backend.read())
        poked = asyncio.ensure_future(self.wake.wait())
        try:
            await asyncio.wait({read, poked}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            poked.cancel()
        if read.done():
            return read.result()
        read.cancel()
        self.resync_preempted = True
        return self.last_actual  # the wake is set: reconcile logs this as the health change it is

    async def _read_quiet(self) -> Table | None:
        try:
            return await self.backend.read()
        except IPVSError:
            return None

    def _quorum(self) -> None:
        for vs in self.vss:
            if not vs.quorum:
                continue
            healthy = self.healthy.get(vs.name, 0)
            old = self.quorum.get(vs.name, True)
            new = quorum_step(old, healthy, vs.quorum, vs.hysteresis)
            self.quorum[vs.name] = new
            if new != old:
                self.log.warning("ipvs.quorum", virtual_service=vs.name, state="regained" if new else "lost",
                                 healthy_weight=healthy, quorum=vs.quorum)
                self.alert(vs, new, healthy)

    async def run(self) -> None:
        """Reconcile whenever poked, and every `resync` seconds regardless.

        Resyncs start `resync` seconds apart (start to start), whatever ran between.
        """
        loop = asyncio.get_running_loop()
        next_resync = loop.time() + self.opts.resync
        while True:
            if self.resync_preempted:  # a health change cut the last resync's read short
                self.resync_preempted = False
                reason = "resync"
            else:
                try:
                    await asyncio.wait_for(self.wake.wait(), max(0.0, next_resync - loop.time()))
                    reason = "health"
                except asyncio.TimeoutError:
                    reason = "resync"
                    next_resync = max(next_resync + self.opts.resync, loop.time())
            self.wake.clear()
            await self.reconcile(reason)

    async def set_override(self, service: Service, dest: Dest, up: bool, quiesce: bool) -> None:
        self.overrides[(service.key, dest.key)] = Override(service, dest, up, quiesce)
        await self.reconcile("lvs alert")

    async def stop(self) -> None:
        if self.opts.cleanstop and not self.dry_run:
            async with self.lock:
                try:
                    actual = await self.backend.read()
                except IPVSError as e:
                    self.log.error("ipvs.error", error=str(e), reason="cleanstop")
                else:
                    ops = diff({}, actual, self.owned)
                    for op in ops:
                        self.log.info("ipvs.change", op=str(op), reason="cleanstop")
                    for err in await self.backend.apply(ops):
                        self.log.error("ipvs.error", error=err, reason="cleanstop")
        await self.backend.close()

    def render(self) -> str:
        """Wanted and actual side by side, each in `ipvsadm -Ln` style."""
        return side_by_side(format_ipvsadm(self.last_wanted), format_ipvsadm(self.last_actual))


def side_by_side(left: str, right: str, titles: tuple[str, str] = ("WANTED (config x health)", "ACTUAL (kernel)")) -> str:
    ll, rl = left.splitlines(), right.splitlines()
    width = max([len(x) for x in ll] + [len(titles[0])]) + 3
    rows = [f"{titles[0]:<{width}}{titles[1]}", f"{'-' * len(titles[0]):<{width}}{'-' * len(titles[1])}"]
    for i in range(max(len(ll), len(rl))):
        a = ll[i] if i < len(ll) else ""
        b = rl[i] if i < len(rl) else ""
        mark = "  " if _config_part(a) == _config_part(b) else "≠ "
        rows.append(f"{a:<{width - 2}}{mark}{b}".rstrip())
    return "\n".join(rows)


def _config_part(line: str) -> list[str]:
    """An `ipvsadm -Ln` line without a real server's connection counts (only the kernel has them)."""
    words = line.split()
    return words[:-2] if line.startswith("  ->") and len(words) == 6 else words


async def open_backend(opts: IpvsOptions, dry_run: bool, log: Any) -> tuple[Backend, bool]:
    """The kernel backend, or a MemoryTable seeded from the kernel when dry-running
    (or when IPVS is unavailable and the config asks for `fallback: dry-run`)."""
    from pymon.ipvs.kernel import KernelIPVS

    kernel = KernelIPVS()
    try:
        current = await kernel.read()
    except IPVSError as e:
        await kernel.close()
        kernel.unavailable = str(e)  # type: ignore[attr-defined]  # LvsOwner logs it only once
        if dry_run or opts.fallback == "dry-run":
            log.warning("ipvs.unavailable", error=str(e), action="dry-run: changes are only logged")
            return MemoryTable(), True
        log.error("ipvs.unavailable", error=str(e),
                  action="will retry; checks and other alerts keep running (ipvs.fallback: dry-run to silence)")
        return kernel, False
    if dry_run:
        await kernel.close()
        log.info("ipvs.dry_run", note="changes are only logged", adopted=len(current))
        return MemoryTable(current), True
    log.info("ipvs.adopted", services=len(current),
             dests=sum(len(d) for _, d in current.values()))
    return kernel, False

