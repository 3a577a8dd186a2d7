"""Structured logs: JSON lines on stdout for machines, `console` for people."""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

# structlog.dev imports rich, colorama and better_exceptions when they are installed (rich
# comes with the test tools): 6 MiB of modules the daemon never uses (its console format
# has no colours). Hidden while structlog loads, importable again after.
_HIDDEN = [m for m in ("rich", "colorama", "better_exceptions") if m not in sys.modules]
sys.modules.update(dict.fromkeys(_HIDDEN))
try:
    import structlog
finally:
    for _m in _HIDDEN:
        del sys.modules[_m]

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


# sd-daemon(3) priority prefixes by structlog method name: journald strips `<N>` from the
# start of each line it reads from a service's stdout (SyslogLevelPrefix=yes, the default)
# and files the line at that syslog priority, so `journalctl -p warning` finds warnings.
PRIORITY = {"debug": 7, "info": 6, "msg": 6, "notice": 5, "warning": 4, "warn": 4,
            "error": 3, "exception": 3, "critical": 2, "fatal": 2}


def to_journal(stream: Any) -> bool:
    """True if `stream` is the journald stream systemd connected us to.

    systemd sets JOURNAL_STREAM=DEV:INODE for a service whose stdout or stderr goes to the
    journal; it is inherited by children and survives redirections, so the prefix is only
    written when `stream` is that very socket (a pipe or file gets plain lines).
    """
    js = os.environ.get("JOURNAL_STREAM", "")
    dev, _, ino = js.partition(":")
    if not (dev.isdigit() and ino.isdigit()):
        return False
    try:
        st = os.fstat(stream.fileno())
    except (AttributeError, OSError, ValueError):
        return False
    return (st.st_dev, st.st_ino) == (int(dev), int(ino))


def _priority_prefix(_logger: Any, method: str, line: str) -> str:
    return f"<{PRIORITY.get(method, 6)}>{line}"


def setup(fmt: str = "json", level: str = "info", stream: Any = None) -> Any:
    stream = stream or sys.stdout
    renderer: Any = (structlog.processors.JSONRenderer() if fmt == "json"
                     else structlog.dev.ConsoleRenderer(colors=False))
    processors: list[Any] = [
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        renderer,
    ]
    if to_journal(stream):
        processors.append(_priority_prefix)  # after the renderer: prefixes the finished line
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(LEVELS[level]),
        logger_factory=structlog.WriteLoggerFactory(stream),  # one write per line (print: two)
        cache_logger_on_first_use=False,
    )
    return structlog.get_logger("pymon").bind()  # bound now: the lazy proxy binds anew on every line
