"""The control API and the CLI on it, against a real daemon: auth (401), methods (405),
the socket's mode, status with IPVS (dry run), disable/enable/expiry, ack, test-now,
reload, traps and traptimeout, metrics, OpenAPI, the TCP listener's cookie login."""

from __future__ import annotations

import http.client
import json
import os
import re
import socket
import stat
import subprocess
import sys
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from apiclient import A, B, Running, call
from daemons import Daemon, setup

def test_auth_methods_and_socket_mode(pymon: Running) -> None:
    st = os.stat(pymon.sock)
    assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o660
    code, health = pymon.call("GET", "/health", token=None)
    assert code == 200 and health["status"] == "ok" and isinstance(health["ready"], bool)
    for method, path in (("GET", "/status"), ("GET", "/metrics"), ("POST", "/reload"), ("GET", "/openapi.json"),
                         ("POST", "/disable/host/127.0.0.1"), ("GET", "/nosuch")):
        for token in (None, "wrong"):  # over TCP the token is always needed
            tcp = http.client.HTTPConnection("127.0.0.1", pymon.port, timeout=10)
            tcp.request(method, path, headers={"Authorization": f"Bearer {token}"} if token else {})
            assert tcp.getresponse().status == 401, (method, path, token)
            tcp.close()
    # on the socket root is known by its credentials (test_socket_access.py: other users)
    assert pymon.call("GET", "/status", token=None)[0] == 200
    assert pymon.call("GET", "/status", token="wrong")[0] == 200
    assert pymon.call("GET", "/reload")[0] == 405
    assert pymon.call("DELETE", "/status")[0] == 405
    assert pymon.call("POST", "/status")[0] == 405
    assert pymon.call("GET", "/disable/host/127.0.0.1")[0] == 405
    assert pymon.call("GET", "/nosuch")[0] == 404
    assert pymon.call("GET", "/")[0] == 404  # the page is only on the TCP listener


def test_status_ipvs_disable_enable_and_expiry(pymon: Running) -> None:
    pymon.d.wait(lambda e: e["event"] == "daemon.ready")
    s = pymon.svc("s")
    assert s["status"] == "ok" and [h["state"] for h in s["hosts"]] == ["up", "up"]
    code, st = pymon.call("GET", "/status")
    vs = st["ipvs"]["services"][0]
    assert st["ipvs"]["dry_run"] and vs["virtual_service"] == "TCP 10.9.9.9:80"
    assert {d["real_server"]: d["wanted_weight"] for d in vs["real_servers"]} == {f"{A}:80": 1, f"{B}:80": 1}

    code, r = pymon.call("POST", f"/disable/host/{B}", {"reason": "maintenance", "for": 1.5})
    assert code == 200 and r["disabled"]["reason"] == "maintenance" and "uid" in r["disabled"]["by"]
    disabled = pymon.d.wait(lambda e: e["event"] == "control.disabled" and e["name"] == B)
    time.sleep(0.5)
    s = pymon.svc("s")
    assert [h["state"] for h in s["hosts"]] == ["up", "disabled"] and s["status"] == "ok"
    code, st = pymon.call("GET", "/status")
    weights = {d["real_server"]: d["wanted_weight"] for d in st["ipvs"]["services"][0]["real_servers"]}
    assert weights == {f"{A}:80": 1, f"{B}:80": 0}  # drained (quiescent: weight 0)
    # the expiry re-enables it by itself
    e = pymon.d.wait(lambda e: e["event"] == "control.enabled" and e.get("reason") == "disable expired", timeout=5)
    assert e["name"] == B
    late = datetime.fromisoformat(e["timestamp"]) - datetime.fromisoformat(disabled["timestamp"])
    assert 1.5 <= late.total_seconds() < 1.5 + 2.0  # on time, or after a save under way: not a minute late
    time.sleep(0.5)
    assert [h["state"] for h in pymon.svc("s")["hosts"]] == ["up", "up"]

    assert pymon.call("POST", "/disable/host/nosuch")[0] == 404
    assert pymon.call("POST", "/disable/host/x", {"for": "soon"})[0] in (400, 404)
    assert pymon.call("POST", f"/disable/host/{A}", {"for": "soon"})[0] == 400
    # a disabled service is still checked, its alerts are suppressed
    assert pymon.call("POST", "/disable/service/g/s", {"reason": "noisy"})[0] == 200
    (pymon.tmp / f"down-{A}").touch()
    e = pymon.d.wait(lambda e: e["event"] == "alert.suppressed")
    assert e["reason"] == "service disabled" and e["type"] == "alert"
    assert pymon.svc("s")["status"] == "fail"
    assert not [e for e in pymon.d.events if e["event"] == "alert.log" and e["service"] == "s"]
    assert pymon.call("POST", "/enable/service/g/s")[1]["was_disabled"] is True
    pymon.d.wait(lambda e: e["event"] == "alert.log" and e["service"] == "s" and e["type"] == "alert")
    code, r = pymon.call("POST", "/disable/watch/g", {})
    assert code == 200 and r["disabled"]["until"] is None
    code, dis = pymon.call("GET", "/disabled")
    assert list(dis["watch"]) == ["g"] and dis["host"] == {} and dis["service"] == {}


