"""Live pool changes: real servers added, removed, reweighted, disabled at run time,
kept as overrides of the config. Pure: no I/O, no clock (callers pass `by` and `at`).

An override names a real server of a virtual service (the service's `name`, and the
server's `ADDRESS:PORT`). `change()` validates one operator request against the config
and returns the new overrides (or raises PoolError with a one-line reason, changing
nothing); `effective()` applies the overrides to the config: the virtual services the
IPVS owner gets, and hostgroups where an added server's host is checked like any other.
The daemon runs the result through its one reload path, so checks and the table follow
the same way they follow an edited file.

Precedence on reload (`settle()`): an override records what the config said of its
server when it was made (`base`). It holds while the config still says that; once the
config changes that server (lists a server the override added, drops or changes one the
override changed), the config wins and the override is dropped, with the reason.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any, Literal

from pymon.ipvs.table import Dest
from pymon.model.config import RealServerSpec, VirtualServiceSpec, split_hostport

Action = Literal["add", "remove", "weight", "disable", "enable"]
ACTIONS: tuple[str, ...] = ("add", "remove", "weight", "disable", "enable")
FORWARDING = ("dr", "nat", "tun")
MAX_WEIGHT = 65535


class PoolError(ValueError):
    """A request that cannot be applied; the message is one line naming the field."""


@dataclass(frozen=True)
class Base:
    """What the config said of a real server when the override was made."""

    host: str
    weight: int
    forwarding: str


@dataclass(frozen=True)
class PoolOverride:
    vs: str  # the virtual service's name
    address: str  # the real server, ADDRESS:PORT ([v6]:PORT)
    base: Base | None  # None: the config did not list it (added here)
    host: str = ""  # the hostgroup name whose health drives it (added servers)
    forwarding: str = "dr"  # (added servers)
    weight: int | None = None  # None: the configured weight
    removed: bool = False  # out of the pool until the override is cleared
    disabled: bool = False  # out of the table until enabled
    by: str = ""
    at: float = 0.0

    @property
    def added(self) -> bool:
        return self.base is None

    def describe(self) -> str:
        """The short mark `pymon status` and `pymon ipvs` show beside the server."""
        if self.removed:
            return "removed (override)"
        parts = ["added" if self.added else ""]
        if self.weight is not None and not self.added:
            parts.append(f"weight {self.base.weight if self.base else '?'}->{self.weight}")
        if self.disabled:
            parts.append("disabled")
        return " ".join(p for p in parts if p) + " (override)"

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items()}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "PoolOverride":
        base = d.get("base")
        return cls(str(d["vs"]), str(d["address"]), Base(**base) if base else None, str(d.get("host", "")),
                   str(d.get("forwarding", "dr")), d.get("weight"), bool(d.get("removed")),
                   bool(d.get("disabled")), str(d.get("by", "")), float(d.get("at", 0.0)))


Key = tuple[str, str]  # (virtual service name, ADDRESS:PORT)


def label(addr: str, port: int) -> str:
    return f"[{addr}]:{port}" if ":" in addr else f"{addr}:{port}"


def find_vs(vss: list[VirtualServiceSpec], name: str) -> VirtualServiceSpec:
    for vs in vss:
        if vs.name == name or str(vs.service.key) == name:
            return vs
    known = ", ".join(repr(v.name) for v in vss) or "none"
    raise PoolError(f"virtual_service: no such virtual service {name!r} (known: {known})")


def real_address(vs: VirtualServiceSpec, text: Any) -> str:
    """`ADDRESS[:PORT]` as the canonical label (the service's port when left out)."""
    if not isinstance(text, str) or not text.strip():
        raise PoolError("real_server: expected ADDRESS[:PORT]")
    try:
        addr, port = split_hostport(text, vs.service.key.port or 0)
        d = Dest(addr, port)
    except ValueError as e:
        raise PoolError(f"real_server: {e}") from None
    return label(d.address, d.port)


def _config_rs(vs: VirtualServiceSpec, address: str) -> RealServerSpec | None:
    return next((r for r in vs.reals if label(r.dest.address, r.dest.port) == address), None)


def _weight(v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= MAX_WEIGHT:
        raise PoolError(f"weight: expected an integer 0-{MAX_WEIGHT}, got {v!r}")
    return v


def change(overrides: dict[Key, PoolOverride], vss: list[VirtualServiceSpec], action: str, vs_name: Any,
           address: Any, *, weight: Any = None, host: Any = None, forwarding: Any = None, by: str = "",
           at: float = 0.0) -> tuple[dict[Key, PoolOverride], PoolOverride | None]:
    """One operator request → the new overrides and the override now held for that server
    (None: the server is back to what the config says). Raises PoolError, changing nothing."""
    if action not in ACTIONS:
        raise PoolError(f"action: expected one of {', '.join(ACTIONS)}, got {action!r}")
    if not isinstance(vs_name, str):
        raise PoolError("virtual_service: expected the virtual service's name")
    vs = find_vs(vss, vs_name)
    addr = real_address(vs, address)
    key = (vs.name, addr)
    cfg_rs = _config_rs(vs, addr)
    old = overrides.get(key)
    in_pool = (cfg_rs is not None or (old is not None and old.added)) and not (old is not None and old.removed)
    new: PoolOverride | None
    if action == "add":
        if in_pool:
            raise PoolError(f"real_server: {addr} is already a real server of {vs.name!r}")
        if cfg_rs is not None:  # the config lists it, an override removed it: the remove is undone
            new = replace(old, removed=False, by=by, at=at) if old else None
            if weight is not None:
                new = replace(new or PoolOverride(vs.name, addr, _base(cfg_rs)), weight=_weight(weight), by=by, at=at)
        else:
            name = addr.rpartition(":")[0].strip("[]") if host in (None, "") else host
            if not isinstance(name, str) or not name.strip() or any(c.isspace() for c in name):
                raise PoolError(f"host: expected a host name without spaces, got {host!r}")
            fwd = forwarding if forwarding not in (None, "") else (vs.reals[0].dest.forwarding if vs.reals else "dr")
            if fwd not in FORWARDING:
                raise PoolError(f"forwarding: expected one of {', '.join(FORWARDING)}, got {forwarding!r}")
            new = PoolOverride(vs.name, addr, None, name, fwd, _weight(1 if weight is None else weight), by=by, at=at)
    else:
        if not in_pool and not (action == "enable" and old is not None and old.disabled):
            raise PoolError(f"real_server: {addr} is not a real server of {vs.name!r}")
        cur = old or PoolOverride(vs.name, addr, _base(cfg_rs))
        if action == "remove":
            new = None if cur.added else replace(cur, removed=True, disabled=False, weight=None, by=by, at=at)
        elif action == "weight":
            w = _weight(weight)
            new = replace(cur, weight=None if cur.base is not None and w == cur.base.weight else w, by=by, at=at)
        elif action == "disable":
            new = replace(cur, disabled=True, by=by, at=at)
        else:
            new = replace(cur, disabled=False, by=by, at=at)
    if new is not None and not new.added and new.weight is None and not new.disabled and not new.removed:
        new = None  # nothing left to override
    out = {k: v for k, v in overrides.items() if k != key}
    if new is not None:
        out[key] = new
    return out, new


def _base(rs: RealServerSpec | None) -> Base | None:
    return None if rs is None else Base(rs.host, rs.dest.weight, rs.dest.forwarding)


def clear(overrides: dict[Key, PoolOverride], vs: str | None = None, address: str | None = None
          ) -> tuple[dict[Key, PoolOverride], list[PoolOverride]]:
    """Drop the overrides of one server, of one virtual service, or all; returns (kept, cleared)."""
    def hit(k: Key) -> bool:
        return (vs is None or k[0] == vs) and (address is None or k[1] == address)

    return {k: v for k, v in overrides.items() if not hit(k)}, [v for k, v in overrides.items() if hit(k)]


def settle(overrides: dict[Key, PoolOverride], vss: list[VirtualServiceSpec]
           ) -> tuple[dict[Key, PoolOverride], list[tuple[PoolOverride, str]]]:
    """The reload precedence: the overrides still in force against this config, and those
    dropped with why."""
    kept: dict[Key, PoolOverride] = {}
    dropped: list[tuple[PoolOverride, str]] = []
    by_name = {vs.name: vs for vs in vss}
    for key, ov in overrides.items():
        vs = by_name.get(ov.vs)
        if vs is None:
            dropped.append((ov, "the virtual service is no longer in the config"))
            continue
        rs = _config_rs(vs, ov.address)
        if ov.added and rs is not None:
            dropped.append((ov, "satisfied: the config now lists this real server"))
        elif not ov.added and rs is None:
            dropped.append((ov, "the config no longer lists this real server"))
        elif not ov.added and _base(rs) != ov.base:
            assert rs is not None and ov.base is not None
            dropped.append((ov, f"the config changed this real server (weight {ov.base.weight} -> "
                                f"{rs.dest.weight}): the config wins"))
        else:
            kept[key] = ov
    return kept, dropped


def effective(vss: list[VirtualServiceSpec], hostgroups: dict[str, list[str]],
              overrides: dict[Key, PoolOverride]) -> tuple[list[VirtualServiceSpec], dict[str, list[str]]]:
    """The config's virtual services and hostgroups with the overrides applied: removed and
    disabled servers left out, weights replaced, added servers appended (their hosts
    joining the watched hostgroup, so they are checked)."""
    if not overrides:
        return vss, hostgroups
    groups = dict(hostgroups)
    out = []
    for vs in vss:
        reals = []
        for rs in vs.reals:
            ov = overrides.get((vs.name, label(rs.dest.address, rs.dest.port)))
            if ov is None:
                reals.append(rs)
            elif not (ov.removed or ov.disabled):
                reals.append(RealServerSpec(rs.host, replace(rs.dest, weight=ov.weight))
                             if ov.weight is not None else rs)
        for (name, addr), ov in overrides.items():
            if name != vs.name or not ov.added:
                continue
            group = vs.watch[0]
            if ov.host not in groups.get(group, []):
                groups[group] = [*groups.get(group, []), ov.host]
            if not ov.disabled:
                a, port = split_hostport(addr, None)
                reals.append(RealServerSpec(ov.host, Dest(a, port, ov.forwarding, ov.weight or 0)))  # type: ignore[arg-type]
        out.append(replace(vs, reals=reals))
    return out, groups
