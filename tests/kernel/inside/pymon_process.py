"""A pymon daemon under test inside the VM: `pymon run` as a child process (in a network
namespace if asked), its JSON log lines collected by a thread into `events`, its control
API over the unix socket in the statedir."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # tests/: apiclient
from apiclient import call  # noqa: E402

# the host's interpreter by absolute path: the guest's own python3 lacks our packages
PY = os.environ.get("PYMON_PYTHON", sys.executable)

Event = dict[str, Any]


class PymonProcess:
    """`pymon run -c cfg` (with `args`), in netns `ns` if given. The config's statedir is
    the directory it lives in (the control socket and token are looked for there). Events
    accumulate over restarts (start() after stop())."""

    def __init__(self, cfg: Path, ns: str | None = None, args: Sequence[str] = (), start: bool = True):
        self.cfg, self.ns, self.args = cfg, ns, tuple(args)
        self.dir = cfg.parent
        self.events: list[Event] = []
        self.proc: subprocess.Popen[str] | None = None
        if start:
            self.start()

    def start(self) -> None:
        cmd = [PY, "-m", "pymon", "run", "-c", str(self.cfg), *self.args]
        if self.ns:
            cmd = ["ip", "netns", "exec", self.ns, *cmd]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        threading.Thread(target=self._read, args=(self.proc,), daemon=True).start()

    def _read(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            try:
                self.events.append(json.loads(line))
            except ValueError:
                self.events.append({"event": "raw", "line": line})

    def wait_event(self, match: str | Callable[[Event], bool], timeout: float, since: int = 0,
                   step: float = 0.1) -> Event:
        """The first event from index `since` on that is named `match` (or that match(e)
        accepts); AssertionError if the daemon exits or none comes within `timeout`."""
        pred = match if callable(match) else (lambda e: e.get("event") == match)
        where = f" in {self.ns}" if self.ns else ""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            for e in self.events[since:]:
                if pred(e):
                    return e
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"pymon{where} exited {self.proc.returncode}: {self.events[-10:]}")
            time.sleep(step)
        what = f"no {match}" if isinstance(match, str) else "no such event"
        raise AssertionError(f"pymon{where}: {what} within {timeout}s: {self.events[-10:]}")

    def api(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """(status, decoded body) of a control API call with the daemon's token."""
        token = (self.dir / "token").read_text().strip()
        return call(self.dir / "pymon.sock", method, path, token=token, body=body, timeout=30)

    def stop(self, timeout: float = 120) -> None:
        """SIGTERM and wait; a daemon that has not exited within `timeout` is killed and
        fails the caller."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"pymon{' in ' + self.ns if self.ns else ''} did not stop within "
                                 f"{timeout}s of SIGTERM: {self.events[-10:]}") from None
