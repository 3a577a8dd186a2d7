"""`file` (also answers to `file.alert`): append each event to a file, in the exact
record format of mon's `file.alert`, so whatever reads those files keeps working:

    failure web http 1732540000 (Tue Nov 25 13:06:40) 10.0.0.12
    DESCR=front web farm
    OPSTATUS=0
    <detail lines, if any>
    .

The first line is `TYPE GROUP SERVICE EPOCH (WDAY MON DAY HH:MM:SS) SUMMARY`, TYPE being
mon's MON_ALERTTYPE (failure, up, startup) and OPSTATUS 0 failing, 1 ok, 7 untested.

Params:
    path      the file (absolute), or:
    dir       a directory (file.alert's -d) and
    file      a file name in it (file.alert's first argument, or -f)
    oneline   write only the first line of each record (default false)
    argv      file.alert's command line: `file.alert -d DIR FILE` (or `-f FILE`, `-S SUMMARY`)

The directory must exist; the file is created (umask applies) and only ever appended
to, one write per record.
"""

from __future__ import annotations

import asyncio
import getopt
import os
from dataclasses import dataclass

from ..plugin import AlertEvent, Params, alert
from ..probes._common import ParamError, ParamReader, validator
from . import _format


@dataclass(frozen=True)
class FileParams:
    path: str
    oneline: bool
    summary: str | None


def from_mon_args(argv: list[str]) -> Params:
    """file.alert's `[-d DIR] [-S SUMMARY] [FILE]` (and `-f FILE`)."""
    if not isinstance(argv, (list, tuple)):
        raise ParamError([f"argv: expected a list of strings, got {argv!r}"])
    try:
        opts, rest = getopt.getopt([str(a) for a in argv], "d:f:S:")
    except getopt.GetoptError as e:
        raise ParamError([f"argv: file.alert: {e}"]) from None
    names = {"-d": "dir", "-f": "file", "-S": "summary"}
    out: Params = {names[o]: v for o, v in opts}
    if len(rest) > 1:
        raise ParamError([f"argv: file.alert: one file name expected, got {rest!r}"])
    if rest:
        out["file"] = rest[0]
    return out


def _parse(params: Params) -> FileParams:
    base = from_mon_args(params["argv"]) if params.get("argv") is not None else {}
    r = ParamReader(params, base)
    path = r.string("path", None)
    d, f = r.string("dir", None), r.string("file", None)
    if path is not None and (d is not None or f is not None):
        r.error("path: give either path, or dir and file")
    if path is None:
        if f is None:
            r.error("path: required (or dir and file, or file.alert's argv: -d DIR FILE)")
            f = ""
        path = os.path.join(d, f) if d is not None else f
    if path and not os.path.isabs(path):
        r.error(f"path: must be absolute (or give dir), got {path!r}")
    cfg = FileParams(path=path, oneline=r.boolean("oneline", False), summary=r.string("summary", None))
    r.finish()
    return cfg


validate_file_params = validator(_parse)
PARAM_VALIDATORS = {"file": validate_file_params}


def record(event: AlertEvent, summary: str | None = None, oneline: bool = False) -> str:
    f = _format.fields(event)
    head = (f"{f['montype']} {event.group} {event.service} {f['epoch']} ({f['time_short']}) "
            f"{event.summary if summary is None else summary}\n")
    if oneline:
        return head
    detail = "".join(line + "\n" for line in event.detail.splitlines())
    return (f"{head}DESCR={event.description}\nOPSTATUS={_format.OPSTATUS.get(event.type, '7')}\n"
            f"{detail}.\n")


def _append(path: str, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        os.write(fd, text.encode("utf-8", "replace"))
    finally:
        os.close(fd)


@alert("file")
async def file_alert(event: AlertEvent, params: Params) -> None:
    p = _parse(params)
    await asyncio.to_thread(_append, p.path, record(event, p.summary, p.oneline))
