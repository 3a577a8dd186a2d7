"""The loop-block watchdog: a plugin that blocks the event loop is named in a
`loop.blocked` warning, in-process and through the real daemon, which keeps checking."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from pymon.engine import watchdog
from pymon.engine.watchdog import Running, Watchdog, labelled


class Log:
    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []

    def warning(self, event: str, **kw: Any) -> None:
        self.events.append((event, kw))


async def test_labelled_is_transparent_for_values_errors_and_cancellation() -> None:
    r = Running("monitor", "p", "g", "s")
    seen: list[Running | None] = []

    async def ok() -> int:
        seen.append(watchdog.CURRENT[0])
        await asyncio.sleep(0)
        seen.append(watchdog.CURRENT[0])
        return 42

    assert await labelled(ok(), r) == 42
    assert seen == [r, r] and watchdog.CURRENT[0] is None

    async def boom() -> None:
        await asyncio.sleep(0)
        raise ValueError("x")

    with pytest.raises(ValueError):
        await labelled(boom(), r)

    cleaned = asyncio.Event()

    async def hang() -> None:
        try:
            await asyncio.sleep(10)
        finally:
            cleaned.set()

    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(labelled(hang(), r), 0.05)
    assert cleaned.is_set() and watchdog.CURRENT[0] is None


async def _blocks() -> list[tuple[str, dict[str, Any]]]:
    log = Log()
    wd = Watchdog(log, bound=0.3)
    wd.start()
    try:
        async def sleeper(target: object, params: object) -> None:
            await asyncio.sleep(0.05)
            time.sleep(0.5)  # blocks the loop

        await labelled(sleeper(None, None), Running("monitor", "sleeper", "web", "http"))
        await asyncio.sleep(0.2)
        time.sleep(0.45)  # our own code, not a plugin
        await asyncio.sleep(0.2)
        time.sleep(0.1)  # below the bound: nothing
        await asyncio.sleep(0.3)
    finally:
        wd.stop()
    return log.events


def _assert_named(events: list[tuple[str, dict[str, Any]]], low: float) -> None:
    assert [e for e, _ in events] == ["loop.blocked", "loop.blocked"], events
    first, second = events[0][1], events[1][1]
    assert first["plugin"] == "sleeper" and first["kind"] == "monitor"
    assert (first["group"], first["service"]) == ("web", "http")
    assert low <= first["blocked_s"] <= 0.6 and first["bound_s"] == 0.3
    assert "sleeper" in first["where"]
    assert "plugin" not in second
    assert second["where"].startswith(__file__) and "_blocks" in second["where"]


async def test_a_blocking_plugin_is_named_and_unlabelled_code_is_located() -> None:
    _assert_named(await _blocks(), 0.5)  # the loop's own pass: the whole block


def test_on_uvloop_the_heartbeat_names_them_too() -> None:
    """uvloop has no selector to time: a heartbeat every quarter bound measures the
    block to within one beat."""
    uvloop = pytest.importorskip("uvloop", reason="uvloop is in the test extra; not installed here")
    _assert_named(uvloop.run(_blocks()), 0.5 - 0.3 / 4 - 0.02)


async def test_a_long_stall_is_reported_while_it_lasts() -> None:
    log = Log()
    wd = Watchdog(log, bound=0.2, stall_after=0.4)
    wd.start()
    try:
        await asyncio.sleep(0.1)
        stalled_at: list[float] = []
        start = time.monotonic()

        def watch() -> None:
            while not any(e == "loop.stalled" for e, _ in log.events) and time.monotonic() - start < 2:
                time.sleep(0.01)
            stalled_at.append(time.monotonic() - start)

        t = threading.Thread(target=watch)
        t.start()
        time.sleep(0.8)
        t.join()
        await asyncio.sleep(0.2)
    finally:
        wd.stop()
    assert [e for e, _ in log.events] == ["loop.stalled", "loop.blocked"]
    assert stalled_at[0] < 0.75  # logged from the thread, before the loop was free again


SLEEPER = '''
import time
from pymon.plugin import monitor, Result

@monitor("sleepy")
async def sleepy(target, params):
    time.sleep(1.5)  # a synchronous call: the whole loop stops
    return Result(True, "slept")
'''


SLEEPER_CALLBACK = '''
import time
from pymon.plugin import monitor, Result

def start(targets, params, done):
    time.sleep(1.5)  # blocking inside the callback form (`@monitor(start=...)`)
    done([Result(True, "slept")] * len(targets))

async def sleepy(target, params):
    return Result(True, "slept")

monitor("sleepy", start=start)(sleepy)
'''


@pytest.mark.parametrize("plugin", [SLEEPER, SLEEPER_CALLBACK], ids=["awaited", "callback"])
def test_daemon_names_the_blocking_probe_and_keeps_checking(tmp_path: Path, plugin: str) -> None:
    mondir = tmp_path / "monitors"
    mondir.mkdir()
    (mondir / "sleepy.py").write_text(plugin)
    cfg = tmp_path / "pymon.yaml"
    cfg.write_text(f"""globals: {{mondir: {mondir}, alertdir: {tmp_path}, statedir: {tmp_path}}}
hostgroups: {{g: [127.0.0.1]}}
watch:
  g:
    slow:
      interval: 3s
      timeout: 5s
      monitor: sleepy
    fast:
      interval: 0.2s
      monitor: {{name: freespace, argv: ["/:1KB"]}}
""")
    proc = subprocess.Popen([sys.executable, "-m", "pymon", "run", "-c", str(cfg), "--log-level", "debug"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    events: list[dict[str, Any]] = []
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 20
        blocked_at = None
        for line in proc.stdout:
            events.append(json.loads(line))
            if events[-1]["event"] == "loop.blocked" and blocked_at is None:
                blocked_at = len(events)
            fast_after = [e for e in events[blocked_at or len(events):]
                          if e["event"] == "check.done" and e["service"] == "fast"]
            if len(fast_after) >= 3 or time.monotonic() > deadline:
                break
    finally:
        proc.terminate()
        proc.wait(10)
    blocked = [e for e in events if e["event"] == "loop.blocked"]
    assert blocked, [e["event"] for e in events]
    b = blocked[0]
    assert b["level"] == "warning" and b["plugin"] == "sleepy" and b["kind"] == "monitor"
    # the loop's pass that held the block: the block and the little work around it
    assert (b["group"], b["service"]) == ("g", "slow") and 1.5 <= b["blocked_s"] <= 1.7
    assert str(mondir / "sleepy.py") in b["where"]
    fast_after = [e for e in events[events.index(b):] if e["event"] == "check.done" and e["service"] == "fast"]
    # A check that was due during the block may time out (its timer could not fire in
    # time: the cost the warning is about); the ones after it run normally.
    assert len(fast_after) >= 3 and fast_after[-1]["ok"] and fast_after[-2]["ok"]
