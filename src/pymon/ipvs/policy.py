"""Pool policy: which real servers of a virtual service stay pooled, at what weight.

A pure function sits between health and the IPVS table:

    decide(spec, health, now=..., previous=..., operator=..., active=..., frozen=...)
        -> PoolResult(decisions, events, counts, next_change_at)

It reads no clock, does no I/O and imports nothing from pymon (members are keyed by
`(address, port)` tuples, weights are ints), so the IPVS owner can call it on every
health change and the module can move with the package. The owner passes the
`decisions` of one call as `previous` of the next; that mapping is the policy's only
state. Calling `decide` again with its own decisions and the same inputs gives the same
result and no events (it is a fixed point), until `next_change_at`.

Why a policy at all: a director-side fault (its own network, a resolver, an overloaded
check worker) makes every check fail at once, and a monitor that believes it empties the
pool. The policy never lets a failed server leave when that would leave fewer than
`need` servers pooled, so a fault on the director degrades to "some failed servers keep
receiving traffic", not to "the service is down".

States per member (`Decision.state`):

- `pooled`: in the pool at its weight (the target weight, or a slow-start step);
- `pooled_down`: failed, but kept pooled (at its weight) by the threshold or a freeze;
- `unknown`: not checked yet; the owner keeps whatever entry the kernel has (weight None);
- `draining`: weight 0, left in the kernel until it has no active connections or its
  deadline passes;
- `quiesced`: weight 0, slot kept (never deleted while quiesced);
- `removed`: not in the kernel.

`pooled`, `pooled_down` and `unknown` are "in the pool" (`IN_POOL`).

Decisions taken here, and why:

Depool threshold. `need` = ceil(f x N) for a fraction f of `min_pooled`, or
min(count, N) for a count, where N is every configured member, operator-disabled ones
included. This is how PyBal counts (its total is every server in the pool file, enabled
or not), and it is the safer reading: the floor protects the capacity the service was
sized for, and disabling servers does not reduce the traffic, so it must not lower the
floor that stops the next director-side fault from depooling more. A member that wants
to leave (failed, or disabled/drained by the operator) leaves only while at least `need`
members stay in the pool (pooled + pooled_down + unknown, unknown counting as pooled
because it keeps its kernel entry). When others recover, pooled_down members are
released as far as the threshold allows, in the same call.

PyBal differs in one respect: its `canDepool` compares only the up-and-enabled count with
threshold x total, so after a server that had been depooled recovers, PyBal keeps every
pooled-down server until the healthy count alone reaches the threshold, and releases them
one at a time in set order. Here the pool is held at exactly `need` (counting the
pooled_down members), so no more failed servers than necessary receive traffic, and the
one released is chosen, not arbitrary.

Which member stays when some must: (1) a member that still serves (health up or
unknown: an operator request on a healthy server) before a failed one, because a kept
server should be one that answers; (2) sticky: a member already kept (pooled_down, or an
operator request already refused) before a newly failed one, so two changes in one call
do not swap which servers are pooled down; (3) the most recently healthy (latest
`last_up`; never seen up ranks last), as the one most likely to be nearly right;
(4) configuration order. Only members in the pool can be kept: a failed member that has
already left is never brought back for the threshold.

Operator commands (disable, drain, and a member the configuration disables) obey the
same threshold: one that would leave fewer than `need` pooled is refused (the member
stays in the pool, with a `depool_refused` event saying why) unless the operator state
carries `force`. A refused command stays standing and takes effect once the threshold
allows; an API that prefers to reject the command outright can call `decide` with the
would-be operator state first and refuse it if the result has a refusal for that member.
(PyBal applies a disable from its pool file without any threshold check; the threshold
there guards only against failures.) Members disabled before the daemon first saw them
(no previous decision) start out of the pool: that is not a new command, there is
nothing to refuse.

Freeze (`frozen=True`, a director self-fault): no member in the pool leaves or loses
weight for health; recoveries still repool. A freeze also holds operator commands,
because the threshold check they would need counts health the director cannot trust;
`force` still goes through. Draining members keep draining: they had already left.

Quiesce (`quiesce_failed`, true for `quiescent: true` and by default for the hashing
schedulers `sh` and `mh`, see `quiesce_default`): a member that leaves ends `quiesced`
(weight 0, slot kept) instead of `removed`, and a member disabled from the start is
quiesced too. A deleted and re-added destination goes to the head of the kernel's list
and changes the hash table, so directors with the same configuration and health would
hash a flow differently; with every configured member always present, they agree.

Drain (`drain_timeout` > 0): a failed member that leaves goes to `draining` (weight 0)
first and is deleted (or quiesced) when the kernel shows it has no active connections
or at depool time + `drain_timeout`. The deadline counts from the depool, not from the
failure: a member held pooled_down kept receiving new connections until then. An
operator drain does the same with the operator's deadline and idle rule, and ends with a
`drained` event; the member stays out until the operator undrains it.

Slow start (`slowstart` D > 0): a member that comes back into the pool after being out
(failed, drained or disabled) ramps linearly from weight 1 to its target over D seconds,
in n = min(10, floor(D / 1 s), target - 1) steps (at least 1): at most 10 steps, none
shorter than a second, and every step changes the weight by at least 1. Each weight
change rewrites the kernel entry, and under `mh` (and `sh`) rebuilds the lookup table and
remaps flows, so steps must be few and coarse; ten steps are close enough to linear to
protect a cold server. No ramp at daemon start: not on the first call for a member, not
for a member whose first known health is up, and not before `started_at + first_round`.
A pooled_down member that recovers keeps its weight (it never stopped receiving traffic);
one that fails mid-ramp is kept at the ramp's step, never at its target.

Cost: O(members) per virtual service, plus sorting the members that want to leave when
the threshold has to choose among them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Literal, Mapping, NamedTuple

Key = tuple[str, int]
"""A real server: (address, port), as `Dest.key`."""

State = Literal["pooled", "pooled_down", "unknown", "draining", "quiesced", "removed"]
IN_POOL: frozenset[str] = frozenset({"pooled", "pooled_down", "unknown"})
OUT: frozenset[str] = frozenset({"draining", "quiesced", "removed"})

MAX_STEPS = 10
"""Slow start: at most this many weight changes per ramp."""
MIN_STEP = 1.0
"""Slow start: no step shorter than this many seconds."""

HASHING_SCHEDULERS: frozenset[str] = frozenset({"sh", "mh"})

MinPooled = int | Fraction | None


# --- configuration ----------------------------------------------------------------


def parse_min_pooled(value: int | float | str | Fraction | None) -> MinPooled:
    """`min_pooled` from the configuration: None (off), a count (`3`), or a fraction
    (`"50%"`, `0.5`) kept exact, so that 30 % of 10 is 3 and not 4 by float rounding."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise ValueError("min_pooled must be a count, a fraction or a percentage, not a boolean")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"min_pooled must be >= 0, not {value}")
        return value
    if isinstance(value, str):
        text = value.strip()
        if text.endswith("%"):
            frac = Fraction(text[:-1].strip()) / 100
        elif text.isdigit():
            return parse_min_pooled(int(text))
        else:
            frac = Fraction(text)
    elif isinstance(value, Fraction):
        frac = value
    else:
        frac = Fraction(repr(float(value)))
    if not 0 < frac <= 1:
        raise ValueError(f"min_pooled as a fraction must be in (0, 1] (0%..100%), not {value!r}")
    return frac