def test_ack_test_now_reload(pymon: Running) -> None:
    pymon.d.wait(lambda e: e["event"] == "daemon.ready")
    code, r = pymon.call("POST", "/ack/g/s", {"comment": "x"})
    assert code == 409 and "not failing" in r["error"]
    assert pymon.call("POST", "/ack/g/nosuch", {"comment": "x"})[0] == 404
    assert pymon.call("POST", "/ack/g/s", {})[0] == 400
    (pymon.tmp / f"down-{B}").touch()
    pymon.d.wait(lambda e: e["event"] == "alert.log" and e["service"] == "s")
    code, r = pymon.call("POST", "/ack/g/s", {"comment": "disk swap"})
    assert code == 200 and pymon.svc("s")["acked"] == "disk swap"
    (pymon.tmp / f"down-{B}").unlink()
    code, s = pymon.call("POST", "/test/g/s")
    assert code == 200 and s["status"] == "ok" and s["acked"] is None  # recovery ends the ack (mon)
    code, r = pymon.call("POST", "/reload")
    assert code == 200 and r == {"ok": True}
    cfg = pymon.tmp / "pymon.yaml"
    good = cfg.read_text()
    cfg.write_text(good + "\nnonsense: 1\n")
    code, r = pymon.call("POST", "/reload")
    assert code == 422 and r["ok"] is False
    cfg.write_text(good)


def test_a_service_removed_while_tested_is_a_404_not_a_hang(tmp_path: Path) -> None:
    """`pymon test` on a service whose check is running when a reload drops it: the
    caller hears at once that it is gone (the check was cancelled with the service)."""
    watch = f"""  g:
    s:
      interval: 60s
      monitor: {{name: rec, dir: "{tmp_path}"}}
  slow:
    t:
      interval: 60s
      timeout: 10s
      monitor: {{name: rec, dir: "{tmp_path}", sleep: 8}}
"""
    cfg = setup(tmp_path, watch, groups="g: [h1], slow: [slow1]")
    d = Daemon(cfg)
    try:
        r = Running(tmp_path, d, 0)
        got: list[tuple[int, Any]] = []
        t = threading.Thread(target=lambda: got.append(r.call("POST", "/test/slow/t")))
        began = time.monotonic()
        t.start()
        d.wait(lambda e: e["event"] == "check.done" and e["service"] == "s")
        time.sleep(0.5)  # the test's check of slow:t is running (8 s)
        cfg.write_text(cfg.read_text().split("  slow:\n    t:")[0])
        assert r.call("POST", "/reload") == (200, {"ok": True})
        t.join(15)
        assert got and got[0][0] == 404 and "removed by a reload" in got[0][1]["error"], got
        assert time.monotonic() - began < 6
    finally:
        d.proc.kill()
        d.proc.wait()


