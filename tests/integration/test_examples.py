"""The drop-in examples shipped in the repo, loaded from the repo's own `monitors/` and
`alerts/` dirs: `pgsql` against a real PostgreSQL server started here (Debian's
postgresql package), `chat` against an aiohttp server standing in for Slack/Mattermost."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from pymon.model.config import ConfigError
from pymon.loader import load_all
from pymon.plugin import AlertEvent, Target

REPO = Path(__file__).resolve().parents[2]
MONITORS, ALERTS = REPO / "monitors", REPO / "alerts"
PG_BIN = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_repo_plugin_dirs_are_loadable() -> None:
    """The daemon refuses world-writable plugin dirs and files; the repo's must not be."""
    for p in [MONITORS, ALERTS, *MONITORS.glob("*.py"), *ALERTS.glob("*.py")]:
        assert not p.stat().st_mode & stat.S_IWOTH, f"{p} is world-writable: chmod o-w {p}"


def config(tmp: Path, monitor: str, alerts: str = "[log]") -> Path:
    cfg = tmp / "pymon.yaml"
    cfg.write_text(f"""globals: {{mondir: {MONITORS}, alertdir: {ALERTS}, statedir: {tmp}}}
hostgroups: {{db: [127.0.0.1]}}
watch:
  db:
    pg:
      timeout: 5s
      monitor: {monitor}
      periods: [{{alert: {alerts}}}]
""")
    return cfg


