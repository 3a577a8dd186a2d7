"""A daemon that cannot keep up: a drop-in probe blocks the event loop for longer than
another service's interval, and that service's checks slip instead of piling up. Its
checks of a real HTTP server on loopback that could not start within their interval
are skipped to their next slot: counted in /metrics, said in one rate-limited
`scheduler.behind` line, and no check starts an interval late or more."""

from __future__ import annotations

import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from apiclient import call, wait_socket
from daemons import Daemon, setup

BLOCKER = '''
import time
from pymon.plugin import monitor, Result

@monitor("block")
async def block(target, params):
    time.sleep(float(params["seconds"]))  # blocking on purpose: no check can start meanwhile
    return Result(True, "blocked the loop")
'''


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        self.server.times.append(time.monotonic())  # type: ignore[attr-defined]
        self.send_response(200)
        self.send_header("Content-Length", "3")
        self.end_headers()
        self.wfile.write(b"ok\n")

    def log_message(self, *args: object) -> None:
        pass


def test_checks_slip_counted_and_logged_once(tmp_path: Path, daemons: list[Daemon]) -> None:
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.times = []  # type: ignore[attr-defined]
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        watch = f"""  web:
    http:
      interval: 0.7s
      timeout: 1s
      monitor: {{name: http, port: {srv.server_address[1]}, path: /}}
  jam:
    block:
      interval: 3s
      timeout: 5s
      monitor: {{name: block, seconds: 2}}
"""
        cfg = setup(tmp_path, watch, groups="web: [127.0.0.1], jam: [127.0.0.1]", glob=", randstart: 0s")
        (tmp_path / "monitors" / "block.py").write_text(BLOCKER)
        d = Daemon(cfg)
        daemons.append(d)
        wait_socket(tmp_path / "pymon.sock")
        # stalls of 2 s, each longer than the http service's 0.7 s interval
        def blocks() -> int:
            return len([e for e in d.events if e["event"] == "check.done" and e["service"] == "block"])

        d.wait(lambda e: blocks() >= 3, timeout=20)  # three stalls of 2 s, 3 s apart
        d.wait(lambda e: e["event"] == "check.done" and e["service"] == "http" and blocks() >= 3, timeout=10)
        code, text = call(tmp_path / "pymon.sock", "GET", "/metrics")
        assert code == 200
        late = float(re.search(r'^pymon_checks_skipped_total\{reason="late"\} (\S+)', text, re.M)[1])
        assert re.search(r'^pymon_checks_skipped_total\{reason="running"\} ', text, re.M)
        assert "pymon_scheduler_behind_seconds " in text
        assert d.stop() == 0
    finally:
        srv.shutdown()
        srv.server_close()
    lines = [e for e in d.events if e["event"] == "scheduler.behind"]
    # the stalls skipped the http checks due in them (3 slots of 0.7 s in a 2 s stall at least once);
    # one line said so (at most one per 10 s)
    assert late >= 3 and len(lines) == 1, (late, lines)
    assert lines[0]["level"] == "warning" and lines[0]["skipped"] >= 1 and lines[0]["late_s"] >= 0.7
    # no check started an interval late or more: the late ones were skipped, not run late
    lags = [e["lag_s"] for e in d.events if e["event"] == "check.done" and e["service"] == "http"]
    assert lags and max(lags) < 0.7, lags
    # the checks that ran between the stalls reached the real server and passed (one in flight
    # through a stall may time out: its request went out after it)
    done = [e for e in d.events if e["event"] == "check.done" and e["service"] == "http" and e["duration_s"] < 1]
    assert len(srv.times) >= 3 and len(done) >= 2 and all(e["ok"] for e in done)  # type: ignore[attr-defined]