def need_count(min_pooled: MinPooled, configured: int) -> int:
    """How many members must stay in the pool: ceil(f x N), or min(count, N), or 0."""
    if min_pooled is None:
        return 0
    if isinstance(min_pooled, Fraction):
        return math.ceil(min_pooled * configured)
    return min(min_pooled, configured)


def quiesce_default(scheduler: str, quiescent: bool = False) -> bool:
    """Whether failed members keep their slot at weight 0: asked for with `quiescent`,
    and by default under `sh`/`mh`, whose hash tables change when a destination is
    deleted and re-added (it goes to the head of the kernel's list)."""
    return quiescent or scheduler in HASHING_SCHEDULERS


@dataclass(frozen=True, slots=True)
class Member:
    """A configured real server: its key, the monitored host whose health drives it,
    its target weight, and whether the configuration enables it."""

    key: Key
    host: str
    weight: int
    enabled: bool = True


@dataclass(frozen=True)
class PoolSpec:
    """A virtual service as the policy sees it. Built once per configuration load."""

    name: str
    members: tuple[Member, ...]
    min_pooled: int | float | str | Fraction | None = None  # normalised to MinPooled
    quiesce_failed: bool = False
    drain_timeout: float = 0.0
    slowstart: float = 0.0
    need: int = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "members", tuple(self.members))
        object.__setattr__(self, "min_pooled", parse_min_pooled(self.min_pooled))
        keys = [m.key for m in self.members]
        if len(set(keys)) != len(keys):
            raise ValueError(f"{self.name}: a real server is listed twice")
        if any(m.weight < 0 for m in self.members):
            raise ValueError(f"{self.name}: weights must be >= 0")
        if self.drain_timeout < 0 or self.slowstart < 0:
            raise ValueError(f"{self.name}: drain_timeout and slowstart must be >= 0")
        object.__setattr__(self, "need", need_count(self.min_pooled, len(self.members)))

    @property
    def min_pooled_text(self) -> str:
        """`min_pooled` as an operator wrote it, with what it means here."""
        mp = self.min_pooled
        if isinstance(mp, Fraction):
            pct = mp * 100
            shown = str(pct.numerator) if pct.denominator == 1 else f"{float(pct):g}"
            return f"{shown}% of {len(self.members)} = {self.need}"
        return str(self.need)


