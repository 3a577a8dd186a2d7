"""The director's self-check decision (engine/director_fault.py) and the IPVS owner's
hold while frozen (ipvs/owner.py apply_overrides; the policy's own freeze: test_pool_policy.py): pure, with hypothesis over transitions."""

from __future__ import annotations

import textwrap
from typing import Any

import pytest
from hypothesis import given, settings, strategies as st

from pymon.engine.director_fault import Detector, Settings
from pymon.ipvs.owner import Override, apply_overrides
from pymon.ipvs.table import Dest, Service, ServiceKey
from pymon.model.config import ConfigError, parse_config

S = Settings(share=0.5, min_hosts=4, window=10.0, recheck=2.0)


def hosts(n: int) -> list[tuple[str, str, str]]:
    return [("web", "http", f"10.0.0.{i}") for i in range(n)]


def seen_up(d: Detector, keys: list[tuple[str, str, str]], t: float = 0.0) -> None:
    for k in keys:
        assert d.transition(t, k, True) == "none"


def test_half_down_within_a_round_probes_and_freezes() -> None:
    d, ks = Detector(S), hosts(6)
    seen_up(d, ks)
    assert d.transition(100.0, ks[0], False) == "none"
    assert d.transition(101.0, ks[1], False) == "none"
    assert not d.frozen
    assert d.transition(105.0, ks[2], False) == "probe"  # 3 of 6 within 10 s
    assert d.frozen and d.state == "suspect" and not d.faulty
    assert d.burst == (3, 6)


def test_the_same_share_spread_over_more_than_a_round_is_theirs() -> None:
    d, ks = Detector(S), hosts(6)
    seen_up(d, ks)
    for i, t in enumerate((100.0, 111.0, 122.0)):
        assert d.transition(t, ks[i], False) == "none"
    assert not d.frozen


def test_too_few_hosts_no_verdict() -> None:
    d, ks = Detector(S), hosts(3)
    seen_up(d, ks)
    for k in ks:
        assert d.transition(1.0, k, False) == "none"
    assert not d.frozen


def test_a_host_back_up_within_the_window_does_not_count() -> None:
    d, ks = Detector(S), hosts(4)
    seen_up(d, ks)
    d.transition(1.0, ks[0], False)
    d.transition(2.0, ks[0], True)
    assert d.transition(3.0, ks[1], False) == "none"  # 1 of 4 still down
    assert d.transition(4.0, ks[0], False) == "probe"  # 2 of 4


def test_canaries_answer_it_is_them_and_the_burst_is_spent() -> None:
    d, ks = Detector(S), hosts(4)
    seen_up(d, ks)
    d.transition(1.0, ks[0], False)
    assert d.transition(1.0, ks[1], False) == "probe"
    assert d.probed(2.0, {"gateway 10.0.0.254": True, "link eth1": True}) == "them"
    assert not d.frozen
    assert d.transition(3.0, ks[2], False) == "none"  # only a new burst probes again (1 of 4 new)


def test_a_failing_canary_is_the_director_then_recovery_holds_one_round() -> None:
    d, ks = Detector(S), hosts(4)
    seen_up(d, ks)
    d.transition(1.0, ks[0], False)
    d.transition(1.0, ks[1], False)
    assert d.probed(2.0, {"gateway 10.0.0.254": True, "link eth1": False}) == "fault"
    assert d.frozen and d.faulty
    assert d.next_wake(2.0) == 2.0
    assert d.transition(3.0, ks[2], False) == "none"  # more downs: still the director
    assert d.probed(4.0, {"gateway 10.0.0.254": False, "link eth1": False}) == "none"
    assert d.probed(6.0, {"gateway 10.0.0.254": True, "link eth1": True}) == "recovered"
    assert d.frozen and not d.faulty and d.state == "recovering"
    assert d.tick(15.9) == "none"
    assert d.tick(16.0) == "unfreeze"
    assert not d.frozen and d.went_down() == 0


def test_recovering_director_that_fails_again_is_at_fault_again() -> None:
    d, ks = Detector(S), hosts(4)
    seen_up(d, ks)
    d.transition(1.0, ks[0], False)
    d.transition(1.0, ks[1], False)
    d.probed(2.0, {"canary 10.0.0.9": False})
    d.probed(4.0, {"canary 10.0.0.9": True})
    assert d.probed(6.0, {"canary 10.0.0.9": False}) == "fault"
    assert d.faulty


def test_retain_forgets_removed_hosts() -> None:
    d, ks = Detector(S), hosts(8)
    seen_up(d, ks)
    d.retain(set(ks[:4]))
    d.transition(1.0, ks[0], False)
    assert d.transition(1.0, ks[1], False) == "probe"  # 2 of the 4 left


transition = st.tuples(st.floats(0, 100), st.integers(0, 9), st.booleans())


