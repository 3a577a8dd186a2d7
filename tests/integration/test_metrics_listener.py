"""The metrics listener (globals.metrics_listen) against a real daemon, scraped as
Prometheus scrapes: plain HTTP with no token while the control API still wants one,
then TLS (a test CA) with basic auth (bcrypt) from a web config file; the exporter
conventions' metrics (process, build info, reload result, IPVS errors)."""

from __future__ import annotations

import base64
import ctypes
import ctypes.util
import http.client
import socket
import ssl
import subprocess
import sys
from pathlib import Path

from apiclient import call, wait_socket
from daemons import Daemon, setup
from httpserver import free_port

WATCH = """  g:
    s:
      interval: 0.5s
      monitor: {name: rec, dir: "%s"}
virtual_services:
  - vip: 10.9.9.9:80
    watch: g:s
    real_servers: [127.0.0.1]
ipvs: {dry_run: true}
"""


def get(conn: http.client.HTTPConnection, path: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
    conn.request("GET", path, headers=headers or {})
    r = conn.getresponse()
    body = r.read().decode()
    conn.close()
    return r.status, body


def samples(text: str) -> dict[str, float]:
    return {ln.rsplit(" ", 1)[0]: float(ln.rsplit(" ", 1)[1]) for ln in text.splitlines() if ln and ln[0] != "#"}


def bcrypt(password: str) -> str:
    """A bcrypt hash from libcrypt, as `htpasswd -nB` would write it."""
    lib = ctypes.CDLL(ctypes.util.find_library("crypt"))
    lib.crypt_gensalt.restype, lib.crypt.restype = ctypes.c_char_p, ctypes.c_char_p
    lib.crypt_gensalt.argtypes = [ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p, ctypes.c_int]
    lib.crypt.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
    return lib.crypt(password.encode(), lib.crypt_gensalt(b"$2y$", 5, None, 0)).decode()


def test_metrics_listener_needs_no_token(tmp_path: Path, daemons: list[Daemon]) -> None:
    port, mport = free_port(), free_port()
    cfg = setup(tmp_path, WATCH % tmp_path, groups="g: [127.0.0.1]",
                glob=f", control_port: {port}, metrics_listen: '127.0.0.2:{mport}'")
    d = Daemon(cfg)
    daemons.append(d)
    wait_socket(tmp_path / "pymon.sock")
    d.wait(lambda e: e["event"] == "metrics.listening")
    d.wait(lambda e: e["event"] == "daemon.ready")
    code, text = get(http.client.HTTPConnection("127.0.0.2", mport, timeout=10), "/metrics")
    assert code == 200
    m = samples(text)
    assert m['pymon_host_up{group="g",host="127.0.0.1",service="s"}'] == 1.0
    assert m["pymon_config_last_reload_success"] == 1.0
    started = m["pymon_config_last_reload_success_timestamp_seconds"]
    assert m["pymon_ipvs_errors_total"] == 0.0
    assert m["process_resident_memory_bytes"] > 1e6 and "process_open_fds" in m
    build = next(k for k in m if k.startswith("pymon_build_info{"))
    assert 'python="3.' in build and 'version="' in build
    # the listener serves metrics only: no status, no control
    assert get(http.client.HTTPConnection("127.0.0.2", mport, timeout=10), "/status")[0] == 404
    # the control API still wants its token, for /metrics too
    assert get(http.client.HTTPConnection("127.0.0.1", port, timeout=10), "/metrics")[0] == 401

    # a reload that fails: the old config keeps running, and the scrape says so
    good = cfg.read_text()
    cfg.write_text(good + "bogus: 1\n")
    r = subprocess.run([sys.executable, "-m", "pymon", "reload", "--socket", str(tmp_path / "pymon.sock")], capture_output=True, text=True)
    assert r.returncode == 1, r.stderr
    m = samples(get(http.client.HTTPConnection("127.0.0.2", mport, timeout=10), "/metrics")[1])
    assert m["pymon_config_last_reload_success"] == 0.0
    assert m["pymon_config_last_reload_success_timestamp_seconds"] == started
    cfg.write_text(good)
    r = subprocess.run([sys.executable, "-m", "pymon", "reload", "--socket", str(tmp_path / "pymon.sock")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    d.wait(lambda e: e["event"] == "config.reloaded")
    m = samples(get(http.client.HTTPConnection("127.0.0.2", mport, timeout=10), "/metrics")[1])
    assert m["pymon_config_last_reload_success"] == 1.0
    assert m["pymon_config_last_reload_success_timestamp_seconds"] > started
    assert d.stop() == 0


def test_metrics_listener_tls_and_basic_auth(tmp_path: Path, pki: dict[str, object], daemons: list[Daemon]) -> None:
    mport = free_port()
    certs = Path(str(pki["ca"])).parent
    web = tmp_path / "web.yml"
    web.write_text(f"tls_server_config:\n  cert_file: {certs / 'good.pem'}\n  key_file: {certs / 'good.key'}\n"
                   f"basic_auth_users:\n  prometheus: '{bcrypt('s3cret')}'\n")
    cfg = setup(tmp_path, WATCH % tmp_path, groups="g: [127.0.0.1]",
                glob=f", metrics_listen: '127.0.0.1:{mport}', web_config: {web}")
    d = Daemon(cfg)
    daemons.append(d)
    e = d.wait(lambda e: e["event"] in ("metrics.listening", "metrics.failed"))
    assert e["event"] == "metrics.listening" and e["tls"] and e["basic_auth"], e
    ctx = ssl.create_default_context(cafile=str(pki["ca"]))

    def scrape(auth: str | None) -> tuple[int, str]:
        h = {"Authorization": "Basic " + base64.b64encode(auth.encode()).decode()} if auth else {}
        return get(http.client.HTTPSConnection("127.0.0.1", mport, context=ctx, timeout=10), "/metrics", h)

    assert scrape(None)[0] == 401
    assert scrape("prometheus:wrong")[0] == 401
    assert scrape("nobody:s3cret")[0] == 401
    code, text = scrape("prometheus:s3cret")
    assert code == 200 and "pymon_build_info" in text
    assert scrape("prometheus:s3cret")[0] == 200  # the verified pair is remembered
    # plain HTTP on the TLS port gets nothing
    try:
        code = get(http.client.HTTPConnection("127.0.0.1", mport, timeout=10), "/metrics")[0]
    except (http.client.HTTPException, ConnectionError):
        code = 0
    assert code != 200
    assert d.stop() == 0


def test_web_config_problems_are_located(tmp_path: Path) -> None:
    web = tmp_path / "web.yml"
    web.write_text("tls_server_config:\n  cert_file: nosuch.crt\n  key_file: nosuch.key\n"
                   "http_server_config: {http2: true}\nbasic_auth_users:\n  prometheus: plaintext\n")
    cfg = setup(tmp_path, "  g:\n    s: {monitor: {name: rec, dir: x}}\n", groups="g: [h1]",
                glob=f", metrics_listen: 'localhost:9469', web_config: {web}")
    r = subprocess.run([sys.executable, "-m", "pymon", "check-config", "-c", str(cfg)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode != 0
    lines = r.stderr.strip().splitlines()
    assert f"{cfg}:1:" in r.stderr and "metrics_listen: 'localhost' does not appear to be an IPv4 or IPv6 address" \
        in r.stderr, r.stderr
    assert any(ln.startswith(f"{web}:4:1: 'http_server_config' is not supported") for ln in lines), lines
    assert any(ln.startswith(f"{web}:2:3: cannot load") and "No such file" in ln and "nosuch.crt" in ln for ln in lines), lines
    assert any(ln.startswith(f"{web}:6:15: the password of 'prometheus' must be a bcrypt hash") for ln in lines), lines
    assert "Traceback" not in r.stderr


def test_metrics_listener_address_taken(tmp_path: Path, daemons: list[Daemon]) -> None:
    """Another process holds the port: one line says so, everything else runs."""
    taken = socket.socket()
    taken.bind(("127.0.0.2", 0))
    taken.listen()
    mport = taken.getsockname()[1]
    try:
        cfg = setup(tmp_path, WATCH % tmp_path, groups="g: [127.0.0.1]", glob=f", metrics_listen: '127.0.0.2:{mport}'")
        d = Daemon(cfg)
        daemons.append(d)
        e = d.wait(lambda e: e["event"] in ("metrics.listening", "metrics.failed"))
        assert e["event"] == "metrics.failed" and e["address"] == f"127.0.0.2:{mport}" and "in use" in e["error"], e
        d.wait(lambda e: e["event"] == "daemon.ready")
        assert call(tmp_path / "pymon.sock", "GET", "/metrics")[0] == 200  # the control API's still works
        assert d.stop() == 0
    finally:
        taken.close()