# --- inputs -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Health:
    """A member's health: up (True/False, None = not checked yet), the time of its last
    transition, and when it was last seen up (None: never).

    `last_up` chooses which failed members stay pooled down. `since` does not drive a
    rule: drain deadlines count from the depool, not the failure (see the module
    docstring); it is carried so the owner can build one object per host and log it."""

    up: bool | None = None
    since: float = 0.0
    last_up: float | None = None


UNKNOWN = Health()


@dataclass(frozen=True, slots=True)
class Operator:
    """What the operator asked for a member. `drain_deadline` is an absolute time (None:
    no deadline); `drain_until_idle` ends the drain when the kernel shows no active
    connections; `force` lets a disable or drain through the threshold and a freeze."""

    disabled: bool = False
    drained: bool = False
    drain_deadline: float | None = None
    drain_until_idle: bool = True
    force: bool = False


NO_OPERATOR = Operator()


# --- outputs ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Decision:
    """A member's state and weight, and what the policy needs to remember about it.

    `weight` None means "keep the kernel's entry" (state `unknown`); `removed` has 0.
    `cause` says why a member is out or kept ("failed", "disabled", "drained");
    `refused` marks a member kept despite wanting out (pooled_down, or a refused
    operator command), which makes it sticky; `known` records that its health has been
    known at least once (slow start never ramps a member whose first known state is up).
    """

    state: State
    weight: int | None
    since: float
    cause: str = ""
    drain_deadline: float | None = None
    drain_until_idle: bool = True
    ramp_start: float | None = None
    known: bool = False
    refused: bool = False


class Event(NamedTuple):
    """Something an operator wants in the log: (kind, virtual service, host, detail).

    Kinds: `pooled_down` (a failed member kept pooled), `depool_refused` (an operator
    disable/drain refused), `depooled`, `drained` (a drain finished), `repooled`.
    Emitted on transitions only, so a repeated call with the same inputs is silent."""

    kind: str
    vs: str
    host: str
    detail: str


@dataclass(frozen=True, slots=True)
class Counts:
    """Gauges for one virtual service after a call, and the refusals it made.

    `healthy_weight` is the weight of pooled members whose health is up (what quorum
    counts: pooled_down weight is not healthy); `sorry` tells the owner to add the sorry
    server (nothing pooled-and-up, and no unknown member that may still be)."""

    pooled: int
    pooled_down: int
    unknown: int
    draining: int
    out: int
    kept: int
    refusals: int
    need: int
    healthy_weight: int
    sorry: bool


@dataclass(frozen=True)
class PoolResult:
    """The outcome of one call. Pass `decisions` back as `previous` next time."""

    decisions: dict[Key, Decision]
    events: tuple[Event, ...]
    counts: Counts
    next_change_at: float | None

    def wanted(self) -> dict[Key, tuple[State, int | None]]:
        """(state, weight) per member, in configuration order."""
        return {k: (d.state, d.weight) for k, d in self.decisions.items()}


# --- slow start -------------------------------------------------------------------


