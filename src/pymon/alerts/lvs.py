"""`lvs` (also answers to `lvs.alert` / `ipvs.alert`): the classic lvs.alert arguments
`-P tcp -V VIP:PORT -R RIP -W WEIGHT -F dr|nat|tun [-X down|quiesce]`, applied through
the daemon's single IPVS owner instead of running ipvsadm: a down alert removes (or
with `-X quiesce`, zero-weights) the real server, an upalert puts it back with WEIGHT."""

from __future__ import annotations

import getopt
from typing import Protocol

from pymon.ipvs.table import Dest, Service, ServiceKey
from pymon.model.config import _FWD, split_hostport
from pymon.plugin import AlertEvent, Params, alert


class Overrides(Protocol):
    """What the alert needs of the IPVS owner (ipvs/owner.py): the wiring binds it."""

    async def set_override(self, service: Service, dest: Dest, up: bool, quiesce: bool) -> None: ...


_owner: list[Overrides | None] = [None]  # set by the wiring while an owner runs (`bind`)


def bind(owner: Overrides | None) -> None:
    """The daemon's IPVS owner from now on (None: the daemon stopped it)."""
    _owner[0] = owner


def parse_lvs_args(argv: list[str]) -> tuple[Service, Dest, str]:
    """The classic lvs.alert options: -P proto -V VIP:PORT -R RIP[:PORT] -W weight -F fwd [-X down|quiesce]."""
    try:
        opts, rest = getopt.getopt(argv, "P:V:R:W:F:X:")
    except getopt.GetoptError as e:
        raise ValueError(f"lvs alert: {e}") from None
    o = dict(opts)
    if "-V" not in o or "-R" not in o:
        raise ValueError("lvs alert: needs -V VIP:PORT and -R REALSERVER")
    proto = o.get("-P", "tcp")
    if o["-V"].isdigit() or proto in ("fwm", "fwmark"):
        key = ServiceKey(fwmark=int(o["-V"]))
        port = 0
    else:
        vip, port = split_hostport(o["-V"], None)
        key = ServiceKey(proto, vip, port)
    rip, rport = split_hostport(o["-R"], port)
    fwd = _FWD.get(o.get("-F", "dr"))
    if fwd is None:
        raise ValueError(f"lvs alert: -F must be dr, nat or tun, not {o['-F']!r}")
    action = o.get("-X", "down")
    if action not in ("down", "quiesce"):
        raise ValueError(f"lvs alert: -X must be down or quiesce, not {action!r}")
    return Service(key), Dest(rip, rport, fwd, int(o.get("-W", "1"))), action  # type: ignore[arg-type]


def validate(params: Params) -> list[str]:
    try:
        parse_lvs_args(list(params.get("argv", [])))
    except ValueError as e:
        return [str(e)]
    return []


@alert("lvs")
async def lvs_alert(event: AlertEvent, params: Params) -> None:
    if event.type == "startupalert":
        return
    service, dest, action = parse_lvs_args(list(params.get("argv", [])))
    owner = _owner[0]
    if owner is None:
        raise RuntimeError("no IPVS owner (the daemon did not start one)")
    await owner.set_override(service, dest, up=event.type == "upalert", quiesce=action == "quiesce")
