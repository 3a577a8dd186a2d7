"""The director's self-check at the edges: feeds host transitions to the pure detector
(engine/director_fault.py), probes the canaries (ICMP echo to the default gateway and
the configured addresses via icmplib; the carrier of the interfaces of the routes to
the real servers via rtnetlink), writes the keepalived track file, raises the
`director` alert and shows the state in `/status`, `pymon status` and the metrics.

The wiring passes in how to alert (`alert(ok, output)`) and what to do when the freeze
changes (`changed()`: poke the IPVS owner); the owner asks `frozen()` on each
reconcile. See docs/self-check.md.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator

from pymon.engine.director_fault import Action, Detector, Key, Settings

if TYPE_CHECKING:  # `pymon status` imports this module for format_status: keep it light
    from pymon.engine.rules import HostChange, ServiceState
    from pymon.model.config import SelfCheckSpec

IFF_LOWER_UP = 0x10000  # linux/if.h: the driver signals L1 up (carrier)


class SelfCheck:
    def __init__(self, spec: SelfCheckSpec, log: Any, alert: Callable[[bool, str], None],
                 changed: Callable[[], None], reals: Callable[[], Iterable[str]]):
        self.spec, self.log, self.alert, self.changed, self.reals = spec, log, alert, changed, reals
        self.detector = Detector(Settings(spec.share, spec.min_hosts, spec.window, spec.recheck))
        self.wake = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        self.track_error: str | None = None  # logged once until the file can be written again
        self.netlink_error: str | None = None
        self.checked_at = 0.0  # wall clock of the last probe, for /status
        self.gateways: list[str] = []  # found while healthy (netlink): still checked once gone
        self.oifs: dict[int, str] = {}

    # -- what the wiring calls -----------------------------------------------------

    def frozen(self) -> bool:
        """The IPVS owner's question on each reconcile: remove nothing while True."""
        return self.detector.frozen

    def holds(self, watch: tuple[str, str], host: str) -> bool:
        """The IPVS health's question: is this host's down state the director's doing?"""
        return self.detector.holds((watch[0], watch[1], host))

    def transitions(self, st: "ServiceState", changes: "list[HostChange]", now: float) -> None:
        """The engine's hook: hosts that changed state in one check (never per check)."""
        g, s = st.spec.key
        det, mono = self.detector, time.monotonic()
        for ch in changes:
            if det.transition(mono, (g, s, ch.host), ch.up) == "probe":
                down, total = det.burst
                self.log.warning("director.suspect", went_down=down, hosts=total, window_s=self.spec.window,
                                 action="IPVS frozen while the canaries are probed")
                self.changed()
                self.wake.set()

    def retain(self, keys: set[Key]) -> None:
        self.detector.retain(keys)

    def start(self, previous: SelfCheck | None = None) -> None:
        """Begin; `previous` (a reload changed `self_check:`): keep its verdict and what it
        learned of the network, under the new settings."""
        if previous is not None:
            self.detector = replace(previous.detector, settings=self.detector.settings)
            self.gateways, self.oifs = previous.gateways, previous.oifs
        self.write_track(self.detector.faulty)
        self.task = asyncio.get_running_loop().create_task(self.run())

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)

    # -- the loop --------------------------------------------------------------------

    async def run(self) -> None:
        """Probe when a burst begins, and every `recheck` while at fault or recovering."""
        det = self.detector
        await self.netlink()  # what the director's network looks like while healthy
        while True:
            wait = det.next_wake(time.monotonic())
            try:
                await asyncio.wait_for(self.wake.wait(), wait)
            except asyncio.TimeoutError:
                pass
            self.wake.clear()
            actions = []
            if det.state in ("suspect", "fault", "recovering"):
                results = await self.probe()
                actions.append(det.probed(time.monotonic(), results))
            actions.append(det.tick(time.monotonic()))
            for action in actions:
                self.act(action)
            if "them" in actions or "unfreeze" in actions:
                await self.netlink()  # healthy again: learn the network as it is now

    def act(self, action: Action) -> None:
        det = self.detector
        failing = sorted(k for k, ok in det.canaries.items() if not ok)
        if action == "fault":
            down, total = det.burst
            self.log.error("director.fault", failing=failing, went_down=down, hosts=total,
                           action="IPVS frozen: no depools until the canaries answer again")
            self.write_track(True)
            self.changed()  # the burst's hosts depooled before the share was reached come back
            self.alert(False, f"director fault: {', '.join(failing)} failing\n"
                       f"{down} of {total} hosts went down within {self.spec.window:g}s; "
                       f"the IPVS table is frozen")
        elif action == "them":
            self.log.info("director.them", canaries=sorted(det.canaries),
                          note="the canaries answer: the real servers failed, normal depools")
            self.changed()
        elif action == "recovered":
            self.log.warning("director.recovered", canaries=sorted(det.canaries),
                             action=f"IPVS stays frozen {self.spec.window:g}s more while the checks catch up")
            self.write_track(False)
            self.alert(True, "director recovered: every canary answers\n"
                       f"the IPVS table follows health again after {self.spec.window:g}s")
        elif action == "unfreeze":
            self.log.info("director.unfrozen", note="IPVS follows real-server health again")
            self.changed()

    # -- probes ----------------------------------------------------------------------

    async def probe(self) -> dict[str, bool]:
        """name -> answered: `gateway ADDR`, `canary ADDR`, `link IFNAME`."""
        self.checked_at = time.time()
        gateways, links = await self.netlink()
        pings = [f"gateway {a}" for a in gateways] + [f"canary {a}" for a in self.spec.canaries]
        answers = await asyncio.gather(*(self.ping(p.split()[1]) for p in pings))
        out = dict(zip(pings, answers))
        out.update((f"link {name}", up) for name, up in links.items())
        return out

    async def ping(self, address: str) -> bool:
        import icmplib

        from pymon.probes.icmp import unprivileged_allowed

        try:
            res = await icmplib.async_ping(address, count=2, interval=0.1, timeout=self.spec.canary_timeout,
                                           privileged=not unprivileged_allowed())
        except Exception as e:  # noqa: BLE001 - no route, no permission: not an answer
            self.log.debug("director.canary_error", canary=address, error=f"{type(e).__name__}: {e}")
            return False
        return bool(res.packets_received)

    async def netlink(self) -> tuple[list[str], dict[str, bool]]:
        """The gateways to ping and the carrier of each interface toward the real servers.
        What was found while the director was healthy stays checked: a link taken down
        takes its routes (and the default route) with it, so what the routes say now
        would show nothing to check. Nothing when rtnetlink cannot be read (logged once)."""
        if not (self.spec.gateway or self.spec.links):
            return [], {}
        from pyroute2 import AsyncIPRoute

        links: dict[str, bool] = {}
        try:
            async with AsyncIPRoute() as ipr:
                gateways, oifs = await self.discover(ipr)
                if not self.detector.frozen:  # healthy: this is what the director's network looks like
                    self.gateways, self.oifs = gateways, oifs
                gateways = list(dict.fromkeys(self.gateways + gateways))
                for index, name in {**self.oifs, **oifs}.items():
                    try:
                        found = await _all(await ipr.link("get", index=index))
                    except Exception:  # noqa: BLE001 - the interface is gone
                        found = []
                    links[name] = bool(found) and bool(found[0]["flags"] & IFF_LOWER_UP)
        except Exception as e:  # noqa: BLE001 - netlink is the edge: say it, probe the rest
            if str(e) != self.netlink_error:
                self.log.warning("director.netlink_error", error=f"{type(e).__name__}: {e}",
                                 action="gateway and link checks skipped; the canaries still count")
            self.netlink_error = str(e)
            return [], {}
        self.netlink_error = None
        return gateways, links

    async def discover(self, ipr: Any) -> tuple[list[str], dict[int, str]]:
        """Default gateways of the main table, and the interfaces (index -> name) of the
        routes to the real servers, as the kernel has them now."""
        gateways: list[str] = []
        oifs: dict[int, str] = {}
        if self.spec.gateway:
            for family in (socket.AF_INET, socket.AF_INET6):
                for r in await _all(await ipr.route("dump", family=family)):
                    gw = r.get("RTA_GATEWAY")
                    # a link-local IPv6 gateway needs its interface to be pinged: list a canary instead
                    if (r["dst_len"] == 0 and gw and not gw.lower().startswith("fe80:")
                            and (r.get("RTA_TABLE") or r["table"]) == 254):
                        gateways.append(gw)
        if self.spec.links:
            for address in dict.fromkeys(self.reals()):
                try:
                    routes = await _all(await ipr.route("get", dst=address))
                except Exception:  # noqa: BLE001 - unroutable now: the links found before still count
                    continue
                for r in routes:
                    index = r.get("RTA_OIF")
                    if index and index not in oifs:
                        for link in await _all(await ipr.link("get", index=index)):
                            name = link.get("IFLA_IFNAME") or str(index)
                            if name != "lo":  # loopback has no carrier to lose
                                oifs[index] = name
        return list(dict.fromkeys(gateways)), oifs

    # -- the track file, status, metrics ------------------------------------------

    def write_track(self, faulty: bool) -> None:
        """keepalived's track_file: a number, re-read on close-after-write or a rename
        into place (inotify), so it is written beside and renamed: never half a number."""
        path = self.spec.track_file
        if path is None:
            return
        value = str(self.spec.track_weight if faulty else 0)
        tmp = path.with_name(f".{path.name}.tmp")
        try:
            tmp.write_text(value + "\n")
            os.replace(tmp, path)
        except OSError as e:
            if str(e) != self.track_error:
                self.log.error("director.track_file_failed", file=str(path), error=str(e))
            self.track_error = str(e)
            return
        self.track_error = None
        self.log.info("director.track_file", file=str(path), value=int(value))

    def json(self) -> dict[str, Any]:
        det = self.detector
        down, total = det.burst
        return {"state": det.state, "frozen": det.frozen, "fault": det.faulty,
                "since": time.time() - (time.monotonic() - det.since) if det.since else None,
                "canaries": dict(sorted(det.canaries.items())), "checked": self.checked_at or None,
                "burst": {"went_down": down, "hosts": total}, "window_s": self.spec.window,
                "track_file": str(self.spec.track_file) if self.spec.track_file else None}