def ramp_steps(duration: float, target: int) -> int:
    """Number of steps of a ramp: min(MAX_STEPS, floor(duration / MIN_STEP), target - 1),
    at least 1, so that every step raises the weight and none is shorter than MIN_STEP."""
    return max(1, min(MAX_STEPS, int(duration // MIN_STEP), target - 1))


def _boundary(start: float, duration: float, n: int, i: int) -> float:
    """When step i of n begins (step n: the ramp is over). The one formula for both the
    weight and `next_change_at`, so a call at that instant sees the new step."""
    return start + duration if i >= n else start + duration * i / n


def ramp_weight(start: float, duration: float, target: int, now: float) -> tuple[int, float | None]:
    """The weight at `now` of a ramp from 1 to `target` begun at `start`, and when the
    next step begins (None when the ramp is over)."""
    if duration <= 0 or target <= 1:
        return target, None
    n = ramp_steps(duration, target)
    i = min(n, max(0, int((now - start) * n / duration)))
    while i < n and _boundary(start, duration, n, i + 1) <= now:
        i += 1
    while i > 0 and _boundary(start, duration, n, i) > now:
        i -= 1
    if i >= n:
        return target, None
    return 1 + (target - 1) * i // n, _boundary(start, duration, n, i + 1)


# --- the policy -------------------------------------------------------------------


class _Cand(NamedTuple):
    rank: tuple
    index: int


def decide(
    spec: PoolSpec,
    health: Mapping[str, Health],
    *,
    now: float,
    previous: Mapping[Key, Decision] | None = None,
    operator: Mapping[Key, Operator] | None = None,
    active: Mapping[Key, int | None] | None = None,
    started_at: float = -math.inf,
    first_round: float = 0.0,
    frozen: bool = False,
) -> PoolResult:
    """Decide every member of one virtual service (see the module docstring).

    `health` is keyed by monitored host, `operator`, `active` (active connections from
    the kernel, None when unknown) and `previous` by member key. `started_at` is when
    the daemon started and `first_round` how long its first round of checks takes:
    recoveries seen before their sum are start-up, not recoveries (no slow start).
    """
    prev_map = previous or {}
    ops = operator or {}
    conns = active or {}
    members = spec.members
    final: State = "quiesced" if spec.quiesce_failed else "removed"
    ramp_ok = spec.slowstart > 0 and now >= started_at + first_round

    out: list[Decision | None] = [None] * len(members)
    events: list[Event | None] = [None] * len(members)
    staying = 0
    candidates: list[_Cand] = []

    # 1. everything that does not depend on the threshold
    for i, m in enumerate(members):
        p = prev_map.get(m.key)
        h = health.get(m.host, UNKNOWN)
        o = ops.get(m.key, NO_OPERATOR)
        known = (p is not None and p.known) or h.up is not None
        op_out = o.disabled or o.drained or not m.enabled
        was_in = (p.state in IN_POOL) if p is not None else not (o.disabled or not m.enabled)

        if was_in and (op_out or h.up is False):
            sticky = p is not None and p.refused
            serving = h.up is not False
            last = math.inf if h.up else (h.last_up if h.last_up is not None else -math.inf)
            forced = op_out and o.force
            candidates.append(_Cand((forced, not serving, not sticky, -last, i), i))
            continue

        if was_in:  # stays: healthy or not checked, and no operator request
            staying += 1
            ramp_start = p.ramp_start if p is not None else None
            if h.up is None:
                out[i] = _dec(p, "unknown", None, now, known, ramp_start=ramp_start)
                continue
            weight = m.weight
            if ramp_start is not None:
                weight, _ = ramp_weight(ramp_start, spec.slowstart, m.weight, now)
                if weight == m.weight:
                    ramp_start = None
            out[i] = _dec(p, "pooled", weight, now, known, ramp_start=ramp_start)
            if p is not None and p.state == "pooled_down":
                events[i] = Event("repooled", spec.name, m.host, "recovered while pooled_down")
            continue

        # was out (or disabled from the start)
        if not op_out and h.up is True:  # back into the pool
            staying += 1
            ramp_start = now if (ramp_ok and p is not None and p.known and m.weight > 1) else None
            weight = m.weight
            detail = "recovered" if (p is not None and p.cause == "failed") else "back in the pool"
            if ramp_start is not None:
                weight, _ = ramp_weight(ramp_start, spec.slowstart, m.weight, now)
                detail += f", slow start over {spec.slowstart:g}s"
            out[i] = _dec(p, "pooled", weight, now, known, ramp_start=ramp_start)
            events[i] = Event("repooled", spec.name, m.host, detail)
            continue

        if p is None:  # disabled before the daemon first saw it
            cause = "disabled"
            out[i] = _dec(None, final, 0, now, known, cause=cause)
            events[i] = Event("depooled", spec.name, m.host, f"disabled at start ({final})")
            continue
        out[i], events[i] = _out_step(spec, m, p, o, conns.get(m.key), now, known, final)

    # 2. the threshold: which members that want to leave must stay
    keep: set[int] = set()
    pooled_after = staying
    if candidates:
        unforced = [c for c in candidates if not c.rank[0]]
        if frozen:
            keep = {c.index for c in unforced}
        else:
            room = max(0, spec.need - staying)
            if room:
                unforced.sort(key=lambda c: c.rank)
                keep = {c.index for c in unforced[:room]}
        pooled_after = staying + len(keep)
        for c in candidates:
            i = c.index
            m = members[i]
            p = prev_map.get(m.key)
            h = health.get(m.host, UNKNOWN)
            o = ops.get(m.key, NO_OPERATOR)
            known = (p is not None and p.known) or h.up is not None
            if i in keep:
                out[i], events[i] = _kept(spec, m, p, h, o, now, known, frozen, pooled_after)
            else:
                out[i], events[i] = _leave(spec, m, p, h, o, conns.get(m.key), now, known, final)

    # 3. results, gauges and the next time-driven change
    decisions: dict[Key, Decision] = {}
    next_at = math.inf
    pooled = pooled_down = unknown = draining = kept = 0
    healthy_weight = 0
    for i, m in enumerate(members):
        d = out[i]
        assert d is not None
        decisions[m.key] = d
        s = d.state
        if s == "pooled":
            pooled += 1
            if health.get(m.host, UNKNOWN).up:
                healthy_weight += d.weight or 0
            if d.ramp_start is not None:
                _, step = ramp_weight(d.ramp_start, spec.slowstart, m.weight, now)
                if step is not None:
                    next_at = min(next_at, step)
        elif s == "pooled_down":
            pooled_down += 1
        elif s == "unknown":
            unknown += 1
        elif s == "draining":
            draining += 1
            if d.drain_deadline is not None:
                next_at = min(next_at, d.drain_deadline)
        if d.refused:
            kept += 1
    evs = tuple(e for e in events if e is not None)
    refusals = sum(1 for e in evs if e.kind in ("pooled_down", "depool_refused"))
    counts = Counts(pooled=pooled, pooled_down=pooled_down, unknown=unknown, draining=draining,
                    out=len(members) - pooled - pooled_down - unknown, kept=kept,
                    refusals=refusals, need=spec.need, healthy_weight=healthy_weight,
                    sorry=healthy_weight == 0 and unknown == 0)
    return PoolResult(decisions, evs, counts, None if next_at == math.inf else next_at)


def _dec(p: Decision | None, state: State, weight: int | None, now: float, known: bool, *,
         cause: str = "", drain_deadline: float | None = None, drain_until_idle: bool = True,
         ramp_start: float | None = None, refused: bool = False) -> Decision:
    """A decision; `since` moves only when the state changes, so repeated calls agree.
    An unchanged decision is the previous object itself (building one costs more than
    comparing it, and most members of most calls do not change)."""
    if p is not None and p.state == state:
        if (p.weight == weight and p.cause == cause and p.drain_deadline == drain_deadline
                and p.drain_until_idle == drain_until_idle and p.ramp_start == ramp_start and p.known == known
                and p.refused == refused):
            return p
        since = p.since
    else:
        since = now
    return Decision(state, weight, since, cause, drain_deadline, drain_until_idle, ramp_start, known, refused)


def _kept(spec: PoolSpec, m: Member, p: Decision | None, h: Health, o: Operator, now: float,
          known: bool, frozen: bool, pooled_after: int) -> tuple[Decision, Event | None]:
    """A member that wanted to leave but stays: pooled_down if failed, else as it was."""
    why = ("director fault: depooling is frozen" if frozen else
           f"would leave {pooled_after - 1} pooled, min_pooled {spec.min_pooled_text}")
    ramp_start = p.ramp_start if p is not None else None
    if h.up is False:
        # at its weight: the target, or the step a ramp had reached (which then pauses); one
        # that was unknown mid-ramp (no weight of its own) at the ramp's step by now, never
        # the full target: a failed server is not given more traffic than it had
        if p is not None and p.weight is not None and p.state in ("pooled", "pooled_down"):
            weight = p.weight
        elif ramp_start is not None:
            weight, _ = ramp_weight(ramp_start, spec.slowstart, m.weight, now)
        else:
            weight = m.weight
        d = _dec(p, "pooled_down", weight, now, known, cause="failed", ramp_start=ramp_start, refused=True)
        new = p is None or p.state != "pooled_down"
        return d, Event("pooled_down", spec.name, m.host, f"failed, kept pooled: {why}") if new else None
    verb = "disable" if (o.disabled or not m.enabled) else "drain"
    cause = "disabled" if verb == "disable" else "drained"
    if h.up is None:
        d = _dec(p, "unknown", None, now, known, cause=cause, ramp_start=ramp_start, refused=True)
    else:
        weight = m.weight
        if ramp_start is not None:
            weight, _ = ramp_weight(ramp_start, spec.slowstart, m.weight, now)
            if weight == m.weight:
                ramp_start = None
        d = _dec(p, "pooled", weight, now, known, cause=cause, ramp_start=ramp_start, refused=True)
    new = p is None or not p.refused or p.cause != cause
    return d, Event("depool_refused", spec.name, m.host, f"{verb} refused: {why}; force to override") \
        if new else None


def _leave(spec: PoolSpec, m: Member, p: Decision | None, h: Health, o: Operator, conns: int | None,
           now: float, known: bool, final: State) -> tuple[Decision, Event | None]:
    """A member leaves the pool: at once, or through `draining`."""
    forced = " (forced)" if o.force and (o.disabled or o.drained or not m.enabled) else ""
    if o.disabled or not m.enabled:
        return _dec(p, final, 0, now, known, cause="disabled"), \
            Event("depooled", spec.name, m.host, f"disabled by operator{forced} ({final})")
    if o.drained:
        d = _dec(p, "draining", 0, now, known, cause="drained", drain_deadline=o.drain_deadline,
                 drain_until_idle=o.drain_until_idle)
        what = f"drain by operator{forced}"
    elif spec.drain_timeout > 0:
        d = _dec(p, "draining", 0, now, known, cause="failed", drain_deadline=now + spec.drain_timeout)
        what = f"failed, draining up to {spec.drain_timeout:g}s"
    else:
        return _dec(p, final, 0, now, known, cause="failed"), \
            Event("depooled", spec.name, m.host, f"failed ({final})")
    done, how = _drain_done(d, conns, now)
    if done:
        return _dec(p, final, 0, now, known, cause=d.cause), \
            Event("depooled", spec.name, m.host, f"{what}: {how} ({final})")
    return d, Event("depooled", spec.name, m.host, what)


def _drain_done(d: Decision, conns: int | None, now: float) -> tuple[bool, str]:
    if d.drain_until_idle and conns == 0:
        return True, "no active connections"
    if d.drain_deadline is not None and now >= d.drain_deadline:
        return True, "deadline reached"
    return False, ""


def _out_step(spec: PoolSpec, m: Member, p: Decision, o: Operator, conns: int | None, now: float,
              known: bool, final: State) -> tuple[Decision, Event | None]:
    """A member already out of the pool that is not coming back: draining goes on, a
    finished one is removed or quiesced (whichever the configuration says now)."""
    if p.state != "draining":
        return _dec(p, final, 0, now, known, cause=p.cause), None
    if o.disabled or not m.enabled:
        return _dec(p, final, 0, now, known, cause="disabled"), \
            Event("drained", spec.name, m.host, f"disabled while draining ({final})")
    deadline, idle = p.drain_deadline, p.drain_until_idle
    if p.cause == "drained" and o.drained:  # the operator may move the deadline
        deadline, idle = o.drain_deadline, o.drain_until_idle
    d = _dec(p, "draining", 0, now, known, cause=p.cause, drain_deadline=deadline, drain_until_idle=idle)
    done, how = _drain_done(d, conns, now)
    if done:
        return _dec(p, final, 0, now, known, cause=p.cause), \
            Event("drained", spec.name, m.host, f"{how} ({final})")
    return d, None


__all__ = [
    "Counts", "Decision", "Event", "HASHING_SCHEDULERS", "Health", "IN_POOL", "Key", "MAX_STEPS",
    "MIN_STEP", "Member", "NO_OPERATOR", "OUT", "Operator", "PoolResult", "PoolSpec", "State",
    "UNKNOWN", "decide", "need_count", "parse_min_pooled", "quiesce_default",
    "ramp_steps", "ramp_weight",
]
