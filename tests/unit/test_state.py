"""mon's alert rules, as table tests and hypothesis properties over the pure state machine."""

from __future__ import annotations

import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from pymon.model.config import parse_config
from pymon.plugin import Result
from pymon.engine.rules import ServiceState

HOSTS = ["h1", "h2", "h3"]
T0 = 1_700_000_000.0


def make(period: dict | None = None, **svc: object) -> ServiceState:
    p = {"alert": ["mail.alert"], "upalert": ["mail.alert"]}
    p.update(period or {})
    doc = {"hostgroups": {"g": HOSTS},
           "watch": {"g": {"s": {"monitor": "x", "interval": 10, "periods": [p], **svc}}}}
    cfg = parse_config(yaml.safe_dump(doc), "t.yaml")
    return ServiceState(cfg.services[("g", "s")])


def results(down: set[str]) -> dict[str, Result]:
    return {h: Result(h not in down, f"{h} down" if h in down else "") for h in HOSTS}


def run(st: ServiceState, steps: list[set[str]], dt: float = 10.0) -> list[tuple[float, str, str]]:
    """Feed one check per step; returns (time, kind, summary) of every alert fired."""
    fired = []
    for i, down in enumerate(steps):
        now = T0 + i * dt
        for f in st.observe(now, results(down)).fires:
            fired.append((now, f.kind, f.summary))
    return fired


def test_every_failure_alerts_without_alertevery_and_one_upalert():
    st = make()
    fired = run(st, [set(), {"h2"}, {"h2"}, set(), set()])
    assert [k for _, k, _ in fired] == ["alert", "alert", "upalert"]
    assert fired[0][2] == "h2"


def test_summary_is_sorted_failing_hosts():
    st = make()
    fired = run(st, [{"h3", "h1"}])
    assert fired[0][2] == "h1 h3"


def test_no_upalert_without_prior_alert():
    st = make({"alertafter": 3})
    fired = run(st, [{"h1"}, {"h1"}, set()])
    assert fired == []


def test_no_comp_alerts_sends_upalert_anyway_but_only_once():
    st = make({"alertafter": 3, "no_comp_alerts": True})
    fired = run(st, [{"h1"}, set(), set(), {"h1"}, set()])
    assert [k for _, k, _ in fired] == ["upalert"]


def test_alertafter_consecutive():
    st = make({"alertafter": 3})
    fired = run(st, [{"h1"}, {"h1"}, {"h1"}, {"h1"}])
    assert [t for t, _, _ in fired] == [T0 + 20, T0 + 30]


def test_alertafter_n_within_t():
    # 2 failures within 15s; failures 10s apart alert on the second
    st = make({"alertafter": "2 15s"})
    assert len(run(st, [{"h1"}, {"h1"}])) == 1
    # failures 20s apart never reach 2 within 15s
    st = make({"alertafter": "2 15s"})
    assert run(st, [{"h1"}, {"h1"}, {"h1"}], dt=20) == []


def test_alertafter_time_only():
    st = make({"alertafter": "25s"})
    fired = run(st, [{"h1"}] * 5)
    assert [t - T0 for t, _, _ in fired] == [30, 40]


def test_alertevery_suppresses_repeats_until_summary_changes():
    st = make({"alertevery": "1h"})
    fired = run(st, [{"h1"}, {"h1"}, {"h1", "h2"}, {"h1", "h2"}])
    assert [(t - T0, s) for t, _, s in fired] == [(0, "h1"), (20, "h1 h2")]


def test_alertevery_strict_ignores_summary_change():
    st = make({"alertevery": "1h strict"})
    fired = run(st, [{"h1"}, {"h1", "h2"}, {"h3"}])
    assert len(fired) == 1


def test_alertevery_repeats_after_interval():
    st = make({"alertevery": "25s"})
    fired = run(st, [{"h1"}] * 7)
    assert [t - T0 for t, _, _ in fired] == [0, 30, 60]


def test_numalerts_caps_an_episode_and_resets_after_recovery():
    st = make({"numalerts": 2})
    fired = run(st, [{"h1"}] * 4 + [set()] + [{"h1"}] * 3)
    assert [k for _, k, _ in fired] == ["alert", "alert", "upalert", "alert", "alert"]


def test_exit_range_selects_alerts():
    st = make({"alert": ["exit=2 two.alert", "exit=3-5 many.alert", "always.alert"]})
    out = st.observe(T0, results({"h1"}), "h1\ndetail", 4)
    assert [f.alert.name for f in out.fires] == ["many.alert", "always.alert"]
    assert out.fires[0].output == "h1\ndetail"


def test_startupalert_fires_once_at_start():
    st = make({"startupalert": ["boot.alert"]})
    assert [f.alert.name for f in st.startup(T0)] == ["boot.alert"]


def test_period_outside_gets_no_alerts():
    st = make({"period": "yr {1970}"})
    assert run(st, [{"h1"}]) == []


