"""How the built-in alerts render an event, the way mon's alert scripts did.

`fields(event)` is the set of names a `subject`/`template` param may use with
Python's `str.format` syntax (`"{alert} {group}/{service}: {summary}"`):

    alert        ALERT, UPALERT or STARTUPALERT (mail.alert's word)
    type         alert, upalert or startupalert
    montype      failure, up or startup (mon's MON_ALERTTYPE)
    group, service, description, summary, detail
    hosts        the failing hosts, space-separated
    time         the event time as Perl's localtime: "Tue Nov 25 12:46:00 2025"
    time_short   mail.alert's "(wday mon day hh:mm:ss)" part, without the parens
    epoch        the event time as integer seconds
"""

from __future__ import annotations

import time
from typing import Any

from ..plugin import AlertEvent

MON_TYPE = {"alert": "failure", "upalert": "up", "startupalert": "startup"}
OPSTATUS = {"alert": "0", "upalert": "1", "startupalert": "7"}  # fail, ok, untested


def perl_localtime(t: float) -> str:
    """Perl's scalar localtime(): `Thu Sep  9 01:46:40 1999`."""
    return time.asctime(time.localtime(t))


def fields(event: AlertEvent) -> dict[str, Any]:
    t = perl_localtime(event.time)
    return {
        "alert": event.type.upper(), "type": event.type, "montype": MON_TYPE.get(event.type, event.type),
        "group": event.group, "service": event.service, "description": event.description,
        "summary": event.summary, "detail": event.detail, "hosts": " ".join(event.hosts),
        "time": t, "time_short": " ".join(t.split()[:4]), "epoch": int(event.time),
    }


SAMPLE = AlertEvent("alert", "group", "service", ("h1",), "h1", "detail", 0.0)


def template_problem(key: str, template: str) -> str | None:
    """A template that cannot render (unknown field, bad braces) is a load-time error."""
    try:
        template.format_map(fields(SAMPLE))
    except (KeyError, IndexError, ValueError, AttributeError) as e:
        names = ", ".join(sorted(fields(SAMPLE)))
        return f"{key}: cannot render {template!r} ({type(e).__name__}: {e}); fields: {names}"
    return None


def render(template: str, event: AlertEvent) -> str:
    return template.format_map(fields(event))


def body_text(event: AlertEvent) -> str:
    """The whole monitor output as a legacy alert gets it on stdin: summary, then detail."""
    return event.summary + ("\n" + event.detail if event.detail else "")