def test_traps_and_traptimeout(pymon: Running) -> None:
    # nothing pushed for longer than traptimeout: a failure, with an alert
    e = pymon.d.wait(lambda e: e["event"] == "alert.log" and e["service"] == "p", timeout=5)
    assert e["summary"] == f"{A} {B}" and "no trap for 1s" in e["detail"]
    code, r = pymon.call("POST", "/trap/g/p", {"status": "ok", "summary": "all good"})
    assert code == 200 and r["status"] == "ok"
    pymon.d.wait(lambda e: e["event"] == "alert.log" and e["service"] == "p" and e["type"] == "upalert")
    code, r = pymon.call("POST", "/trap/g/p", {"status": "fail", "summary": f"{B} is slow"})
    assert r == {"group": "g", "service": "p", "status": "fail", "failing": [B]}
    code, r = pymon.call("POST", "/trap/g/p", {"status": "fail", "summary": "bad", "hosts": [A]})
    assert r["failing"] == [A]
    assert pymon.call("POST", "/trap/g/p", {"status": "maybe"})[0] == 400
    assert pymon.call("POST", "/trap/g/p", {"status": "ok", "hosts": "x"})[0] == 400
    # a trap to a monitored service is one more result
    code, r = pymon.call("POST", "/trap/g/s", {"status": "fail", "summary": A})
    assert r["failing"] == [A]


def test_metrics_openapi_history(pymon: Running) -> None:
    pytest.importorskip("prometheus_client")
    (pymon.tmp / f"down-{B}").touch()
    pymon.d.wait(lambda e: e["event"] == "alert.log" and e["service"] == "s")
    time.sleep(0.3)
    code, text = pymon.call("GET", "/metrics")
    assert code == 200
    assert 'pymon_check_duration_seconds_bucket{group="g",le="0.005",service="s"}' in text
    # one duration per service check; one result per host checked (two hosts): the counts agree
    checks = float(re.search(r'^pymon_check_duration_seconds_count\{group="g",service="s"\} (\S+)', text, re.M)[1])
    inf = float(re.search(r'^pymon_check_duration_seconds_bucket\{group="g",le="\+Inf",service="s"\} (\S+)',
                          text, re.M)[1])
    per_host = [float(v) for v in re.findall(r'^pymon_check_results_total\{group="g",outcome="(?:ok|fail)",service="s"\} '
                                             r'(\S+)', text, re.M)]
    assert checks == inf >= 2 and len(per_host) == 2 and sum(per_host) == 2 * checks, (checks, inf, per_host)
    assert f'pymon_host_up{{group="g",host="{B}",service="s"}} 0.0' in text
    assert f'pymon_host_up{{group="g",host="{A}",service="s"}} 1.0' in text
    assert re.search(r'^pymon_alerts_sent_total\{group="g",service="s",type="alert"\} [1-9]', text, re.M)
    assert "pymon_scheduler_lag_seconds_count" in text
    assert f'pymon_ipvs_weight{{real_server="{A}:80",table="wanted",virtual_service="TCP 10.9.9.9:80"}} 1.0' in text
    assert "pymon_ready 1.0" in text
    code, hist = pymon.call("GET", "/history?limit=5")
    h = [x for x in hist["history"] if x["service"] == "s"][-1]
    assert h["type"] == "alert" and h["alert"] == "log" and h["ok"] and h["summary"] == B
    code, doc = pymon.call("GET", "/openapi.json")
    assert code == 200 and doc["openapi"].startswith("3.")
    from pymon.ops.api import Api

    class D:
        pass

    app = Api(D(), "t").app(tcp=True)  # type: ignore[arg-type]
    routes = {r.resource.canonical for r in app.router.routes() if r.method != "HEAD"}  # type: ignore[union-attr]
    assert routes == set(doc["paths"])
    ops = {(p, m.upper()) for p, v in doc["paths"].items() for m in v}
    assert ops == {(r.resource.canonical, r.method) for r in app.router.routes() if r.method != "HEAD"}  # type: ignore[union-attr]


