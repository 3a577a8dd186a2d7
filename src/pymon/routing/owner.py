"""The one owner of pymon's announcements: evaluates, damps, hands them to the kernel table.

`Routes` takes everything from the daemon as callbacks (the VIPs' services, readiness,
the change hook that logs nothing but fires alerts) so this package stays free of the
rest of pymon. It evaluates every `interval` (and when poked: a quorum change), keeps
one `Announcement` per VIP, and makes pymon's routes in the kernel table equal to the
announced ones, repairing drift (a route someone deleted comes back at the next
evaluation; one pymon did not want goes).

Operator disables are kept in `<statedir>/routes.json`, so a restart does not announce a
VIP the operator took out.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import os
import time
from pathlib import Path
from typing import Any, Callable

from pymon.model.routing import Options
from .announce import ANNOUNCED, Announcement, Inputs, Service, Stop, step
from .kernel import KernelRoutes, RouteError

def canonical(vip: str) -> str:
    """An operator's spelling of a VIP as the announcements key it (2001:DB8::1 → 2001:db8::1)."""
    try:
        return str(ipaddress.ip_address(vip.strip().strip("[]")))
    except ValueError:
        raise KeyError(f"{vip!r} is not an IP address") from None


Services = Callable[[], dict[str, tuple[Service, ...]]]  # VIP -> its virtual services now
Changed = Callable[[str, Announcement, Announcement], None]  # vip, before, after


class Routes:
    def __init__(self, opts: Options, log: Any, services: Services, ready: Callable[[], bool],
                 changed: Changed = lambda vip, old, new: None, statedir: Path | None = None,
                 kernel: KernelRoutes | None = None):
        self.opts, self.log, self.services, self.ready, self.changed = opts, log, services, ready, changed
        self.kernel = kernel or KernelRoutes(opts.table, opts.protocol)
        self.path = statedir / "routes.json" if statedir else None
        self.ann: dict[str, Announcement] = {}
        self.since: dict[str, float] = {}
        self.disabled: dict[str, dict[str, Any]] = {}
        self.self_fault = False
        self.stop_phase: Stop = ""
        self.error: str | None = None  # the kernel table could not be set: said once until it can
        self.wake = asyncio.Event()
        self.lock = asyncio.Lock()
        self.task: asyncio.Task[None] | None = None

    # -- lifecycle --------------------------------------------------------------------

    async def start(self) -> None:
        """Load the operator's disables, withdraw what an earlier run left (nothing is
        announced before READY), and evaluate from now on."""
        self._load()
        await self.evaluate()
        self.task = asyncio.get_running_loop().create_task(self.run())

    async def run(self) -> None:
        while True:
            try:
                async with asyncio.timeout(self.opts.interval):
                    await self.wake.wait()
            except TimeoutError:
                pass
            self.wake.clear()
            try:
                await self.evaluate()
            except Exception as e:  # noqa: BLE001 - a bug must not end the evaluations
                self.log.exception("route.crashed", error=f"{type(e).__name__}: {e}")

    def poke(self) -> None:
        self.wake.set()

    async def stop(self) -> None:
        """Clean stop: announced VIPs drain (draining MED + GRACEFUL_SHUTDOWN) for
        `graceful_shutdown` seconds, still evaluated (a pool that dies meanwhile is
        withdrawn at once), then everything is withdrawn."""
        self.stop_phase = "draining"
        await self.evaluate()
        draining = [v for v, a in self.ann.items() if a.state == "draining"]
        if draining and self.opts.graceful_shutdown > 0:
            self.log.info("route.draining", vips=draining, wait_s=self.opts.graceful_shutdown)
            await asyncio.sleep(self.opts.graceful_shutdown)
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
            self.task = None
        self.stop_phase = "stopped"
        await self.evaluate()
        self.kernel.close()

    async def reconfigure(self, opts: Options) -> None:
        """A reload: a new table or protocol takes pymon's routes out of the old one first."""
        if (opts.table, opts.protocol) != (self.opts.table, self.opts.protocol):
            async with self.lock:  # the timer's evaluation must not use the socket being swapped
                await self._withdraw_all("table or protocol changed by a reload")
                self.kernel.close()
                self.kernel = KernelRoutes(opts.table, opts.protocol)
        self.opts = opts
        self.poke()

    # -- operator and owner inputs ------------------------------------------------------

    async def set_self_fault(self, fault: bool) -> None:
        if fault != self.self_fault:
            self.self_fault = fault
            self.log.warning("route.self_fault", fault=fault)
            await self.evaluate()

    async def disable(self, vip: str, reason: str = "", by: str = "") -> None:
        vip = canonical(vip)
        if vip not in self.services():
            raise KeyError(f"no virtual service has VIP {vip}")
        self.disabled[vip] = {"reason": reason, "since": time.time(), "by": by}
        self.log.warning("route.disabled", vip=vip, reason=reason, by=by)
        self._save()
        await self.evaluate()

    async def enable(self, vip: str, by: str = "") -> bool:
        vip = canonical(vip)
        if self.disabled.pop(vip, None) is None:
            return False
        self.log.warning("route.enabled", vip=vip, by=by)
        self._save()
        await self.evaluate()
        return True

    # -- one evaluation -------------------------------------------------------------------

    async def evaluate(self) -> None:
        """One evaluation; serialised, so an operator's command and the timer never
        interleave their kernel changes."""
        async with self.lock:
            await self._evaluate()

    async def _evaluate(self) -> None:
        services = self.services()
        ready = self.ready()
        now = time.time()
        changed: set[str] = set()
        for vip in sorted(set(services) | set(self.ann)):
            prev = self.ann.get(vip, Announcement())
            if vip in services:
                new = step(prev, Inputs(ready, services[vip], self.self_fault, vip in self.disabled,
                                        self.stop_phase), self.opts.policy)
            else:
                new = Announcement("withdrawn", "no virtual service has this VIP any more")
            if vip in services:
                self.ann[vip] = new
            else:
                self.ann.pop(vip, None)
            if new.state != prev.state or vip not in self.since:
                self.since[vip] = now
            if new.state != prev.state:
                changed.add(vip)
                self._log_change(vip, prev, new)
                self.changed(vip, prev, new)
        await self.sync(changed)

    def _log_change(self, vip: str, prev: Announcement, new: Announcement) -> None:
        if new.announced:
            self.log.warning("route.announced", vip=vip, state=new.state, med=self.opts.med(new.state),
                             reason=new.reason, was=prev.state)
        else:
            self.log.warning("route.withdrawn", vip=vip, reason=new.reason, was=prev.state)

    def wanted(self) -> dict[str, int]:
        return {vip: self.opts.med(a.state) for vip, a in self.ann.items() if a.state in ANNOUNCED}

    async def sync(self, changed: frozenset[str] | set[str] = frozenset()) -> None:
        """pymon's routes in the kernel table := the announced VIPs with their MED.
        `changed`: the VIPs whose state this evaluation changed (others differing is drift)."""
        want = self.wanted()
        try:
            have = await self.kernel.read()
            for vip in sorted(set(have) - set(want)):
                if vip not in changed:  # not a decision of this evaluation: a leftover or someone's route
                    self.log.warning("route.repaired", vip=vip, note="withdrawn: in the table but not announced")
                await self.kernel.withdraw(vip)
            for vip, med in sorted(want.items()):
                if have.get(vip) != med:
                    if vip not in changed and self.error is None:
                        self.log.warning("route.repaired", vip=vip, note="announced again: missing from the table")
                    await self.kernel.announce(vip, med)
        except RouteError as e:
            if str(e) != self.error:
                self.log.error("route.error", error=str(e), action="will retry at the next evaluation")
            self.error = str(e)
            return
        if self.error is not None:
            self.log.info("route.recovered", was=self.error)
            self.error = None

    async def _withdraw_all(self, why: str) -> None:
        try:
            for vip in await self.kernel.read():
                await self.kernel.withdraw(vip)
                self.log.warning("route.withdrawn", vip=vip, reason=why)
        except RouteError as e:
            self.log.error("route.error", error=str(e))

    # -- state, status ----------------------------------------------------------------------

    def _load(self) -> None:
        if self.path is None:
            return
        try:
            self.disabled = dict(json.loads(self.path.read_text()).get("disabled", {}))
        except FileNotFoundError:
            return
        except (OSError, ValueError, AttributeError) as e:
            self.log.warning("route.state_unreadable", file=str(self.path), error=str(e))
            return
        if self.disabled:
            self.log.info("route.restored", disabled=sorted(self.disabled))

    def _save(self) -> None:
        if self.path is None:
            return
        tmp = self.path.with_suffix(".json.tmp")
        try:
            tmp.write_text(json.dumps({"disabled": self.disabled}))
            os.replace(tmp, self.path)
        except OSError as e:
            self.log.warning("route.write_failed", file=str(self.path), error=str(e))

    def json(self) -> dict[str, Any]:
        return {
            "table": self.opts.table, "protocol": self.opts.protocol, "self_fault": self.self_fault,
            "stopping": self.stop_phase or None, "error": self.error,
            "vips": {vip: {"state": a.state, "announced": a.announced,
                           "med": self.opts.med(a.state) if a.announced else None, "reason": a.reason,
                           "since": self.since.get(vip), "disabled": self.disabled.get(vip)}
                     for vip, a in sorted(self.ann.items())},
        }


