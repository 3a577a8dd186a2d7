"""Hostile input: the YAML config loader, the mon.cf importer, the period parser and the
control API are fuzzed (hypothesis; schemathesis against the daemon's own OpenAPI
description). No traceback escapes; every rejection is a clear one-line error with a
location. Shell metacharacters in hostnames and alert arguments reach exec'd scripts
literally; world-writable plugins are refused; the API refuses calls without the token.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from apiclient import call, wait_socket
from daemons import Daemon, setup

from pymon.mon import moncf
from pymon.model.config import ConfigError, parse_config
from pymon.model.period import PeriodError, parse_period

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def clear(problems: list[str], file: str, text: str) -> None:
    """Every problem: a non-empty single line that starts with the file's name, and no
    traceback (unless the input says "Traceback": a problem may quote the input)."""
    assert problems, "a rejection with no reason"
    for p in problems:
        assert isinstance(p, str) and p.startswith(f"{file}:") and "\n" not in p and len(p) < 2000, p
        assert "Traceback" not in p or "Traceback" in text, p


# -- the YAML config ---------------------------------------------------------------------

KEYS = ["globals", "hostgroups", "watch", "virtual_services", "ipvs", "mondir", "alertdir", "statedir",
        "maxprocs", "randstart", "alert_timeout", "interval", "timeout", "monitor", "periods", "alert",
        "upalert", "period", "alertevery", "alertafter", "numalerts", "fall", "rise", "depend", "name",
        "port", "path", "status", "vip", "real_servers", "watch", "exclude_period", "exclude_hosts",
        "failure_interval", "randskew", "traptimeout", "env", "g", "s", "web", "http"]
SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(allow_nan=True),
    st.sampled_from(["", "10s", "1h30m", "-1", "0", "wd {Mon-Fri}", "hr {25am}", "http -p 80", "log",
                     "exit=2-3 log", "g:s", "10.0.0.1:80", "[::1]:80", "200-399", "nosuch", "$(id)",
                     "a;b", "../../etc/passwd", "\x00", "é", "~", "{", "*", "&a", "!!int x"]),
    st.text(max_size=12),
)
DOCS = st.recursive(
    SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.dictionaries(st.one_of(st.sampled_from(KEYS), st.text(max_size=6)), inner, max_size=5)),
    max_leaves=25,
)


def _loads(text: str) -> None:
    try:
        parse_config(text, "fuzz.yaml")
    except ConfigError as e:
        clear(e.problems, "fuzz.yaml", text)


@FUZZ
@given(DOCS)
def test_config_loader_structured(doc: Any) -> None:
    try:
        text = yaml.safe_dump(doc, allow_unicode=True)
    except yaml.YAMLError:
        return
    _loads(text)


@FUZZ
@given(st.one_of(st.text(max_size=300),
                 st.lists(st.sampled_from(["watch:", "  g:", "    s:", "      monitor: http", "hostgroups: {g: [a]}",
                                           "      periods: [{alert: [log]}]", "- ", "  - ", "&a", "*a", "!!int",
                                           "? ", ": ", "|", ">", "{", "[", "'", '"', "#", "\t", "%YAML 1.1",
                                           "---", "...", "!!binary", "!!timestamp 2001-13-45", "\\x00"]),
                          max_size=25).map("\n".join)))
def test_config_loader_text(text: str) -> None:
    _loads(text)


# -- mon.cf -------------------------------------------------------------------------------

CF_WORDS = ["hostgroup", "watch", "service", "interval", "monitor", "period", "alert", "upalert", "alertevery",
            "alertafter", "numalerts", "description", "depend", "exclude_hosts", "exclude_period", "traptimeout",
            "startupalert", "dep_behavior", "maxprocs", "randstart", "mondir", "alertdir", "basedir", "randskew",
            "no_comp_alerts", "failure_interval", "alertexitrange", "exit=2-3", "lvs.alert", "-P", "-V", "-R",
            "http.monitor", "tcp.monitor", "fping.monitor", "mail.alert", "wd", "{Mon-Fri}", "hr", "{9am-5pm}",
            "1m", "10s", "0", "-1", "strict", "summary", "g", "s", "h1", "h2", "a:", "VAR=x", "SELF:s", "&&", "||",
            "\\", "#", "=", "\t", "", "dnl", "define(", "`x'", ";;", "$(id)", "é"]
CF_LINES = st.lists(st.sampled_from(CF_WORDS), max_size=6).map(" ".join)
CF_TEXT = st.lists(st.one_of(CF_LINES, st.sampled_from(["", "    ", "\t"]), st.text(max_size=20)),
                   max_size=20).map("\n".join)


@FUZZ
@given(CF_TEXT)
def test_moncf_importer(text: str) -> None:
    try:
        cfg = moncf.load(text, "fuzz.cf")
    except ConfigError as e:
        clear(e.problems, "fuzz.cf", text)
        return
    assert cfg is not None
    conv = moncf.import_text(text, "fuzz.cf")  # what `pymon import-mon` writes parses back
    out, _ = moncf.to_yaml(conv)
    parse_config(out, "out.yaml")


# -- periods --------------------------------------------------------------------------------

P_WORDS = ["wd", "hr", "min", "sec", "yd", "mo", "yr", "wk", "md", "weekday", "hour", "{", "}", "-", ",", " ",
           "Mon", "Fry", "Sun-Sat", "9am", "5pm", "12am", "25", "0", "59", "60", "-1", "Jan", "Dec", "1970",
           "2038", "9999", "1-31", "{1-5}", "am", "pm", "a", "x", "é", "\\", "{}", "{{", "}}"]


@FUZZ
@given(st.one_of(st.lists(st.sampled_from(P_WORDS), max_size=12).map("".join), st.text(max_size=40)),
       st.integers(0, 2**33))
def test_period_parser(spec: str, t: int) -> None:
    try:
        p = parse_period(spec)
    except PeriodError as e:
        msg = str(e)
        assert msg and "\n" not in msg and "Traceback" not in msg, msg
        return
    assert isinstance(p.contains(float(t)), bool)


# -- the control API: schemathesis against a real daemon ----------------------------------------


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(shutil.which("st") is None and shutil.which("schemathesis") is None,
                    reason="schemathesis is not installed (pip install schemathesis)")
def test_control_api_fuzzed_with_schemathesis(tmp_path: Path) -> None:
    port = _free_port()
    cfg = setup(tmp_path, f"""  g:
    s:
      interval: 0.5s
      monitor: {{name: rec, dir: "{tmp_path}"}}
      periods: [{{alert: [log], upalert: [log]}}]
    p:
      traptimeout: 30s
      periods: [{{alert: [log]}}]
