"""A daemon as the tests start it: `python -m pymon run` in a subprocess, its JSON log
read as events; a config with the recording drop-in probe `rec`."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any


# A drop-in probe: records each start time per host, and behaves as the host name says.
PROBE = '''
import asyncio, time, os
from pymon.plugin import monitor, Result

@monitor("rec")
async def rec(target, params):
    with open(os.path.join(params["dir"], "starts"), "a") as f:
        f.write(f"{target.service} {target.host} {time.time():.4f}\\n")
    if target.host.startswith("slow"):
        await asyncio.sleep(float(params.get("sleep", 5)))
    if target.host.startswith("raise"):
        raise RuntimeError("kaboom")
    flag = os.path.join(params["dir"], "down-" + target.host)
    if os.path.exists(flag):
        return Result(False, "flagged down")
    return Result(True, "fine")
'''


class Daemon:
    def __init__(self, cfg: Path):
        self.proc = subprocess.Popen([sys.executable, "-m", "pymon", "run", "-c", str(cfg), "--log-level", "debug"],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.events: list[dict[str, Any]] = []
        self.raw: list[str] = []
        self._t = threading.Thread(target=self._read, daemon=True)
        self._t.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.raw.append(line)
            self.events.append(json.loads(line))  # every stdout line must be JSON

    def wait(self, pred, timeout: float = 15) -> dict[str, Any]:  # type: ignore[no-untyped-def]
        end = time.monotonic() + timeout
        seen = 0
        while time.monotonic() < end:
            for e in self.events[seen:]:
                if pred(e):
                    return e
            seen = len(self.events)
            time.sleep(0.05)
        raise AssertionError(f"no matching event in {timeout}s; got {[e['event'] for e in self.events][-30:]}")

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        rc = self.proc.wait(timeout=30)
        self._t.join(5)
        return rc


def setup(tmp: Path, watch: str, groups: str = "g: [h1, h2]", glob: str = "") -> Path:
    mondir = tmp / "monitors"
    mondir.mkdir(exist_ok=True)
    (mondir / "rec.py").write_text(PROBE)
    cfg = tmp / "pymon.yaml"
    cfg.write_text(f"globals: {{mondir: {mondir}, alertdir: {tmp}, statedir: {tmp}{glob}}}\n"
                   f"hostgroups: {{{groups}}}\nwatch:\n{watch}")
    return cfg


def starts(tmp: Path, service: str) -> list[float]:
    f = tmp / "starts"
    if not f.exists():
        return []
    return [float(t) for s, _, t in (ln.split() for ln in f.read_text().splitlines()) if s == service]
