"""Live pool overrides (ipvs/overrides.py): validation, the effective pool, and the reload
precedence; and the agent protocol's reading (probes/agent.py)."""

from __future__ import annotations

import textwrap

import pytest

from pymon.ipvs import overrides as ov
from pymon.model.config import parse_config
from pymon.plugin import AgentReport
from pymon.probes.agent import parse_reply


def vss(reals: str = "[10.0.0.1, {address: 10.0.0.2, weight: 3}]", group: str = "[10.0.0.1, 10.0.0.2]"):
    cfg = parse_config(textwrap.dedent(f"""
        hostgroups: {{web: {group}}}
        watch: {{web: {{http: {{monitor: x}}}}}}
        virtual_services:
          - {{name: www, vip: 10.0.0.100:80, watch: web:http, real_servers: {reals}}}
        """), "t.yaml")
    return cfg


def change(overrides, cfg, *a, **kw):
    return ov.change(overrides, cfg.virtual_services, *a, by="tester", at=1.0, **kw)


def pool(cfg, overrides):
    vs, groups = ov.effective(cfg.virtual_services, cfg.hostgroups, overrides)
    return {f"{r.dest.address}:{r.dest.port}": r.dest.weight for r in vs[0].reals}, groups["web"]


def test_add_weight_disable_remove_then_effective() -> None:
    cfg = vss()
    o, held = change({}, cfg, "add", "www", "10.0.0.3", weight=5, host="web3")
    assert held is not None and held.added and held.describe() == "added (override)"
    assert pool(cfg, o) == ({"10.0.0.1:80": 1, "10.0.0.2:80": 3, "10.0.0.3:80": 5}, ["10.0.0.1", "10.0.0.2", "web3"])
    o, held = change(o, cfg, "weight", "www", "10.0.0.2:80", weight=7)
    assert held is not None and held.describe() == "weight 3->7 (override)"
    o, _ = change(o, cfg, "disable", "TCP 10.0.0.100:80", "10.0.0.1")  # by ipvsadm's name too
    assert pool(cfg, o)[0] == {"10.0.0.2:80": 7, "10.0.0.3:80": 5}
    o, held = change(o, cfg, "enable", "www", "10.0.0.1")
    assert held is None and ("www", "10.0.0.1:80") not in o  # back to the config: no override left
    o, held = change(o, cfg, "weight", "www", "10.0.0.2", weight=3)
    assert held is None  # the configured weight again
    o, _ = change(o, cfg, "remove", "www", "10.0.0.3")
    assert o == {}  # an added server removed: as if never added (its host no longer checked)
    o, held = change(o, cfg, "remove", "www", "10.0.0.1")
    assert held is not None and held.removed and pool(cfg, o)[0] == {"10.0.0.2:80": 3}
    o, held = change(o, cfg, "add", "www", "10.0.0.1")  # a removed config server comes back
    assert held is None and o == {}


@pytest.mark.parametrize("args,kw,msg", [
    (("add", "nosuch", "10.0.0.3"), {}, "virtual_service: no such virtual service 'nosuch'"),
    (("add", "www", "10.0.0.1"), {}, "real_server: 10.0.0.1:80 is already a real server of 'www'"),
    (("add", "www", "not-an-ip"), {}, "real_server: "),
    (("add", "www", "10.0.0.3:http"), {}, "real_server: bad port"),
    (("add", "www", "10.0.0.3"), {"weight": -1}, "weight: expected an integer 0-65535"),
    (("add", "www", "10.0.0.3"), {"weight": True}, "weight: expected an integer"),
    (("add", "www", "10.0.0.3"), {"host": "a b"}, "host: expected a host name without spaces"),
    (("add", "www", "10.0.0.3"), {"forwarding": "x"}, "forwarding: expected one of dr, nat, tun"),
    (("weight", "www", "10.0.0.9"), {"weight": 2}, "real_server: 10.0.0.9:80 is not a real server of 'www'"),
    (("weight", "www", "10.0.0.1"), {}, "weight: expected an integer"),
    (("explode", "www", "10.0.0.1"), {}, "action: expected one of add, remove, weight, disable, enable"),
    (("add", None, "10.0.0.3"), {}, "virtual_service: expected"),
    (("add", "www", 17), {}, "real_server: expected ADDRESS[:PORT]"),
])
def test_bad_requests_change_nothing(args, kw, msg) -> None:
    cfg = vss()
    before, _ = change({}, cfg, "weight", "www", "10.0.0.1", weight=4)
    snapshot = dict(before)
    with pytest.raises(ov.PoolError) as e:
        change(before, cfg, *args, **kw)
    assert str(e.value).startswith(msg) and "\n" not in str(e.value)
    assert before == snapshot


def test_reload_precedence() -> None:
    cfg = vss()
    o, _ = change({}, cfg, "add", "www", "10.0.0.3")
    o, _ = change(o, cfg, "weight", "www", "10.0.0.2", weight=9)
    o, _ = change(o, cfg, "disable", "www", "10.0.0.1")
    # the same config: everything holds
    kept, dropped = ov.settle(o, cfg.virtual_services)
    assert kept == o and dropped == []
    # the config now lists the added server, changes the weight of the reweighted one, and
    # leaves the disabled one alone
    new = vss("[10.0.0.1, {address: 10.0.0.2, weight: 4}, 10.0.0.3]", "[10.0.0.1, 10.0.0.2, 10.0.0.3]")
    kept, dropped = ov.settle(o, new.virtual_services)
    assert list(kept) == [("www", "10.0.0.1:80")]
    why = {d.address: r for d, r in dropped}
    assert why["10.0.0.3:80"].startswith("satisfied")
    assert why["10.0.0.2:80"] == "the config changed this real server (weight 3 -> 4): the config wins"
    # a config without the virtual service drops them all
    other = parse_config("hostgroups: {web: [a]}\nwatch: {web: {http: {monitor: x}}}\n", "t.yaml")
    kept, dropped = ov.settle(o, other.virtual_services)
    assert kept == {} and len(dropped) == 3


def test_saved_form_round_trips() -> None:
    cfg = vss()
    o, _ = change({}, cfg, "add", "www", "10.0.0.3", weight=2, forwarding="nat")
    o, _ = change(o, cfg, "weight", "www", "10.0.0.2", weight=9)
    back = {k: ov.PoolOverride.from_json(v.to_json()) for k, v in o.items()}
    assert back == o


@pytest.mark.parametrize("line,ok,report", [
    ("50%\n", True, AgentReport(0.5, None)),
    ("75%,ready", True, AgentReport(0.75, "ready")),
    ("DRAIN", True, AgentReport(None, "drain")),
    ("down#maintenance window", False, AgentReport(None, "down")),
    ("maint 20%", False, AgentReport(0.2, "down")),
    ("up maxconn:30", True, AgentReport(None, "ready")),
    ("", True, None),
    ("300%", True, None),  # beyond HAProxy's 256 %: ignored
])
def test_agent_reply(line, ok, report) -> None:
    got_ok, summary, got = parse_reply(line)
    assert (got_ok, got) == (ok, report)
    if line.startswith("down#"):
        assert summary == "agent: maintenance window"


def test_agent_params_validated_like_the_other_probes() -> None:
    from pymon.probes import validate_params

    assert validate_params("agent", {"port": 5555, "send": "www\n", "timeout": 2}) == []
    assert validate_params("agent", {"prot": 5}) == ["port: required (the agent's TCP port)", "unknown param: prot"]
    assert validate_params("agent", {"port": 70000}) == ["port: not a TCP/UDP port: 70000"]
