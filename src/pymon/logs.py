"""Structured logs: JSON lines on stdout for machines, `console` for people."""

from __future__ import annotations

import logging
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


def setup(fmt: str = "json", level: str = "info", stream: Any = None) -> Any:
    renderer: Any = (structlog.processors.JSONRenderer() if fmt == "json"
                     else structlog.dev.ConsoleRenderer(colors=False))
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(LEVELS[level]),
        logger_factory=structlog.WriteLoggerFactory(stream or sys.stdout),  # one write per line (print: two)
        cache_logger_on_first_use=False,
    )
    return structlog.get_logger("pymon").bind()  # bound now: the lazy proxy binds anew on every line
