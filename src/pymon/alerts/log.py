"""`log`: an alert that is just a structured log event (`alert.log`)."""

from __future__ import annotations

import structlog

from ..plugin import AlertEvent, Params, alert


@alert("log")
async def log_alert(event: AlertEvent, params: Params) -> None:
    structlog.get_logger("pymon").warning(
        "alert.log", type=event.type, group=event.group, service=event.service,
        hosts=list(event.hosts), summary=event.summary, detail=event.detail, args=list(event.args))
