"""Log lines under journald: the sd-daemon `<N>` priority prefix from the structlog level."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest
import structlog

from pymon import logs


@pytest.fixture(autouse=True)
def _restore_structlog() -> object:
    """`logs.setup` configures structlog for the process: these tests point it at streams
    they close, so the configuration before each test comes back after it."""
    saved = structlog.get_config()
    yield
    structlog.configure(**saved)


def _journal_like(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[socket.socket, socket.socket]:
    """A stream socket standing in for journald's, named by JOURNAL_STREAM as systemd does."""
    a, b = socket.socketpair()
    st = os.fstat(a.fileno())
    monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
    return a, b


def _lines(b: socket.socket) -> list[str]:
    b.settimeout(2)
    data = b""
    while not data.endswith(b"\n") or data.count(b"\n") < 6:
        data += b.recv(65536)
    return data.decode().splitlines()


def test_levels_become_syslog_priorities_on_the_journal_stream(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    a, b = _journal_like(tmp_path, monkeypatch)
    with a, b, a.makefile("w", buffering=1) as stream:
        log = logs.setup("json", "debug", stream)
        log.debug("d")
        log.info("i")
        log.warning("w")
        log.error("e")
        log.critical("c")
        try:
            raise ValueError("x")
        except ValueError:
            log.exception("x")
        lines = _lines(b)
    prios = [(line[:3], json.loads(line[3:])["event"]) for line in lines]
    assert prios == [("<7>", "d"), ("<6>", "i"), ("<4>", "w"), ("<3>", "e"), ("<2>", "c"), ("<3>", "x")]


def test_no_prefix_when_stdout_is_not_the_journal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """JOURNAL_STREAM is inherited: a child whose stdout is a file or pipe writes plain JSON."""
    a, b = _journal_like(tmp_path, monkeypatch)
    out = tmp_path / "out.log"
    with a, b, out.open("w", buffering=1) as stream:
        logs.setup("json", "info", stream).warning("w")
    assert json.loads(out.read_text())["event"] == "w"
    monkeypatch.delenv("JOURNAL_STREAM")
    with out.open("w", buffering=1) as stream:
        logs.setup("json", "info", stream).warning("w")
    assert out.read_text().startswith("{")


def test_check_done_is_debug(tmp_path: Path) -> None:
    """At the default level a steady service writes no per-check line (state changes stay info)."""
    import subprocess
    import sys
    import time
    cfg = tmp_path / "p.yaml"
    cfg.write_text(f"""
globals: {{statedir: {tmp_path}, mondir: [], alertdir: []}}
hostgroups: {{g: [127.0.0.1]}}
watch:
  g:
    s: {{interval: 1s, monitor: {{name: tcp, port: 1}}, fall: 1}}
""")
    proc = subprocess.Popen([sys.executable, "-m", "pymon", "run", "-c", str(cfg)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(4)
    proc.terminate()
    out, err = proc.communicate(timeout=20)
    events = [json.loads(line)["event"] for line in out.splitlines()]
    assert "host.state" in events and "service.state" in events, (out, err)
    assert "check.done" not in events, out
