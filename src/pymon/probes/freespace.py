"""`freespace`: free space and inodes of local filesystems (the director's own disks).

The target host is ignored: like mon's freespace.monitor this looks at the machine
pymon runs on. statvfs runs in a thread under `timeout` because a hung NFS mount
would otherwise block the whole event loop, i.e. every other check.

Params: paths {path: threshold or [thresholds]}, timeout (10), argv (mon's form
["/:1GB", "/var:500MB"], where a bare number means KB as in mon). A threshold is the
minimum that must stay free: a number of bytes (10485760), a size with unit
B/KB/MB/GB/TB (powers of 1024: "500MB"), a percentage of the filesystem ("5%"), free
inodes ("1000i" or "1000 inodes") or a percentage of inodes ("5%i", "5% inodes").
"Free" is what an unprivileged user may still use (df's Avail).
"""

from __future__ import annotations

import asyncio
import os
import re
from dataclasses import dataclass
from typing import Any, Literal

from pymon.plugin import Params, Result, Target, monitor, timeout_unless_late
from pymon.probes._common import ParamError, ParamReader, bad_params, validator, describe, fmt_s

_UNITS = {"": 1, "B": 1, "K": 1024, "KB": 1024, "M": 1024**2, "MB": 1024**2,
          "G": 1024**3, "GB": 1024**3, "T": 1024**4, "TB": 1024**4}
_RX = re.compile(r"(\d+(?:\.\d+)?)\s*(%)?\s*(i|inodes?|[KMGT]?B?)?", re.IGNORECASE)

Kind = Literal["bytes", "pct", "inodes", "ipct"]


@dataclass(frozen=True)
class Threshold:
    kind: Kind
    amount: float
    text: str


@dataclass(frozen=True)
class FreespaceParams:
    paths: tuple[tuple[str, tuple[Threshold, ...]], ...]
    timeout: float


def parse_threshold(value: Any, bare_unit: int = 1) -> Threshold:
    """'500MB', '5%', '1000i', '5% inodes' or a number (bytes, or `bare_unit` for strings)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0:
        return Threshold("bytes", float(value), _size(float(value)))
    m = _RX.fullmatch(value.strip()) if isinstance(value, str) else None
    if not m:
        raise ValueError(f"bad threshold {value!r} (expected e.g. 500MB, 5%, 1000i, 5% inodes)")
    num, pct, unit = float(m[1]), bool(m[2]), (m[3] or "").upper()
    inodes = unit in ("I", "INODE", "INODES")
    text = value.strip()
    if pct:
        if num > 100 or (unit and not inodes):
            raise ValueError(f"bad threshold {value!r}")
        return Threshold("ipct" if inodes else "pct", num, text)
    if inodes:
        return Threshold("inodes", num, text)
    return Threshold("bytes", num * (_UNITS[unit] if unit else bare_unit), text)


def from_mon_args(argv: list[str]) -> Params:
    """mon's `freespace.monitor /:1GB /var:500MB` as {"paths": {...}}; bare numbers are KB."""
    if not isinstance(argv, (list, tuple)):
        raise ParamError([f"argv: expected a list of path:threshold, got {argv!r}"])
    paths: dict[str, Any] = {}
    for arg in argv:
        path, sep, limit = str(arg).rpartition(":")
        if not sep or not path:
            raise ParamError([f"argv: expected path:threshold, got {arg!r}"])
        paths[path] = f"{limit}KB" if re.fullmatch(r"\d+(\.\d+)?", limit) else limit
    return {"paths": paths}


def _parse(params: Params) -> FreespaceParams:
    base = from_mon_args(params["argv"]) if params.get("argv") is not None else {}
    r = ParamReader(params, base)
    raw = r.raw("paths", None)
    out: list[tuple[str, tuple[Threshold, ...]]] = []
    if not isinstance(raw, dict) or not raw:
        r.error(f"paths: expected a mapping of path to threshold, got {raw!r}")
    else:
        for path, limits in raw.items():
            items = limits if isinstance(limits, list) else [limits]
            found = []
            for item in items:
                try:
                    found.append(parse_threshold(item))
                except ValueError as e:
                    r.error(f"paths {path}: {e}")
            if not str(path).startswith("/"):
                r.error(f"paths: {path!r} is not an absolute path")
            out.append((str(path), tuple(found)))
    cfg = FreespaceParams(tuple(out), r.timeout())
    r.finish()
    return cfg


validate_params = validator(_parse)
PARAM_VALIDATORS = {"freespace": validate_params}


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1024 or unit == "TB":
            return f"{n:.0f}{unit}" if unit == "B" else f"{n:.1f}{unit}"
        n /= 1024
    raise AssertionError


def _judge(path: str, st: os.statvfs_result, limits: tuple[Threshold, ...]) -> tuple[list[str], float]:
    free = st.f_bavail * st.f_frsize
    pct = 100.0 * st.f_bavail / st.f_blocks if st.f_blocks else 100.0
    ipct = 100.0 * st.f_favail / st.f_files if st.f_files else 100.0
    errors = []
    for t in limits:
        if t.kind == "bytes" and free < t.amount:
            errors.append(f"{path}: {_size(free)} free < {t.text}")
        elif t.kind == "pct" and pct < t.amount:
            errors.append(f"{path}: {pct:.1f}% free < {t.text}")
        elif t.kind == "inodes" and st.f_files and st.f_favail < t.amount:
            errors.append(f"{path}: {st.f_favail} inodes free < {t.amount:g}")
        elif t.kind == "ipct" and st.f_files and ipct < t.amount:
            errors.append(f"{path}: {ipct:.1f}% inodes free < {t.text}")
    return errors, pct


async def _statvfs(path: str, timeout: float) -> os.statvfs_result:
    async with timeout_unless_late(timeout):
        return await asyncio.to_thread(os.statvfs, path)


@monitor("freespace")
async def freespace(target: Target, params: Params) -> Result:
    """Check every configured path of the local machine; the target is ignored."""
    try:
        cfg = _parse(params)
    except ValueError as e:
        return bad_params(e)
    stats = await asyncio.gather(*(_statvfs(p, cfg.timeout) for p, _ in cfg.paths), return_exceptions=True)
    failures: list[str] = []
    oks: list[str] = []
    lowest: float | None = None
    for (path, limits), st in zip(cfg.paths, stats):
        if isinstance(st, (asyncio.TimeoutError, TimeoutError)):
            failures.append(f"{path}: statvfs timeout after {fmt_s(cfg.timeout)}")
        elif isinstance(st, BaseException):
            failures.append(f"{path}: {describe(st)}")
        else:
            errors, pct = _judge(path, st, limits)
            lowest = pct if lowest is None else min(lowest, pct)
            failures += errors
            oks.append(f"{path}: {_size(st.f_bavail * st.f_frsize)} free ({pct:.0f}%)")
    if failures:
        return Result(False, "; ".join(failures), "\n".join(oks), value=lowest)
    return Result(True, ", ".join(oks), value=lowest)