async def _all(x: Any) -> list[Any]:
    """pyroute2 0.9 answers some requests with a list, others with an async iterator."""
    if hasattr(x, "__aiter__"):
        return [r async for r in x]
    return list(x)


def metrics(sc: SelfCheck | None) -> Iterator[Any]:
    """pymon_director_fault and pymon_director_canary_up{canary} (ops/metrics.py)."""
    from prometheus_client.core import GaugeMetricFamily

    if sc is None:
        return
    yield GaugeMetricFamily("pymon_director_fault", "1 while the director itself is found at fault (its "
                            "canaries fail during a burst of real-server failures; IPVS frozen)",
                            value=1.0 if sc.detector.faulty else 0.0)
    yield GaugeMetricFamily("pymon_director_frozen", "1 while the IPVS table is frozen by the self-check "
                            "(suspect, fault, recovering)", value=1.0 if sc.detector.frozen else 0.0)
    up = GaugeMetricFamily("pymon_director_canary_up", "1 when the canary answered at the last probe",
                           labels=["canary"])
    for name, ok in sorted(sc.detector.canaries.items()):
        up.add_metric([name], 1.0 if ok else 0.0)
    yield up


def format_status(st: dict[str, Any]) -> list[str]:
    """`pymon status` lines for the self-check (none when it is off)."""
    sc = st.get("self_check")
    if not sc:
        return []
    state = {"ok": "ok", "suspect": "SUSPECT (probing canaries, IPVS frozen)",
             "fault": "FAULT (IPVS frozen)", "recovering": "recovering (IPVS frozen)"}[sc["state"]]
    out = ["", f"DIRECTOR SELF-CHECK: {state}"]
    for name, ok in sc["canaries"].items():
        out.append(f"  {name}: {'up' if ok else 'DOWN'}")
    return out