@settings(max_examples=300, deadline=None)
@given(st.lists(transition, max_size=60), st.integers(1, 10), st.floats(0.05, 1.0))
def test_probe_only_when_the_share_is_reached(events: list[tuple[float, int, bool]], min_hosts: int,
                                              share: float) -> None:
    """Whatever the order: a probe is asked exactly when, in state ok, the hosts that went
    down within the window and are still down reach the share of at least min_hosts."""
    d = Detector(Settings(share=share, min_hosts=min_hosts, window=10.0))
    known: dict[int, bool] = {}
    downs: list[tuple[float, int]] = []
    now = 0.0
    for dt, i, up in events:
        now += dt / 10
        known[i] = up
        if not up:
            downs.append((now, i))
        was_ok = d.state == "ok"
        action = d.transition(now, ("g", "s", str(i)), up)
        recent = {j for t, j in downs if t >= now - 10.0 and known[j] is False}
        expect = was_ok and len(known) >= min_hosts and len(recent) > 0 and len(recent) >= share * len(known)
        assert (action == "probe") == expect
        if action == "probe":
            assert d.frozen
            d.probed(now, {"c": True})  # theirs: the burst is spent
            downs.clear()


VS = ServiceKey("tcp", "10.0.0.100", 80)
SVC = Service(VS, "wlc")


def test_a_frozen_table_keeps_what_lvs_alert_would_take_away_but_adds() -> None:
    a, b, c = Dest("10.0.0.1", 80, "dr", 1), Dest("10.0.0.2", 80, "dr", 5), Dest("10.0.0.3", 80, "dr", 1)
    actual = {VS: (SVC, {a.key: a, b.key: b})}
    overrides = {(VS, a.key): Override(SVC, a, up=False), (VS, b.key): Override(SVC, b, up=False, quiesce=True),
                 (VS, c.key): Override(SVC, c, up=True)}
    held = apply_overrides({VS: (SVC, {a.key: a, b.key: b})}, actual, overrides, frozen=True)
    assert held[VS][1] == {a.key: a, b.key: b, c.key: c}
    free = apply_overrides({VS: (SVC, {a.key: a, b.key: b})}, actual, overrides)
    assert free[VS][1] == {b.key: Dest("10.0.0.2", 80, "dr", 0), c.key: c}


def parse(self_check: str) -> Any:
    text = textwrap.dedent("""
        globals: {statedir: /var/lib/pymon}
        hostgroups: {web: [10.0.0.1, 10.0.0.2]}
        watch:
          web:
            http: {monitor: x, interval: 5s, timeout: 3s, fall: 2, failure_interval: 2s}
            ping: {monitor: x, interval: 30s, timeout: 1s}
        """) + self_check
    return parse_config(text, "t.yaml")


def test_self_check_config_defaults_and_the_derived_window() -> None:
    sc = parse("self_check: {enabled: true, track_file: director-fault}\n").self_check
    assert sc.enabled and sc.gateway and sc.links and sc.share == 0.5 and sc.min_hosts == 4
    assert sc.window == 31.0  # ping: 30 + 1 x 1 beats http: 5 + 2 x 3 + 1 x 2
    assert str(sc.track_file) == "/var/lib/pymon/director-fault" and sc.track_weight == -254
    assert not parse("").self_check.enabled


def test_self_check_config_problems_are_one_line_each_with_their_place() -> None:
    with pytest.raises(ConfigError) as e:
        parse("self_check: {canaries: [10.0.0.9, gateway.example], share: 1.5, window: soon, colour: red}\n")
    assert e.value.problems == [
        "t.yaml:8:60: self_check.share: 1.5 is greater than the maximum of 1",
        "t.yaml:8:73: self_check.window: bad duration 'soon' (use e.g. 30s, 5m, 1h)",
        "t.yaml:8:79: unknown key 'colour' (expected one of: alert, canaries, canary_timeout, enabled, gateway, "
        "links, min_hosts, recheck, share, track_file, track_weight, window)",
    ]
    with pytest.raises(ConfigError) as e:
        parse("self_check: {canaries: [10.0.0.9, gateway.example]}\n")
    assert e.value.problems == ["t.yaml:8:35: canaries: 'gateway.example' is not an IP address"]


def test_at_fault_the_bursts_hosts_are_held_until_unfrozen() -> None:
    d, ks = Detector(S), hosts(6)
    seen_up(d, ks)
    d.transition(1.0, ks[0], False)  # the first to go: already depooled by then
    d.transition(1.5, ks[1], False)
    d.transition(1.8, ks[1], True)  # back: not part of the burst
    d.transition(2.0, ks[1], False)
    assert d.transition(3.0, ks[2], False) == "probe"
    assert not d.holds(ks[0])  # not before the verdict: it may be theirs
    d.probed(3.5, {"link eth1": False})
    assert {k for k in ks if d.holds(k)} == set(ks[:3])
    d.transition(4.0, ks[3], False)  # later downs are kept by the frozen owner anyway
    assert not d.holds(ks[3])
    d.probed(30.0, {"link eth1": True})
    assert d.holds(ks[0])  # recovering: still frozen
    d.tick(40.0)
    assert not d.frozen and not any(d.holds(k) for k in ks)
