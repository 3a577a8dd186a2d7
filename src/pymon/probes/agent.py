"""`agent`: ask the real server for its own weight and state (HAProxy's agent-check).

The server runs a small agent (monitors/agent.py is one) on `port`; the probe connects,
sends `send` when given (HAProxy's agent-send), and reads one line (up to `\\n`, the
server closing, or 1 KiB) within the timeout. The line is words separated by commas,
spaces or tabs, case-insensitive; `#` starts a free-text reason (the rest of the line):

    N%                         weight: N percent of the configured IPVS weight (0-256)
    ready | up                 back in service, at the reported (or configured) weight
    drain                      IPVS weight 0: kept in the table, no new connections
    maint | down | stopped | fail   taken out: the check fails, the reason is the summary
    maxconn:N, anything else   ignored

An agent that cannot be reached, or says nothing, changes nothing (as in HAProxy: the
regular health check tests reachability): the result is ok and carries no report, so
the last report holds. The report rides on `Result.agent` (plugin.AgentReport); the
engine keeps the last one per host and the IPVS owner applies it (docs/agent.md).

Params: port (required), send (string; YAML escapes such as "\\n" apply), timeout (10).
"""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass

from pymon.plugin import AgentReport, Params, Result, Target, monitor, timeout_unless_late
from pymon.probes._common import ParamReader, bad_params, describe, first_line, validator

MAX_LINE = 1024
MAX_PERCENT = 256  # HAProxy's bound: a server may ask for more than its configured weight
_SPLIT = re.compile(r"[,\s]+")
_DOWN = {"maint", "down", "stopped", "fail"}
_READY = {"ready", "up"}


@dataclass(frozen=True)
class AgentParams:
    port: int
    send: bytes | None
    timeout: float


def _parse(params: Params) -> AgentParams:
    r = ParamReader(params, argv=False)
    port = r.port("port", None)
    if port is None and not r.has("port"):
        r.error("port: required (the agent's TCP port)")
    send = r.string("send", None)
    cfg = AgentParams(port or 0, send.encode("utf-8") if send is not None else None, r.timeout())
    r.finish()
    return cfg


PARAM_VALIDATORS = {"agent": validator(_parse)}


def parse_reply(line: str) -> tuple[bool, str, AgentReport | None]:
    """One agent line → (ok, summary, report). Pure: the protocol's whole meaning is here."""
    words, _, reason = line.strip().partition("#")
    reason = reason.strip()
    weight: float | None = None
    state: str | None = None
    said: list[str] = []
    for word in _SPLIT.split(words.strip().lower()):
        if word.endswith("%") and word[:-1].isdigit() and int(word[:-1]) <= MAX_PERCENT:
            weight = int(word[:-1]) / 100
            said.append(word)
        elif word in _DOWN:
            state = "down"
            said.append(word)
        elif word == "drain":
            state = "drain"
            said.append(word)
        elif word in _READY:
            state = "ready"
            said.append(word)
    if weight is None and state is None:
        return True, "agent said nothing we use: weight unchanged" + (f" ({reason})" if reason else ""), None
    text = " ".join(said) + (f": {reason}" if reason else "")
    report = AgentReport(weight, state)  # type: ignore[arg-type]
    if state == "down":
        return False, f"agent: {reason or ' '.join(said)}", report
    return True, f"agent: {text}", report


async def _ask(target: Target, cfg: AgentParams) -> str:
    reader, writer = await asyncio.open_connection(target.host, cfg.port)
    try:
        if cfg.send:
            writer.write(cfg.send)
            await writer.drain()
        data = b""
        while b"\n" not in data and len(data) < MAX_LINE:
            chunk = await reader.read(MAX_LINE - len(data))
            if not chunk:
                break
            data += chunk
        return data.split(b"\n", 1)[0].decode("utf-8", "replace")
    finally:
        writer.close()


@monitor("agent")
async def agent(target: Target, params: Params) -> Result:
    try:
        cfg = _parse(params)
    except ValueError as e:
        return bad_params(e)
    start = time.monotonic()
    try:
        async with timeout_unless_late(cfg.timeout):
            line = await _ask(target, cfg)
    except (OSError, asyncio.TimeoutError, UnicodeError) as e:
        why = describe(e, cfg.timeout, target.host)
        return Result(True, f"agent unreachable ({why}): weight and state unchanged",
                      latency_s=time.monotonic() - start)
    ok, summary, report = parse_reply(line)
    return Result(ok, summary, detail=first_line(line), latency_s=time.monotonic() - start,
                  value=report.weight if report else None, agent=report)
