"""`lvs` (also answers to `lvs.alert` / `ipvs.alert`): the classic lvs.alert arguments
`-P tcp -V VIP:PORT -R RIP -W WEIGHT -F dr|nat|tun [-X down|quiesce]`, applied through
the daemon's single IPVS owner instead of running ipvsadm: a down alert removes (or
with `-X quiesce`, zero-weights) the real server, an upalert puts it back with WEIGHT."""

from __future__ import annotations

from pymon.ipvs import owner as lvs
from ..plugin import AlertEvent, Params, alert


@alert("lvs")
async def lvs_alert(event: AlertEvent, params: Params) -> None:
    if event.type == "startupalert":
        return
    service, dest, action = lvs.parse_lvs_args(list(params.get("argv", [])))
    if lvs.OWNER is None:
        raise RuntimeError("no IPVS owner (the daemon did not start one)")
    await lvs.OWNER.set_override(service, dest, up=event.type == "upalert", quiesce=action == "quiesce")
