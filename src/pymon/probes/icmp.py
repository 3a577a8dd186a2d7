"""`fping` (group probe): ICMP echo to every host of the group at once.

A group probe, like mon's fping.monitor, so one check costs one round of packets for
the whole group instead of one process per host. Built on icmplib's `async_ping`,
one task per host under a concurrency bound; icmplib's own `async_multiping` is not
used because one unresolvable name makes it fail for the whole group.

Sockets: unprivileged ICMP datagram sockets when `net.ipv4.ping_group_range` admits our
group (no root needed, the kernel owns the echo id), raw sockets otherwise (root or
CAP_NET_RAW). IPv4 and IPv6 addresses, and names (resolved per `family`).

Params: count (3 echoes per host), interval (0.2 s between echoes to one host),
wait (1 s for each reply), timeout (10 s for the whole check: `wait` is shortened so
that count echoes fit, since the scheduler sets timeout to the service's hard
timeout and would otherwise cancel the group's check and lose every result), loss (100: a host fails when its loss in percent
reaches this, so by default only when every echo is lost, as mon's fping.monitor),
rtt (ms; fail when the average round trip exceeds it), family (4 or 6, for names),
privileged ("auto", true = raw sockets, false = datagram sockets), payload_size (56),
concurrency (256 hosts in flight), only_all_down (false: when true, hosts fail only if
every host of the group fails, mon's -a), argv (mon's fping.monitor options, see
`from_mon_args`).
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from typing import Any

import icmplib

from pymon.plugin import Params, Result, Target, monitor
from pymon.probes._common import ParamError, ParamReader, bad_params, validator, describe, parse_opts


@dataclass(frozen=True)
class PingParams:
    count: int
    interval: float
    wait: float
    timeout: float
    loss: float
    rtt: float | None
    family: int | None
    privileged: bool | None
    payload_size: int
    concurrency: int
    only_all_down: bool


def from_mon_args(argv: list[str]) -> Params:
    """mon's `fping.monitor [-a] [-r retries] [-s msecs] [-t msecs] [-T]` as params:
    -r N -> count N+1 (default -r 3), -t -> wait (ms, default 2000), -s -> rtt (ms),
    -a -> only_all_down; -T (traceroute failed hosts) is ignored. A 0 is the default
    too, as in the script (Perl's `$opt{"r"} || 3`)."""
    opts = parse_opts(argv, {"-r": "retries", "-s": "rtt", "-t": "wait"}, "fping.monitor", flags=("-a", "-T"))
    out: Params = {}
    try:
        # fping.monitor's own defaults (-r 3 -t 2000): four tries, 2 s apart
        out["count"] = (int(opts.get("retries") or 0) or 3) + 1
        out["wait"] = (float(opts.get("wait") or 0) or 2000) / 1000
        if "rtt" in opts:
            out["rtt"] = float(opts["rtt"])
    except ValueError as e:
        raise ParamError([f"argv: fping.monitor: {e}"]) from None
    if opts.get("-a"):
        out["only_all_down"] = True
    return out


def _parse(params: Params) -> PingParams:
    base = from_mon_args(params["argv"]) if params.get("argv") is not None else {}
    r = ParamReader(params, base)
    family = r.number("family", None, integer=True)
    if family not in (None, 4, 6):
        r.error(f"family: must be 4 or 6, got {family!r}")
    priv: Any = r.raw("privileged", "auto")
    if priv == "auto":
        priv = None
    elif not isinstance(priv, bool):
        r.error(f"privileged: expected auto, true or false, got {priv!r}")
        priv = None
    loss = r.number("loss", 100, lo=0)
    if loss is not None and loss > 100:
        r.error(f"loss: a percentage (0-100), got {loss!r}")
    cfg = PingParams(
        count=r.number("count", 3, integer=True, positive=True),
        interval=float(r.number("interval", 0.2, lo=0)),
        wait=float(r.number("wait", 1.0, positive=True)),
        timeout=r.timeout(),
        loss=float(loss),
        rtt=r.number("rtt", None, positive=True),
        family=family,
        privileged=priv,
        payload_size=r.number("payload_size", 56, integer=True, lo=0),
        concurrency=r.number("concurrency", 256, integer=True, positive=True),
        only_all_down=r.boolean("only_all_down", False),
    )
    if cfg.timeout <= (cfg.count - 1) * cfg.interval:
        r.error(f"timeout: {cfg.timeout:g}s is too short for {cfg.count} echoes {cfg.interval:g}s apart")
    r.finish()
    return cfg


def reply_wait(cfg: PingParams) -> float:
    """Per-echo wait so that a host losing every echo still finishes within timeout."""
    budget = (cfg.timeout * 0.9 - (cfg.count - 1) * cfg.interval) / cfg.count
    return max(0.05, min(cfg.wait, budget))


validate_params = validator(_parse)
PARAM_VALIDATORS = {"fping": validate_params}


def unprivileged_allowed(path: str = "/proc/sys/net/ipv4/ping_group_range") -> bool:
    """True when the kernel lets one of our groups open ICMP datagram sockets."""
    try:
        with open(path) as f:
            lo, hi = (int(x) for x in f.read().split())
    except (OSError, ValueError):
        return False
    return any(lo <= g <= hi for g in {os.getegid(), *os.getgroups()})


def _summary(cfg: PingParams, rtts: list[float]) -> Result:
    received = len(rtts)
    loss = 100.0 * (cfg.count - received) / cfg.count
    avg = sum(rtts) / received if rtts else None
    stats = f"{received}/{cfg.count} received" + (f", rtt {avg:.2f}ms" if avg is not None else "")
    if received == 0 or loss >= cfg.loss:
        return Result(False, f"{loss:.0f}% loss ({stats})", value=avg)
    if cfg.rtt is not None and avg is not None and avg > cfg.rtt:
        return Result(False, f"rtt {avg:.2f}ms > {cfg.rtt:g}ms ({received}/{cfg.count} received)", value=avg)
    return Result(True, f"{loss:.0f}% loss, rtt {avg:.2f}ms", value=avg,
                  latency_s=(avg or 0.0) / 1000)


async def _ping(host: str, cfg: PingParams, privileged: bool, sem: asyncio.Semaphore) -> Result:
    async with sem:
        try:
            res = await icmplib.async_ping(
                host, count=cfg.count, interval=cfg.interval, timeout=reply_wait(cfg),
                family=cfg.family, privileged=privileged, payload_size=cfg.payload_size,
            )
        except icmplib.NameLookupError:
            return Result(False, f"cannot resolve {host}")
        except icmplib.SocketPermissionError as e:
            kind = "raw" if privileged else "datagram (see net.ipv4.ping_group_range)"
            return Result(False, f"no permission for {kind} ICMP socket", repr(e))
        except icmplib.ICMPLibError as e:
            return Result(False, f"ICMP error: {e}", repr(e))
        except Exception as e:  # probes never raise
            return Result(False, describe(e, cfg.timeout, host), repr(e))
    return _summary(cfg, list(res.rtts))


@monitor("fping", scope="group")
async def fping(targets: list[Target], params: Params) -> dict[str, Result]:
    """Ping all hosts of the group concurrently; see the module docstring."""
    try:
        cfg = _parse(params)
    except ValueError as e:
        return {t.host: bad_params(e) for t in targets}
    privileged = cfg.privileged if cfg.privileged is not None else not unprivileged_allowed()
    hosts = list(dict.fromkeys(t.host for t in targets))
    sem = asyncio.Semaphore(cfg.concurrency)
    results = await asyncio.gather(*(_ping(h, cfg, privileged, sem) for h in hosts))
    if cfg.only_all_down and any(r.ok for r in results):
        for r in results:
            if not r.ok:
                r.ok, r.summary = True, f"{r.summary} (ignored: not all hosts down)"
    return dict(zip(hosts, results))
