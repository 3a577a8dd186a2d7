"""Whether this director announces a VIP: a pure step function, no I/O.

One `Announcement` per VIP is carried from one evaluation to the next; `step(prev,
inputs, policy)` gives the next. Three states:

- `up`: announced with the `up` attributes (MED);
- `draining`: still announced, with the `draining` attributes (a higher MED and the
  GRACEFUL_SHUTDOWN community 65535:0, RFC 8326) so the routers move new flows to the
  other directors before the route goes; only ever entered from an announced state;
- `withdrawn`: not announced.

Invariants (tests/test_routing_announce.py checks them with hypothesis):
- never announced before READY, in self fault, once stopped, or while disabled by the
  operator with `disabled: withdraw` — these withdraw at once, with no damping: each is
  a fact about this director, not a health observation that might flap;
- a withdrawn VIP is announced only after `rise` consecutive evaluations in which it
  could be served; an announced VIP is withdrawn for health only after `fall`
  consecutive evaluations in which it could not;
- `draining` is reached only from `up`/`draining`: a stop or a drain never announces a
  VIP that was not announced.

"Could be served" (`servable`): every virtual service on the VIP has quorum (`when:
quorum`; a service without a quorum counts as having it while one real server is
pooled), or has one real server pooled (`when: any_pooled`). Every, not any: routers
send all of a VIP's ports to the same director, so a director that serves :80 but not
:443 would black-hole :443.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

from pymon.model.routing import Policy, When

State = Literal["up", "draining", "withdrawn"]
Stop = Literal["", "draining", "stopped"]
ANNOUNCED: tuple[State, ...] = ("up", "draining")


@dataclass(frozen=True)
class Service:
    """One virtual service on the VIP, as the IPVS owner last computed it."""

    name: str
    pooled: int  # real servers with a weight above 0 in the wanted table (a sorry server is not one)
    quorum: bool | None = None  # None: the service sets no quorum


@dataclass(frozen=True)
class Inputs:
    ready: bool  # first full round of checks done and IPVS reconciled with it
    services: tuple[Service, ...] = ()
    self_fault: bool = False  # this director cannot serve whatever its pools say (owner-provided)
    disabled: bool = False  # the operator disabled the VIP's announcement
    stop: Stop = ""  # clean stop: "draining" first, then "stopped"


@dataclass(frozen=True)
class Announcement:
    state: State = "withdrawn"
    reason: str = "not evaluated yet"
    ok_run: int = 0  # consecutive evaluations in which the VIP could be served
    bad_run: int = 0  # consecutive evaluations in which it could not

    @property
    def announced(self) -> bool:
        return self.state in ANNOUNCED


def servable(services: tuple[Service, ...], when: When) -> tuple[bool, str]:
    """Whether the VIP can be served by this director's pools, and why (one line)."""
    if not services:
        return False, "no virtual service on this VIP"
    for s in services:
        if when == "quorum" and s.quorum is not None:
            if not s.quorum:
                return False, f"{s.name}: quorum lost"
        elif s.pooled < 1:
            return False, f"{s.name}: no real server pooled"
    what = "quorum" if when == "quorum" else "real servers pooled"
    return True, f"{what}: " + ", ".join(f"{s.name} ({s.pooled} pooled)" for s in services)


def step(prev: Announcement, inp: Inputs, policy: Policy) -> Announcement:
    """The announcement after one evaluation."""
    if not inp.ready:
        # health before the first full round is no health: nothing counts yet
        return Announcement("withdrawn", "not ready: first round of checks not done")
    ok, why = servable(inp.services, policy.when)
    ok_run, bad_run = (prev.ok_run + 1, 0) if ok else (0, prev.bad_run + 1)
    # the runs keep counting under a hard reason: once it clears, a pool that stayed
    # healthy all along is announced at once, one that did not waits for its rise
    counted = replace(prev, ok_run=ok_run, bad_run=bad_run)
    # an announced VIP stays announced (up or draining) only while its pool holds
    keeps = prev.announced and (ok or bad_run < policy.fall)
    if inp.stop == "stopped":
        return replace(counted, state="withdrawn", reason="stopped")
    if inp.self_fault:
        return replace(counted, state="withdrawn", reason="self fault")
    if inp.disabled and (policy.disabled == "withdraw" or not keeps):
        return replace(counted, state="withdrawn", reason="disabled by operator")
    if inp.stop == "draining":
        if keeps:
            return replace(counted, state="draining", reason="stopping: graceful shutdown")
        return replace(counted, state="withdrawn", reason="stopping" if ok else f"stopping; {why}")
    if inp.disabled:
        return replace(counted, state="draining", reason="disabled by operator (draining)")
    if keeps:
        if ok:
            return replace(counted, state="up", reason=why)
        return replace(counted, state="up", reason=f"{why} ({bad_run} of fall {policy.fall})")
    if prev.announced:
        return replace(counted, state="withdrawn", reason=why)
    if ok and ok_run >= policy.rise:
        return replace(counted, state="up", reason=why)
    if ok:
        return replace(counted, state="withdrawn", reason=f"{why} ({ok_run} of rise {policy.rise})")
    return replace(counted, state="withdrawn", reason=why)