def test_fall_and_rise_debounce_hosts():
    st = make(fall=3, rise=2)
    fired = run(st, [{"h1"}, {"h1"}, {"h1"}, set(), set(), set()])
    # the host stays down until it has risen twice, so the 4th check still alerts
    assert [(t - T0, k) for t, k, _ in fired] == [(20, "alert"), (30, "alert"), (40, "upalert")]
    assert st.hosts["h1"].up is True


def test_ack_silences_alerts_until_recovery():
    st = make()
    run(st, [{"h1"}])
    st.acked = "on it"
    assert st.observe(T0 + 100, results({"h1"})).fires == []


def test_legacy_output_is_the_summary():
    st = make()
    out = st.observe(T0, results({"h2"}), "h2 is broken\nlong detail", 2)
    assert out.fires[0].summary == "h2 is broken"
    assert out.fires[0].retval == 2


# -- properties -----------------------------------------------------------------

steps = st.lists(st.frozensets(st.sampled_from(HOSTS)), min_size=1, max_size=40)
periods = st.fixed_dictionaries({}, optional={
    "alertevery": st.sampled_from(["15s", "35s", "1h", "20s strict", "20s observe_detail"]),
    "alertafter": st.sampled_from([1, 2, 3, "2 25s", "15s"]),
    "numalerts": st.integers(0, 4),
    "no_comp_alerts": st.booleans(),
})


@settings(max_examples=300, deadline=None)
@given(periods, steps)
def test_properties(period, seq):
    st_ = make(period)
    fired = run(st_, [set(s) for s in seq])
    # mon compares a summary with the previous *check's* summary, not the last alert's
    prev_check = {T0 + i * 10.0: " ".join(sorted(seq[i - 1])) if i else None for i in range(len(seq))}
    sent_in_episode = 0
    last_alert_t = None
    alert_since_up = False
    for t, kind, summary in fired:
        if kind == "alert":
            sent_in_episode += 1
            alert_since_up = True
            # never more than numalerts per episode
            if period.get("numalerts"):
                assert sent_in_episode <= period["numalerts"]
            # repeats are spaced by alertevery, unless (non-strict) the summary changed
            every = period.get("alertevery")
            if every and last_alert_t is not None:
                secs = float(every.split()[0].rstrip("sh")) * (3600 if every.split()[0].endswith("h") else 1)
                if t - last_alert_t < secs:
                    assert "strict" not in every and summary != prev_check[t]
            last_alert_t = t
        else:
            # no upalert without a prior alert, unless no_comp_alerts
            assert alert_since_up or period.get("no_comp_alerts")
            sent_in_episode = 0
            alert_since_up = False
            last_alert_t = None if "strict" not in period.get("alertevery", "") else last_alert_t


@settings(max_examples=200, deadline=None)
@given(steps)
def test_summary_change_realerts_unless_strict(seq):
    for opt, expect_change_alerts in (("1h", True), ("1h strict", False)):
        st_ = make({"alertevery": opt})
        prev = None
        for i, down in enumerate(seq):
            was_failing = st_.status == "fail"
            out = st_.observe(T0 + i, results(set(down)))
            alerts = [f for f in out.fires if f.kind == "alert"]
            summary = " ".join(sorted(down))
            if down and was_failing and prev and summary != prev:
                assert bool(alerts) == expect_change_alerts
            prev = summary if down else None


def test_alertevery_counts_whole_seconds_as_mon():
    """alertevery 20s, a failure every 5 s on a clock that drifts a few ms: mon's whole-
    second clock repeats the alert every 20 s, never 25 (19.998 s is 20 s for mon)."""
    st = make({"alertevery": "20s strict"})
    sent = []
    for i in range(13):
        now = 1000.990 + 5 * i - 0.0005 * i  # each check 0.5 ms early
        if st.observe(now, results({"h1"})).fires:
            sent.append(int(now))
    assert [b - a for a, b in zip(sent, sent[1:])] == [20, 20, 20]


def test_upalert_environment_describes_the_outage_also_after_a_restart():
    """mon gives an upalert the outage's first and last failure, the last failing output
    and summary, and the success from before it; pymon too, and across a restart (the
    outage is in state.json)."""
    import json

    from pymon.ops.persist import restore_service, snapshot_service

    st = make()
    st.observe(T0, results(set()))
    st.observe(T0 + 10, results({"h2"}))
    st.observe(T0 + 20, results({"h2"}))
    fresh = make()
    restore_service(fresh, json.loads(json.dumps(snapshot_service(st))), HOSTS)
    for s in (st, fresh):
        up = [f for f in s.observe(T0 + 30, results(set())).fires if f.kind == "upalert"]
        assert up and up[0].env == {
            "MON_FIRST_FAILURE": str(int(T0 + 10)), "MON_LAST_FAILURE": str(int(T0 + 20)),
            "MON_LAST_SUCCESS": str(int(T0)), "MON_LAST_OUTPUT": "h2\nh2: h2 down", "MON_LAST_SUMMARY": "h2"}
        assert s.mon["MON_LAST_FAILURE"] == "0" and s.mon["MON_LAST_SUMMARY"] is None
