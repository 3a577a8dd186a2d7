"""Built-in mail, webhook and file alerts against real peers: an aiosmtpd SMTP server
(STARTTLS and implicit TLS with a certificate made here, AUTH), aiohttp servers that
take, refuse or fail webhooks, and Debian's own file.alert as the oracle for records.
Also the load-time param checks for alerts, built-in and drop-in."""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import time
from email import message_from_bytes
from email.message import Message
from pathlib import Path
from typing import Any

import aiosmtplib
import pytest
from aiohttp import web
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from pymon.alerts import validate_params, file as file_alert, mail, webhook
from pymon.model.config import ConfigError
from pymon.loader import load_all
from pymon.plugin import AlertEvent

EVENT = AlertEvent("alert", "web", "http", ("10.0.0.12", "10.0.0.13"), "10.0.0.12 10.0.0.13",
                   "10.0.0.12: connection refused\n10.0.0.13: HTTP 503", 1732540000.0,
                   description="front web farm", retval=1)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- load-time param checks ------------------------------------------------------------


def write_cfg(tmp: Path, alerts: str, extra_alertdir: str = "") -> Path:
    alertdir = tmp / "alerts"
    alertdir.mkdir(exist_ok=True)
    cfg = tmp / "pymon.yaml"
    cfg.write_text(f"""globals: {{mondir: {tmp}, alertdir: {alertdir}, statedir: {tmp}}}
hostgroups: {{g: [127.0.0.1]}}
watch:
  g:
    s:
      monitor: {{name: tcp, port: 1}}
      periods:
        - alert:
{alerts}
""")
    return cfg


def problems(tmp: Path, alerts: str) -> list[str]:
    try:
        load_all(str(write_cfg(tmp, alerts)))
    except ConfigError as e:
        return e.problems
    return []


def test_valid_alert_params_in_every_form(tmp_path: Path) -> None:
    assert problems(tmp_path, """\
            - mail.alert -f mon@example.com ops@example.com root
            - {name: mail, to: "a@example.com, b@example.com", starttls: true, username: u, password: p}
            - {name: mail, to: [a@example.com], tls: true, port: 2465, subject: "{alert} {group}: {hosts}"}
            - {name: webhook, url: "https://hooks.example.com/x", headers: {Authorization: "Bearer t"}, retries: 0}
            - webhook http://127.0.0.1:9/hook
            - file.alert -d /var/log alerts.log
            - {name: file, path: /var/log/pymon.alerts, oneline: true}
            - lvs.alert -P tcp -V 10.0.0.1:80 -R 10.0.0.2 -W 1 -F dr
""") == []


def test_bad_alert_params_are_config_errors_with_position(tmp_path: Path) -> None:
    found = problems(tmp_path, """\
            - {name: mail}
            - {name: mail, to: a@example.com, tls: true, starttls: true, password: x}
            - {name: mail, to: a@example.com, subject: "{nosuchfield}"}
            - {name: webhook, url: "ftp://x", retries: -1, bogus: 1}
            - {name: webhook}
            - file.alert relative.log
            - {name: file, path: /tmp/x, dir: /tmp}
            - lvs.alert -P tcp
""")
    text = "\n".join(found)
    assert all(":" in p and "pymon.yaml:" in p for p in found), found
    for needle in ["alert mail: to: required", "tls and starttls: choose one", "password: needs username",
                   "subject: cannot render '{nosuchfield}'", "url: must start with http:// or https://",
                   "retries: must be >= 0", "unknown param: bogus", "alert webhook: url: required",
                   "path: must be absolute", "path: give either path, or dir and file", "needs -V"]:
        assert needle in text, (needle, found)
    # every problem carries the line of its list item
    lines = sorted({int(p.split(":")[1]) for p in found})
    assert lines == list(range(9, 17)), found


def test_dropin_alert_checks_params_the_same_way(tmp_path: Path) -> None:
    (tmp_path / "alerts").mkdir()
    (tmp_path / "alerts" / "pager.py").write_text('''
from pymon.plugin import alert

def _check(params):
    return [] if "number" in params else ["number: required"]

PARAM_VALIDATORS = {"pager": _check}

@alert("pager")
async def pager(event, params):
    pass
''')
    assert any("alert pager: number: required" in p for p in problems(tmp_path, "            - pager\n"))
    assert problems(tmp_path, "            - {name: pager, number: 5}\n") == []


def test_check_params_entry_point() -> None:
    assert validate_params("webhook", {"url": "http://x/"}) == []
    assert validate_params("file", {"argv": ["-d", "/tmp", "a", "b"]}) == [
        "argv: file.alert: one file name expected, got ['a', 'b']"]
    assert validate_params("log", {"anything": 1}) == []


