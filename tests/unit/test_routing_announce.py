"""routing/announce.py: the announce/withdraw decision, its invariants under any sequence of inputs."""

from __future__ import annotations

from hypothesis import given, settings, strategies as st

from pymon.model.routing import Policy
from pymon.routing.announce import Announcement, Inputs, Service, servable, step

services = st.lists(st.builds(Service, st.sampled_from(["web", "tls"]), st.integers(0, 3),
                              st.sampled_from([None, True, False])), min_size=0, max_size=2).map(tuple)
inputs = st.builds(Inputs, ready=st.booleans() | st.just(True), services=services,
                   self_fault=st.booleans() | st.just(False), disabled=st.booleans() | st.just(False),
                   stop=st.sampled_from(["", "", "", "draining", "stopped"]))
policies = st.builds(Policy, when=st.sampled_from(["quorum", "any_pooled"]), rise=st.integers(1, 4),
                     fall=st.integers(1, 4), disabled=st.sampled_from(["withdraw", "drain"]))


def run(seq: list[Inputs], pol: Policy) -> list[Announcement]:
    a, out = Announcement(), []
    for inp in seq:
        a = step(a, inp, pol)
        out.append(a)
    return out


@settings(max_examples=400)
@given(st.lists(inputs, min_size=1, max_size=40), policies)
def test_invariants(seq: list[Inputs], pol: Policy) -> None:
    anns = run(seq, pol)
    prev = Announcement()
    for i, (inp, a) in enumerate(zip(seq, anns)):
        ok = servable(inp.services, pol.when)[0]
        # never announced before READY, in self fault, once stopped, or disabled with `withdraw`
        if not inp.ready or inp.self_fault or inp.stop == "stopped" or (inp.disabled and pol.disabled == "withdraw"):
            assert a.state == "withdrawn", (inp, a)
        # draining only from an announced state: a stop or a drain announces nothing new
        if a.state == "draining":
            assert prev.announced and (inp.stop == "draining" or inp.disabled)
        # a withdrawn VIP comes up only after `rise` ready, servable evaluations in a row
        if a.state == "up" and not prev.announced:
            window = seq[i - pol.rise + 1: i + 1] if i + 1 >= pol.rise else None
            assert window is not None and all(x.ready and servable(x.services, pol.when)[0] for x in window), (
                seq[: i + 1], pol)
        # an announced VIP is withdrawn for health only after `fall` unservable evaluations in a row
        if prev.announced and a.state == "withdrawn" and inp.ready and not inp.self_fault and not inp.stop \
                and not inp.disabled:
            assert not ok
            assert i + 1 >= pol.fall and all(not servable(x.services, pol.when)[0]
                                              for x in seq[i - pol.fall + 1: i + 1])
        # announced and servable with nothing against it: stays up
        if prev.announced and ok and inp.ready and not (inp.self_fault or inp.stop or inp.disabled):
            assert a.state == "up"
        assert a.reason
        prev = a


def test_rise_and_fall_damp_a_flapping_pool() -> None:
    pol = Policy(rise=3, fall=2)
    good = Inputs(True, (Service("web", 2, True),))
    bad = Inputs(True, (Service("web", 0, False),))
    states = [a.state for a in run([good, good, bad, good, good, good, bad, good, bad, bad, good], pol)]
    assert states == ["withdrawn", "withdrawn", "withdrawn", "withdrawn", "withdrawn", "up",
                      "up", "up", "up", "withdrawn", "withdrawn"]


def test_quorum_or_any_pooled() -> None:
    one_left = (Service("web", 1, False),)  # one real server pooled, quorum (2) lost
    assert servable(one_left, "quorum") == (False, "web: quorum lost")
    assert servable(one_left, "any_pooled")[0]
    # every service of the VIP must be servable: the routers send all its ports here
    assert servable((Service("web", 2, True), Service("tls", 0, None)), "quorum") == (
        False, "tls: no real server pooled")
    assert servable((), "quorum") == (False, "no virtual service on this VIP")


def test_clean_stop_drains_then_withdraws() -> None:
    pol = Policy()
    good = Inputs(True, (Service("web", 2, True),))
    a = step(Announcement(), good, pol)
    assert a.state == "up"
    a = step(a, Inputs(True, good.services, stop="draining"), pol)
    assert (a.state, a.reason) == ("draining", "stopping: graceful shutdown")
    a = step(a, Inputs(True, good.services, stop="stopped"), pol)
    assert (a.state, a.reason) == ("withdrawn", "stopped")
    # a pool that dies during the drain is withdrawn at once (fall 1), not drained
    a = step(step(Announcement(), good, pol), Inputs(True, (Service("web", 0, False),), stop="draining"), pol)
    assert a.state == "withdrawn"


def test_self_fault_and_disable_win_over_a_healthy_pool() -> None:
    good = Inputs(True, (Service("web", 2, True),))
    up = step(Announcement(), good, Policy())
    assert step(up, Inputs(True, good.services, self_fault=True), Policy()).reason == "self fault"
    assert step(up, Inputs(True, good.services, disabled=True), Policy()).state == "withdrawn"
    drained = step(up, Inputs(True, good.services, disabled=True), Policy(disabled="drain"))
    assert drained.state == "draining"
    # re-enabled: a pool that stayed healthy is announced at once, whatever the rise
    assert step(drained, good, Policy(rise=5, disabled="drain")).state == "up"