# --- pgsql ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pg() -> Any:
    """A throwaway PostgreSQL cluster on a free loopback port, password auth only."""
    pytest.importorskip("asyncpg", reason="the pgsql example needs asyncpg (pip install 'pymon[pgsql]')")
    if not PG_BIN:
        pytest.skip("PostgreSQL server binaries missing (apt-get install postgresql)")
    bindir = Path(PG_BIN[-1]).parent
    root = Path(tempfile.mkdtemp(prefix="pymon-pg-"))
    prefix: list[str] = []
    if os.geteuid() == 0:  # postgres refuses to run as root
        pw = pwd.getpwnam("postgres")
        os.chown(root, pw.pw_uid, pw.pw_gid)
        prefix = ["runuser", "-u", "postgres", "--"]
    (root / "pw").write_text("admin-pw\n")
    os.chmod(root / "pw", 0o644)
    port = free_port()
    data, log = root / "data", root / "log"
    try:
        subprocess.run(prefix + [str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "-A", "scram-sha-256",
                                 f"--pwfile={root / 'pw'}", "-E", "UTF8", "--no-sync"],
                       check=True, capture_output=True, timeout=120)
        subprocess.run(prefix + [str(bindir / "pg_ctl"), "-D", str(data), "-l", str(log), "-w", "-t", "60",
                                 "-o", f"-c listen_addresses=127.0.0.1 -p {port} -k {root} -c fsync=off",
                                 "start"], check=True, capture_output=True, timeout=90)
    except subprocess.CalledProcessError as e:
        shutil.rmtree(root, ignore_errors=True)
        raise AssertionError(f"postgres did not start: {e.stdout!r} {e.stderr!r}") from None
    import asyncio

    import asyncpg

    async def setup() -> None:
        conn = await asyncpg.connect(host="127.0.0.1", port=port, user="postgres", password="admin-pw")
        try:
            await conn.execute("CREATE ROLE monitor LOGIN PASSWORD 'mon-pw'")
            await conn.execute("CREATE DATABASE app OWNER monitor")
        finally:
            await conn.close()
        conn = await asyncpg.connect(host="127.0.0.1", port=port, user="monitor", password="mon-pw",
                                     database="app")
        try:
            await conn.execute("CREATE TABLE jobs (name text, queued int)")
            await conn.execute("INSERT INTO jobs VALUES ('mail', 3), ('backup', 250)")
        finally:
            await conn.close()

    asyncio.run(setup())
    yield {"port": port, "root": root}
    subprocess.run(prefix + [str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                   capture_output=True, timeout=60)
    shutil.rmtree(root, ignore_errors=True)


def _pgsql() -> Any:
    cfg_dir = Path(tempfile.mkdtemp())
    try:
        _, plugins = load_all(str(config(cfg_dir, "{name: pgsql}")))
    finally:
        shutil.rmtree(cfg_dir)
    mon = plugins.registry.monitors["pgsql"]
    assert mon.origin.startswith(str(MONITORS / "pgsql.py"))
    return mon.fn


async def test_pgsql_select_1_and_a_configured_query(pg: dict[str, Any]) -> None:
    probe = _pgsql()
    t = Target("127.0.0.1", "db", "pg")
    r = await probe(t, {"port": pg["port"], "password": "admin-pw", "timeout": 5})
    assert r.ok and r.summary == "ok: 1" and r.value == 1.0, r
    q = {"port": pg["port"], "user": "monitor", "password": "mon-pw", "database": "app", "timeout": 5,
         "query": "SELECT max(queued) FROM jobs", "expect": r"^\d{1,2}$"}
    r = await probe(t, q)
    assert not r.ok and r.summary == "unexpected result 250 (expected /^\\d{1,2}$/)", r
    assert r.detail == "query: SELECT max(queued) FROM jobs"
    r = await probe(t, dict(q, query="SELECT name FROM jobs WHERE queued < 10", expect="^mail$"))
    assert r.ok and r.summary == "ok: mail", r
    no_expect = {k: v for k, v in q.items() if k != "expect"}
    r = await probe(t, dict(no_expect, query="SELECT name FROM jobs WHERE queued > 1000"))
    assert r.ok and r.summary == "ok: no rows", r  # no expect: any answer is an answer
    r = await probe(t, dict(q, query="SELECT name FROM jobs WHERE queued > 1000", expect="."))
    assert not r.ok and r.summary.startswith("unexpected result no rows"), r


async def test_pgsql_failure_modes(pg: dict[str, Any], tmp_path: Path) -> None:
    probe = _pgsql()
    t = Target("127.0.0.1", "db", "pg")
    base = {"port": pg["port"], "user": "monitor", "database": "app", "timeout": 5}
    r = await probe(t, dict(base, password="wrong"))
    assert not r.ok and r.summary.startswith("login refused:") and "monitor" in r.summary, r
    (tmp_path / "pw").write_text("mon-pw\n")
    r = await probe(t, dict(base, password_file=str(tmp_path / "pw"), query="SELEC 1"))
    assert not r.ok and r.summary.startswith("query failed: 42601 syntax error"), r
    r = await probe(t, dict(base, password="mon-pw", query="DELETE FROM jobs"))
    assert not r.ok and "read-only transaction" in r.summary, r  # the probe cannot change data
    r = await probe(t, dict(base, password="mon-pw", query="SELECT pg_sleep(3)", timeout=0.5))
    assert not r.ok and r.summary == "timeout after 0.5s", r
    r = await probe(t, dict(base, port=free_port(), password="x"))
    assert not r.ok and r.summary == "connection refused", r
    r = await probe(t, dict(base, prot=1))
    assert not r.ok and r.summary == "bad params: unknown param: prot", r


def test_pgsql_through_pymon_test_and_its_load_time_checks(pg: dict[str, Any], tmp_path: Path) -> None:
    cfg = config(tmp_path, f"{{name: pgsql, port: {pg['port']}, user: monitor, password: mon-pw, "
                           f"database: app, query: 'SELECT count(*) FROM jobs', expect: '^2$'}}")
    r = subprocess.run([sys.executable, "-m", "pymon", "test", "-c", str(cfg), "db", "pg"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.split()[:2] == ["127.0.0.1", "ok"] and "ok: 2" in r.stdout
    with pytest.raises(ConfigError) as e:
        load_all(str(config(tmp_path, "{name: pgsql, expect: '(', ssl: maybe, port: 99999}")))
    text = "\n".join(e.value.problems)
    assert "pymon.yaml:7:" in text and "monitor pgsql: port: not a TCP port: 99999" in text
    assert "expect: bad regex '('" in text and "ssl: must be one of" in text


# --- chat -------------------------------------------------------------------------------


async def test_chat_posts_text_to_an_incoming_webhook(tmp_path: Path) -> None:
    got: list[dict[str, Any]] = []
    status = [200]

    async def hook(req: web.Request) -> web.Response:
        got.append(await req.json())
        return web.Response(status=status[0], text="ok" if status[0] == 200 else "invalid_token")

    app = web.Application()
    app.router.add_post("/hooks/xyz", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    url = f"http://127.0.0.1:{port}/hooks/xyz"
    try:
        _, plugins = load_all(str(config(tmp_path, "{name: pgsql}",
                                         f'["chat {url}", {{name: chat, url: "{url}", channel: "#ops"}}]')))
        chat = plugins.alert("chat")
        assert chat is not None and not isinstance(chat, Path)
        assert chat.origin.startswith(str(ALERTS / "chat.py"))
        ev = AlertEvent("alert", "db", "pg", ("127.0.0.1",), "127.0.0.1", "127.0.0.1: connection refused",
                        time.time())
        await chat.fn(ev, {"argv": [url]})
        await chat.fn(AlertEvent("upalert", "db", "pg", (), "", "", time.time()),
                      {"url": url, "channel": "#ops", "username": "pymon", "template": "{alert} {group}/{service}"})
        status[0] = 403
        with pytest.raises(RuntimeError, match="HTTP 403: invalid_token"):
            await chat.fn(ev, {"url": url})
    finally:
        await runner.cleanup()
    assert got[0] == {"text": ":red_circle: *ALERT* db/pg: 127.0.0.1\n```\n127.0.0.1: connection refused\n```"}
    assert got[1] == {"text": "UPALERT db/pg", "channel": "#ops", "username": "pymon"}
    with pytest.raises(ConfigError) as e:
        load_all(str(config(tmp_path, "{name: pgsql}", '["chat", {name: chat, url: x, template: "{nope}"}]')))
    text = "\n".join(e.value.problems)
    assert "alert chat: url: an http:// or https:// URL is required, got None" in text
    assert "template: cannot render: KeyError: 'nope'" in text