# --- mail --------------------------------------------------------------------------------


def make_cert(tmp: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "smtp.test")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("smtp.test"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
            .sign(key, hashes.SHA256()))
    crt, k = tmp / "smtp.pem", tmp / "smtp.key"
    crt.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    k.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption()))
    return crt, k


class Inbox:
    def __init__(self) -> None:
        self.messages: list[tuple[str, list[str], Message, Any]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append((envelope.mail_from, list(envelope.rcpt_tos),
                              message_from_bytes(envelope.original_content or envelope.content),
                              session.auth_data))
        return "250 OK"


def authenticator(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
    ok = isinstance(data, LoginPassword) and data.login == b"mon" and data.password == b"s3cret"
    return AuthResult(success=ok, handled=False, auth_data=data.login if ok else None)


@pytest.fixture
def smtp(tmp_path: Path):  # type: ignore[no-untyped-def]
    """STARTTLS required before AUTH, AUTH required before mail; and a plain one."""
    crt, key = make_cert(tmp_path)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(crt, key)
    inbox = Inbox()
    port = free_port()
    ctl = Controller(inbox, hostname="127.0.0.1", port=port, tls_context=ctx, require_starttls=True,
                     authenticator=authenticator, auth_required=True, auth_require_tls=True)
    ctl.start()
    yield {"port": port, "inbox": inbox, "cafile": str(crt), "ctx": ctx, "tmp": tmp_path}
    ctl.stop()


async def test_mail_starttls_auth_delivers_mail_alert_message(smtp: dict[str, Any]) -> None:
    pwfile = smtp["tmp"] / "pw"
    pwfile.write_text("s3cret\n")
    params = {"host": "127.0.0.1", "port": smtp["port"], "starttls": True, "cafile": smtp["cafile"],
              "username": "mon", "password_file": str(pwfile), "from": "mon@example.com",
              "argv": ["ops@example.com", "root@example.com"]}
    assert validate_params("mail", params) == []
    await mail.mail_alert(EVENT, params)
    (sender, rcpts, msg, auth), = smtp["inbox"].messages
    assert sender == "mon@example.com" and rcpts == ["ops@example.com", "root@example.com"]
    assert auth == b"mon"
    t = time.asctime(time.localtime(EVENT.time)).split()
    assert msg["Subject"] == f"ALERT web/http: 10.0.0.12 10.0.0.13 ({' '.join(t[:4])})"
    assert msg["To"] == "ops@example.com, root@example.com"
    body = msg.get_payload(decode=True).decode().replace("\r\n", "\n")
    assert "Group                 : web" in body and "Service               : http" in body
    assert "Failing hosts         : 10.0.0.12 10.0.0.13" in body
    assert body.rstrip().endswith("10.0.0.12 10.0.0.13\n10.0.0.12: connection refused\n10.0.0.13: HTTP 503")


async def test_mail_refused_without_tls_or_with_wrong_password(smtp: dict[str, Any]) -> None:
    base = {"host": "127.0.0.1", "port": smtp["port"], "to": "ops@example.com", "username": "mon",
            "password": "s3cret"}
    with pytest.raises(aiosmtplib.SMTPException):  # the server demands STARTTLS first
        await mail.mail_alert(EVENT, base)
    with pytest.raises(aiosmtplib.SMTPAuthenticationError):
        await mail.mail_alert(EVENT, dict(base, starttls=True, cafile=smtp["cafile"], password="nope"))
    with pytest.raises(ssl.SSLCertVerificationError):  # an unknown CA is not trusted
        await mail.mail_alert(EVENT, dict(base, starttls=True))
    # ... unless verification is off
    await mail.mail_alert(EVENT, dict(base, starttls=True, verify=False, subject="{montype}: {group}"))
    (_, _, msg, _), = smtp["inbox"].messages
    assert msg["Subject"] == "failure: web"


async def test_mail_implicit_tls_and_upalert_subject(tmp_path: Path) -> None:
    crt, key = make_cert(tmp_path)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(crt, key)
    inbox = Inbox()
    port = free_port()
    ctl = Controller(inbox, hostname="127.0.0.1", port=port, ssl_context=ctx)
    ctl.start()
    try:
        up = AlertEvent("upalert", "web", "http", (), "", "", time.time())
        await mail.mail_alert(up, {"host": "127.0.0.1", "port": port, "tls": True, "cafile": str(crt),
                                   "to": ["a@example.com"]})
    finally:
        ctl.stop()
    (sender, rcpts, msg, _), = inbox.messages
    assert msg["Subject"].startswith("UPALERT web/http:") and rcpts == ["a@example.com"]
    assert sender.startswith("pymon@")


# --- webhook ------------------------------------------------------------------------------


class Hooks:
    """/ok takes everything; /flaky fails twice (503, then a dropped connection) then
    takes; /down is always 500; /bad is 400 (final); /slow never answers in time."""

    def __init__(self) -> None:
        self.got: dict[str, list[tuple[float, Any, dict[str, str]]]] = {}

    async def handle(self, req: web.Request) -> web.StreamResponse:
        kind = req.match_info["kind"]
        seen = self.got.setdefault(kind, [])
        seen.append((time.monotonic(), await req.json(), dict(req.headers)))
        if kind == "flaky" and len(seen) == 1:
            return web.Response(status=503, text="try later")
        if kind == "flaky" and len(seen) == 2:
            assert req.transport is not None
            req.transport.close()  # a connection dropped mid-request
            return web.Response()
        if kind == "down":
            return web.Response(status=500, text="boom")
        if kind == "bad":
            return web.Response(status=400, text="what is this")
        if kind == "slow":
            await asyncio.sleep(1)
        return web.Response(status=204)


@pytest.fixture
async def hooks():  # type: ignore[no-untyped-def]
    h = Hooks()
    app = web.Application()
    app.router.add_post("/{kind}", h.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    h.url = f"http://127.0.0.1:{port}"  # type: ignore[attr-defined]
    yield h
    await runner.cleanup()


async def test_webhook_posts_the_event_as_json(hooks: Hooks) -> None:
    await webhook.webhook_alert(EVENT, {"url": hooks.url + "/ok", "headers": {"Authorization": "Bearer t"}})
    (_, body, headers), = hooks.got["ok"]
    assert body == {"type": "alert", "group": "web", "service": "http", "hosts": ["10.0.0.12", "10.0.0.13"],
                    "summary": "10.0.0.12 10.0.0.13", "detail": EVENT.detail, "time": EVENT.time,
                    "description": "front web farm", "retval": 1}
    assert headers["Authorization"] == "Bearer t" and headers["Content-Type"] == "application/json"


async def test_webhook_retries_with_exponential_backoff_then_succeeds(hooks: Hooks) -> None:
    await webhook.webhook_alert(EVENT, {"argv": [hooks.url + "/flaky"], "backoff": 0.2})
    times = [t for t, _, _ in hooks.got["flaky"]]
    assert len(times) == 3
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert 0.2 <= gaps[0] < 0.5 and 0.4 <= gaps[1] < 0.8, gaps


async def test_webhook_gives_up_after_retries_and_on_final_status(hooks: Hooks) -> None:
    with pytest.raises(webhook.DeliveryError, match=r"HTTP 500: boom \(attempt 3 of 3\)"):
        await webhook.webhook_alert(EVENT, {"url": hooks.url + "/down", "retries": 2, "backoff": 0.05})
    assert len(hooks.got["down"]) == 3
    with pytest.raises(webhook.DeliveryError, match=r"HTTP 400: what is this \(attempt 1 of 4\)"):
        await webhook.webhook_alert(EVENT, {"url": hooks.url + "/bad", "backoff": 0.05})
    assert len(hooks.got["bad"]) == 1
    start = time.monotonic()
    with pytest.raises(webhook.DeliveryError, match=r"timeout after 0.3s \(attempt 2 of 2\)"):
        await webhook.webhook_alert(EVENT, {"url": hooks.url + "/slow", "retries": 1, "timeout": 0.3,
                                            "backoff": 0})
    assert time.monotonic() - start < 1.5
    port = free_port()
    with pytest.raises(webhook.DeliveryError, match="connection refused"):
        await webhook.webhook_alert(EVENT, {"url": f"http://127.0.0.1:{port}/", "retries": 0})


async def test_webhook_through_the_daemon(hooks: Hooks, tmp_path: Path) -> None:
    """The real daemon: a failing service alerts a flaky hook (delivered on the third
    try), an always-failing hook (bounded by the alert's hard timeout) and a file."""
    closed = free_port()
    cfg = tmp_path / "pymon.yaml"
    cfg.write_text(f"""globals: {{mondir: {tmp_path}, alertdir: {tmp_path}, statedir: {tmp_path}, alert_timeout: 1.5s}}
hostgroups: {{lo: [127.0.0.1]}}
watch:
  lo:
    web:
      description: loopback web
      interval: 0.5s
      timeout: 1s
      monitor: tcp.monitor -p {closed}
      periods:
        - alertevery: 1h
          alert:
            - {{name: webhook, url: "{hooks.url}/flaky", backoff: 0.1}}
            - {{name: webhook, url: "{hooks.url}/down", retries: 100, backoff: 0.2}}
            - file.alert -d {tmp_path} alerts.log
""")
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "pymon", "run", "-c", str(cfg),
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    events: list[dict[str, Any]] = []
    try:
        async def until(pred) -> dict[str, Any]:  # type: ignore[no-untyped-def]
            assert proc.stdout is not None
            while True:
                line = await proc.stdout.readline()
                assert line, f"daemon exited; events: {[e['event'] for e in events]}"
                events.append(json.loads(line))
                if pred(events[-1]):
                    return events[-1]

        sent = await asyncio.wait_for(until(lambda e: e["event"] == "alert.sent" and e["alert"] == "webhook"), 15)
        failed = await asyncio.wait_for(until(lambda e: e["event"] == "alert.failed"), 15)
    finally:
        proc.terminate()
        await proc.wait()
    assert sent["type"] == "alert" and sent["summary"] == "127.0.0.1"
    assert failed["alert"] == "webhook" and failed["error"] == "timeout after 1.5s"
    retries = [e for e in events if e["event"] == "alert.retry"]
    assert {e["url"] for e in retries} == {hooks.url + "/flaky", hooks.url + "/down"}
    assert len(hooks.got["flaky"]) == 3
    body = hooks.got["flaky"][-1][1]
    assert body["group"] == "lo" and body["service"] == "web" and body["hosts"] == ["127.0.0.1"]
    assert body["description"] == "loopback web" and "connection refused" in body["detail"] + body["summary"]
    # 1.5 s of 0.2, 0.4, 0.8 s back-off: 3 or 4 attempts, nowhere near 101
    assert 2 <= len(hooks.got["down"]) <= 4, len(hooks.got["down"])
    assert (tmp_path / "alerts.log").read_text().startswith("failure lo web ")


# --- file ---------------------------------------------------------------------------------


async def test_file_appends_records(tmp_path: Path) -> None:
    path = tmp_path / "a.log"
    await file_alert.file_alert(EVENT, {"path": str(path)})
    up = AlertEvent("upalert", "web", "http", (), "", "", EVENT.time + 60, description="front web farm")
    await file_alert.file_alert(up, {"argv": ["-d", str(tmp_path), "a.log"]})
    await file_alert.file_alert(EVENT, {"dir": str(tmp_path), "file": "a.log", "oneline": True})
    lines = path.read_text().splitlines()
    stamp = " ".join(time.asctime(time.localtime(EVENT.time)).split()[:4])
    assert lines[:6] == [f"failure web http 1732540000 ({stamp}) 10.0.0.12 10.0.0.13", "DESCR=front web farm",
                         "OPSTATUS=0", "10.0.0.12: connection refused", "10.0.0.13: HTTP 503", "."]
    assert lines[6].startswith("up web http 1732540060 (") and lines[7:10] == [
        "DESCR=front web farm", "OPSTATUS=1", "."]
    assert lines[10] == lines[0] and len(lines) == 11
    with pytest.raises(FileNotFoundError):
        await file_alert.file_alert(EVENT, {"path": str(tmp_path / "no" / "such")})


@pytest.mark.skipif(not Path("/usr/lib/mon/alert.d/file.alert").exists() or shutil.which("perl") is None,
                    reason="Debian's mon package (file.alert) is not installed")
async def test_file_record_is_byte_identical_to_mon_file_alert(tmp_path: Path) -> None:
    """Debian's file.alert, fed as the daemon feeds it, is the oracle."""
    ours, theirs = tmp_path / "ours.log", tmp_path / "theirs.log"
    await file_alert.file_alert(EVENT, {"argv": ["-d", str(tmp_path), "ours.log"]})
    env = dict(os.environ, MON_ALERTTYPE="failure", MON_OPSTATUS="0", MON_DESCRIPTION="front web farm")
    subprocess.run(["/usr/lib/mon/alert.d/file.alert", "-s", "http", "-g", "web", "-h", "10.0.0.12 10.0.0.13",
                    "-t", "1732540000", "-d", str(tmp_path), "theirs.log"],
                   input=EVENT.summary + "\n" + EVENT.detail + "\n", text=True, env=env, check=True)
    assert ours.read_bytes() == theirs.read_bytes()