def format_status(st: dict[str, Any]) -> list[str]:
    """`pymon status` lines for the announcements (none without a `routing:` section)."""
    r = st.get("routes")
    if not r:
        return []
    head = f"BGP announcements (kernel table {r['table']}, protocol {r['protocol']})"
    if r.get("self_fault"):
        head += ": SELF FAULT"
    if r.get("error"):
        head += f": ERROR {r['error']}"
    out = ["", head]
    for vip, v in r["vips"].items():
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(v["since"])) if v.get("since") else "-"
        med = f" med {v['med']}" if v.get("med") is not None else ""
        out.append(f"  {vip}: {v['state']}{med} since {since} — {v['reason']}")
    return out


_VIP = [{"name": "vip", "in": "path", "required": True, "schema": {"type": "string"}}]
_R = {"200": {"description": "OK"}, "401": {"description": "missing or wrong token"},
      "404": {"description": "no routing: section, or no virtual service with this VIP"}}
OPENAPI_PATHS: dict[str, Any] = {  # the control API's routes for the announcements (api.py serves them)
    "/routes": {"get": {"summary": "the BGP announcements: per VIP its state (up, draining, withdrawn) and why",
                        "responses": _R}},
    "/disable/route/{vip}": {"post": {
        "summary": "withdraw a VIP's announcement (or drain it, with routing.disabled: drain) until enabled",
        "parameters": _VIP, "requestBody": {"content": {"application/json": {"schema": {
            "type": "object", "properties": {"reason": {"type": "string"}}}}}}, "responses": _R}},
    "/enable/route/{vip}": {"post": {"summary": "let a VIP be announced again when it can be served",
                                     "parameters": _VIP, "responses": _R}},
}
