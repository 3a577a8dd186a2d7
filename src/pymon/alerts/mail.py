"""`mail` (also answers to `mail.alert`): an e-mail per event over SMTP (aiosmtplib),
with the subject and body of mon's `mail.alert`.

Params:
    to             address list, or one string of addresses separated by commas or spaces
    from           envelope and header sender (default pymon@<this host's FQDN>)
    host, port     SMTP server (default localhost; port 25, or 465 with `tls`)
    starttls       upgrade with STARTTLS after EHLO; fail if the server does not offer it
    tls            implicit TLS from the first byte (port 465 style); not with starttls
    verify         verify the server certificate (default true); `cafile`: extra CA bundle
    username       AUTH (PLAIN/LOGIN/CRAM-MD5, as the server offers) with `password`
                   or `password_file` (first line; read at each send, so it can rotate)
    subject        template (see alerts/_format.py for the fields), default mail.alert's
                   "{alert} {group}/{service}: {summary} ({time_short})"
    timeout        seconds per SMTP command (default 30); the alert's hard timeout
                   (globals.alert_timeout) bounds the whole delivery
    argv           mail.alert's command line: `mail.alert [-f FROM] [-S SUBJECT-SUMMARY] ADDR...`
                   (`alert: ["mail.alert -f mon@example.com ops@example.com"]`)

Explicit params override what `argv` sets. Every problem is reported at load time.
"""

from __future__ import annotations

import asyncio
import email.utils
import re
import socket
import ssl
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path

import aiosmtplib

from ..plugin import AlertEvent, Params, alert
from ..probes._common import ParamError, ParamReader, validator, parse_opts
from . import _format

DEFAULT_SUBJECT = "{alert} {group}/{service}: {summary} ({time_short})"


@dataclass(frozen=True)
class MailParams:
    to: tuple[str, ...]
    sender: str
    host: str
    port: int
    starttls: bool
    tls: bool
    verify: bool
    cafile: str | None
    username: str | None
    password: str | None
    password_file: str | None
    subject: str
    summary: str | None
    timeout: float


def _addresses(value: object, errors: list[str]) -> tuple[str, ...]:
    if isinstance(value, str):
        items = [a for a in re.split(r"[\s,]+", value) if a]
    elif isinstance(value, (list, tuple)) and all(isinstance(a, str) for a in value):
        items = [a.strip() for a in value if a.strip()]
    else:
        errors.append(f"to: expected an address or a list of addresses, got {value!r}")
        return ()
    for a in items:
        if "@" not in a and a != "root" and not re.fullmatch(r"[\w.+-]+", a):
            errors.append(f"to: not an address: {a!r}")
    return tuple(items)


def from_mon_args(argv: list[str]) -> Params:
    """mail.alert's `[-f FROM] [-S SUMMARY] ADDR...` (mon's own -s -g -h -t -u are not
    configured args: the daemon knows them)."""
    import getopt

    if not isinstance(argv, (list, tuple)):
        raise ParamError([f"argv: expected a list of strings, got {argv!r}"])
    try:
        opts, rest = getopt.getopt([str(a) for a in argv], "f:S:")
    except getopt.GetoptError as e:
        raise ParamError([f"argv: mail.alert: {e}"]) from None
    out: Params = {}
    for o, v in opts:
        out["from" if o == "-f" else "summary"] = v
    if rest:
        out["to"] = list(rest)
    return out


def _parse(params: Params) -> MailParams:
    base = from_mon_args(params["argv"]) if params.get("argv") is not None else {}
    r = ParamReader(params, base)
    to = _addresses(r.raw("to"), r.errors) if r.has("to") else ()
    if not to:
        r.error("to: required (an address or a list; or mail.alert's argv: ADDR...)")
    tls = r.boolean("tls", False)
    starttls = r.boolean("starttls", False)
    if tls and starttls:
        r.error("tls and starttls: choose one (tls = implicit TLS, starttls = upgrade after EHLO)")
    password = r.string("password", None)
    password_file = r.string("password_file", None)
    username = r.string("username", None)
    if password is not None and password_file is not None:
        r.error("password and password_file: give one")
    if username is None and (password is not None or password_file is not None):
        r.error("password: needs username")
    if username is not None and password is None and password_file is None:
        r.error("username: needs password or password_file")
    subject = r.string("subject", DEFAULT_SUBJECT)
    if (p := _format.template_problem("subject", subject)) is not None:
        r.error(p)
    cfg = MailParams(
        to=to, sender=r.string("from", None) or f"pymon@{socket.getfqdn()}",
        host=r.string("host", "localhost"), port=r.port("port", 465 if tls else 25) or 25,
        starttls=starttls, tls=tls, verify=r.boolean("verify", True), cafile=r.string("cafile", None),
        username=username, password=password, password_file=password_file,
        subject=subject, summary=r.string("summary", None), timeout=r.timeout(30.0),
    )
    r.finish()
    return cfg


validate_mail_params = validator(_parse)
PARAM_VALIDATORS = {"mail": validate_mail_params}


def message(event: AlertEvent, p: MailParams) -> EmailMessage:
    """mail.alert's message: subject line, then the group/service block and the output."""
    f = _format.fields(event)
    if p.summary is not None:
        f["summary"] = p.summary
    msg = EmailMessage()
    msg["From"] = p.sender
    msg["To"] = ", ".join(p.to)
    msg["Subject"] = " ".join(p.subject.format_map(f).split())  # no newlines in a header
    msg["Date"] = email.utils.formatdate(event.time, localtime=True)
    msg["Message-ID"] = email.utils.make_msgid("pymon")
    msg["X-Mailer"] = "pymon"
    lines = [
        "",
        f"Group                 : {event.group}",
        f"Service               : {event.service}",
        *([f"Description           : {event.description}"] if event.description else []),
        f"Time noticed          : {f['time']}",
        f"Failing hosts         : {f['hosts']}",
        "",
        "Detailed text (if any) follows:",
        "-------------------------------",
        _format.body_text(event),
    ]
    msg.set_content("\n".join(lines) + "\n")
    return msg


async def _password(p: MailParams) -> str | None:
    if p.password_file is None:
        return p.password
    text = await asyncio.to_thread(Path(p.password_file).read_text)
    return text.splitlines()[0] if text else ""


@alert("mail")
async def mail_alert(event: AlertEvent, params: Params) -> None:
    p = _parse(params)
    ctx = None
    if p.tls or p.starttls:
        ctx = ssl.create_default_context(cafile=p.cafile)
        if not p.verify:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
    await aiosmtplib.send(
        message(event, p), sender=p.sender, recipients=list(p.to), hostname=p.host, port=p.port,
        username=p.username, password=await _password(p), timeout=p.timeout,
        use_tls=p.tls, start_tls=p.starttls, tls_context=ctx, validate_certs=p.verify,
    )