def test_tcp_listener_cookie_login(pymon: Running) -> None:
    def req(method: str, path: str, headers: dict[str, str] | None = None, body: str | None = None
            ) -> http.client.HTTPResponse:
        c = http.client.HTTPConnection("127.0.0.1", pymon.port, timeout=10)
        c.request(method, path, body=body, headers=headers or {})
        r = c.getresponse()
        r.read()
        return r

    r = req("GET", "/")
    assert r.status == 303 and r.getheader("Location") == "/login"
    assert req("GET", "/login").status == 200
    assert req("GET", "/login?token=wrong").status == 401
    r = req("GET", f"/login?token={pymon.token}")
    assert r.status == 303
    cookie = r.getheader("Set-Cookie")
    assert cookie and "HttpOnly" in cookie and "SameSite=Strict" in cookie
    jar = {"Cookie": cookie.split(";")[0]}
    page = req("GET", "/", jar)
    assert page.status == 200 and page.getheader("Content-Type", "").startswith("text/html")
    assert req("GET", "/status", jar).status == 200
    # a change with only the cookie needs the header a cross-site form cannot send
    assert req("POST", f"/disable/host/{A}", jar).status == 403
    assert req("POST", f"/disable/host/{A}", dict(jar, **{"X-Pymon-Request": "1"})).status == 200
    assert req("GET", "/status", {"Authorization": f"Bearer {pymon.token}"}).status == 200
    r = req("POST", "/login", {"Content-Type": "application/x-www-form-urlencoded"}, f"token={pymon.token}")
    assert r.status == 303


def test_cli(pymon: Running) -> None:
    pymon.d.wait(lambda e: e["event"] == "daemon.ready")
    r = pymon.cli("disable", "host", B, "--for", "1h", "--reason", "maintenance")
    assert r.returncode == 0, r.stderr
    assert f"disabled host {B}: maintenance, until " in r.stdout and "by " in r.stdout
    (pymon.tmp / f"down-{A}").touch()
    pymon.d.wait(lambda e: e["event"] == "alert.log" and e["service"] == "s")
    r = pymon.cli("ack", "g", "s", "replacing", "the", "disk")
    assert r.returncode == 0 and r.stdout.strip() == "acknowledged g:s: replacing the disk"
    r = pymon.cli("status")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    row = next(ln for ln in lines if ln.startswith("g:s "))
    assert "FAIL" in row and f"{A}:DOWN" in row and f"{B}:off" in row
    assert "acked: replacing the disk" in r.stdout
    assert f"host {B}: maintenance, until" in r.stdout
    assert "TCP 10.9.9.9:80" in r.stdout and f"-> {B}:80" in r.stdout
    r = pymon.cli("history")
    assert r.returncode == 0 and any(ln.split()[2:5] == ["g:s", "alert", "log"] for ln in r.stdout.splitlines()[1:])
    r = pymon.cli("trap", "g", "p", "--status", "fail", "--summary", "queue stuck", "--host", A)
    assert r.returncode == 0 and r.stdout.strip() == f"g:p: fail (failing: {A})"
    r = pymon.cli("enable", "host", B)
    assert r.returncode == 0 and r.stdout.strip() == f"enabled host {B}"
    r = pymon.cli("status", "--json")
    assert json.loads(r.stdout)["disabled"]["host"] == {}
    r = pymon.cli("test-now", "g", "s")
    assert r.returncode == 1 and r.stdout.startswith("g:s: fail")
    r = pymon.cli("web-url")
    assert r.stdout.strip() == f"http://127.0.0.1:{pymon.port}/login?token={pymon.token}"
    r = pymon.cli("ack", "g", "nosuch", "x")
    assert r.returncode == 1 and "no such service g:nosuch (HTTP 404)" in r.stderr
    r = subprocess.run([sys.executable, "-m", "pymon", "status", "--socket", str(pymon.tmp / "nope.sock"),
                        "--token-file", str(pymon.tmp / "token")], capture_output=True, text=True)
    assert r.returncode == 2 and "pymon is not running: no socket at" in r.stderr