virtual_services:
  - {{vip: "192.0.2.1:80", watch: "g:s", real_servers: [127.0.0.1, 127.0.0.2]}}
ipvs: {{dry_run: true}}
""", groups="g: [127.0.0.1, 127.0.0.2]", glob=f", control_port: {port}")
    d = Daemon(cfg)
    try:
        sock = tmp_path / "pymon.sock"
        wait_socket(sock)
        token = (tmp_path / "token").read_text().strip()
        code, schema = call(sock, "GET", "/openapi.json", token)
        assert code == 200
        # over TCP, no token or a wrong one: every path but /health (and the page's login and
        # its redirect to it) is refused (on the socket root needs none: test_socket_access.py)
        for path, ops in schema["paths"].items():
            concrete = path.replace("{group}", "g").replace("{service}", "s").replace("{host}", "127.0.0.1")
            for method in ops:
                if path in ("/health", "/login"):
                    continue
                for tok in (None, "wrong", token + "x", ""):
                    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
                    conn.request(method.upper(), concrete, headers={"Authorization": f"Bearer {tok}"} if tok else {})
                    status = conn.getresponse().status
                    conn.close()
                    assert status == (303 if path == "/" else 401), (method, path, tok, status)
        (tmp_path / "schema.json").write_text(json.dumps(schema))
        exe = shutil.which("st") or shutil.which("schemathesis")
        r = subprocess.run([exe, "run", str(tmp_path / "schema.json"), "--url", f"http://127.0.0.1:{port}",
                            "-H", f"Authorization: Bearer {token}", "--checks", "not_a_server_error",
                            "--max-examples", "5", "--seed", "1", "--request-timeout", "20",
                            "--max-time", "20", "--no-color"],
                           capture_output=True, text=True, timeout=180, cwd=tmp_path)
        assert r.returncode == 0, r.stdout[-4000:]
        assert d.proc.poll() is None, "the daemon died under the fuzzer"
        # it still works, and said nothing but JSON lines: bad requests are one line each
        d.wait(lambda e: e["event"] == "check.done")
        assert call(sock, "GET", "/status", token)[0] == 200
    finally:
        if d.proc.poll() is None:
            d.stop()
    err = d.proc.stderr.read()  # type: ignore[union-attr]
    assert "Traceback" not in err, err[-3000:]
    bad = [e for e in d.events if e["event"] == "api.bad_request"]
    assert all("\n" not in json.dumps(e) for e in bad)


# -- shell metacharacters reach alert scripts literally -------------------------------------------

ARGV_ALERT = """#!/usr/bin/env python3
import json, os, sys
with open(os.environ["OUT"], "a") as f:
    f.write(json.dumps({"argv": sys.argv[1:], "stdin": sys.stdin.read(),
                        "group": os.environ.get("MON_GROUP")}) + "\\n")
