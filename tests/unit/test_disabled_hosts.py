"""A service with a disabled host is checked without it, through one trimmed spec for as
long as the same hosts are disabled: the probes' per-service caches go by the spec's
targets, and a spec per check made them grow by an entry per check."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace

import structlog

from pymon.loader import load_all
from pymon.ops.control import Control
from pymon.probes.http import lean


def _control(tmp_path: Path) -> tuple[Control, object]:
    cfg_file = tmp_path / "pymon.yaml"
    cfg_file.write_text(f"""globals: {{mondir: {tmp_path}, alertdir: {tmp_path}, statedir: {tmp_path}}}
hostgroups: {{web: [127.0.0.1, 127.0.0.2, 127.0.0.3]}}
watch:
  web: {{http: {{monitor: {{name: http, port: 80}}, interval: 5s, periods: [{{alert: [log], alertevery: 1h}}]}}}}
""")
    cfg, _ = load_all(str(cfg_file))
    log = structlog.get_logger()
    return Control(SimpleNamespace(cfg=cfg, log=log)), cfg  # type: ignore[arg-type]


def test_one_trimmed_spec_while_the_same_hosts_are_disabled(tmp_path: Path) -> None:
    control, cfg = _control(tmp_path)
    svc = cfg.services[("web", "http")]
    assert control.to_run(svc) is svc

    control.state.disable("host", "127.0.0.2", "maintenance", 0.0, None)
    first = control.to_run(svc)
    assert first is not None and cfg.hosts(first) == ["127.0.0.1", "127.0.0.3"]
    assert control.to_run(svc) is first  # the next check: the same spec, the same targets

    async def checks() -> None:  # the lean http path's start, as the engine calls it per check
        for _ in range(100):
            spec = control.to_run(svc)
            assert spec is not None
            cancel = lean.start(spec.targets(cfg.hosts(spec)), spec.probe_params, lambda results: None)  # type: ignore[attr-defined]
            assert cancel is not None
            cancel()

    plans = len(lean._PLANS)
    asyncio.run(checks())
    assert len(lean._PLANS) <= plans + 1  # one plan for the trimmed service, not one per check

    control.state.disable("host", "127.0.0.3", "maintenance", 0.0, None)
    second = control.to_run(svc)
    assert second is not first and cfg.hosts(second) == ["127.0.0.1"]  # type: ignore[arg-type]

    control.state.enable("host", "127.0.0.2")
    control.state.enable("host", "127.0.0.3")
    assert control.to_run(svc) is svc

    control.state.disable("host", "127.0.0.1", "x", 0.0, None)
    control.state.disable("host", "127.0.0.2", "x", 0.0, None)
    control.state.disable("host", "127.0.0.3", "x", 0.0, None)
    assert control.to_run(svc) is None  # nothing left to probe