"""
NASTY_HOSTS = ["h1;touch PWNED1", "$(touch PWNED2)", "`touch PWNED3`", "h4|tee PWNED4", "h5&&touch PWNED5",
               "h6>PWNED6", "'\"*?~!#"]
NASTY_ARG = "--msg=$(touch PWNED7); rm -rf / && `id` | cat > PWNED8 'q' \"d\" \\n * ~ $HOME"


def test_shell_metacharacters_reach_alert_scripts_literally(tmp_path: Path) -> None:
    alertdir = tmp_path / "alerts"
    alertdir.mkdir()
    (alertdir / "argv.alert").write_text(ARGV_ALERT)
    (alertdir / "argv.alert").chmod(0o755)
    out = tmp_path / "argv.out"
    cfg = setup(tmp_path, f"""  g:
    s:
      interval: 0.3s
      env: {{OUT: "{out}"}}
      monitor: {{name: rec, dir: "{tmp_path}"}}
      periods: [{{alertevery: 1h, alert: [[argv.alert, {json.dumps(NASTY_ARG)}, "two words"]]}}]
""", groups="g: " + json.dumps(NASTY_HOSTS))
    cfg.write_text(cfg.read_text().replace(f"alertdir: {tmp_path}", f"alertdir: {alertdir}"))
    (tmp_path / f"down-{NASTY_HOSTS[0]}").touch()
    d = Daemon(cfg)
    try:
        end = time.monotonic() + 15
        while not (out.exists() and out.read_text()):
            assert time.monotonic() < end and d.proc.poll() is None
            time.sleep(0.05)
    finally:
        d.stop()
    rec = json.loads(out.read_text().splitlines()[0])
    argv = rec["argv"]
    assert argv[:4] == ["-s", "s", "-g", "g"] and argv[4] == "-h"
    assert argv[5] == " ".join(NASTY_HOSTS)  # mon's -h: every host, space-separated, as given
    assert argv[6] == "-t" and argv[7].isdigit()
    assert argv[8:] == [NASTY_ARG, "two words"]
    assert rec["stdin"].splitlines()[0] == NASTY_HOSTS[0]  # the failing host, as the summary
    # nothing was run by a shell: no PWNED file anywhere we could have been
    for where in (tmp_path, alertdir, Path.cwd(), Path("/")):
        assert not list(where.glob("PWNED*")), where


# -- world-writable plugins ----------------------------------------------------------------------


@pytest.mark.parametrize("what", ["dir", "py", "script"])
def test_world_writable_plugins_are_refused(tmp_path: Path, what: str) -> None:
    cfg = setup(tmp_path, "  g:\n    s: {monitor: rec}\n")
    mondir = tmp_path / "monitors"
    if what == "dir":
        mondir.chmod(0o777)
        victim = mondir
    elif what == "py":
        victim = mondir / "rec.py"
        victim.chmod(0o666)
    else:
        victim = mondir / "http.monitor"  # would otherwise fall back to the native http probe
        victim.write_text("#!/bin/sh\necho ok\n")
        victim.chmod(0o777)
        cfg.write_text(cfg.read_text().replace("{monitor: rec}", "{monitor: http.monitor -p 80}"))
    r = subprocess.run([sys.executable, "-m", "pymon", "check-config", "-c", str(cfg)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    lines = [ln for ln in r.stderr.splitlines() if "world-writable" in ln]
    assert len(lines) == 1 and lines[0].startswith(f"{victim}:0: ") and "chmod o-w" in lines[0], r.stderr
    # the same refusal when it appears under a running daemon: SIGHUP keeps the old config
    os.chmod(victim, 0o755)
    d = Daemon(cfg)
    try:
        d.wait(lambda e: e["event"] == "daemon.started")
        os.chmod(victim, 0o777 if victim.is_dir() or victim.suffix != ".py" else 0o666)
        d.proc.send_signal(1)
        e = d.wait(lambda e: e["event"] == "config.invalid")
        assert any("world-writable" in p for p in e["problems"])
        assert d.proc.poll() is None
    finally:
        os.chmod(victim, 0o755)
        d.stop()
