"""`tcp` and `telnet`: connect, optionally send, optionally match the banner.

One probe covers mon's tcp, smtp, ftp, pop3, imap and telnet monitors, since all of
them are "connect and read a greeting": `port: 25, expect: '^220 '` is smtp.monitor.
`telnet` differs only in defaults (port 23, expect `login:`) and in stripping telnet
IAC negotiation from what it reads, refusing every option (DO -> WONT, WILL -> DONT)
so that servers waiting for an answer still print their prompt.

Params: port (required for tcp), send (string sent after connect; YAML escapes such as
"\\r\\n" apply), expect (regex searched in what the server sends, read until it
matches, the server closes, `max_read` bytes (4096) arrive, or the timeout), timeout
(10), argv (mon's `tcp.monitor -p PORT [-t SECS]`; for telnet, telnet.monitor's
`-p PORT -t SECS -l '/regex/'`).
"""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass

from pymon.plugin import Params, Result, Target, monitor, timeout_unless_late
from pymon.probes._common import ParamReader, bad_params, validator, describe, fmt_s, parse_opts, perl_regex

IAC, DONT, DO, WONT, WILL, SB, SE = 255, 254, 253, 252, 251, 250, 240


@dataclass(frozen=True)
class TcpParams:
    port: int
    send: bytes | None
    expect: re.Pattern[str] | None
    max_read: int
    timeout: float
    telnet: bool


def from_mon_args(argv: list[str]) -> Params:
    """mon's `tcp.monitor -p PORT [-t SECS]`."""
    return parse_opts(argv, {"-p": "port", "-t": "timeout"}, "tcp.monitor")


def from_telnet_args(argv: list[str]) -> Params:
    """mon's `telnet.monitor [-p PORT] [-t SECS] [-l '/regex/']` (prompt default /ogin:/i)."""
    opts = parse_opts(argv, {"-p": "port", "-t": "timeout", "-l": "expect"}, "telnet.monitor")
    return {"expect": "(?i)ogin:", **opts, **({"expect": perl_regex(opts["expect"])} if "expect" in opts else {})}


def _parser(telnet: bool):  # type: ignore[no-untyped-def]
    def parse(params: Params) -> TcpParams:
        mon_args = from_telnet_args if telnet else from_mon_args
        base = mon_args(params["argv"]) if params.get("argv") is not None else {}
        r = ParamReader(params, base)
        port = r.port("port", 23 if telnet else None)
        if port is None:
            r.error("port: required")
        send = r.string("send", None)
        cfg = TcpParams(
            port=port or 0,
            send=send.encode("utf-8") if send is not None else None,
            expect=r.regex("expect", "login:" if telnet else None),
            max_read=r.number("max_read", 4096, integer=True, positive=True),
            timeout=r.timeout(),
            telnet=telnet,
        )
        r.finish()
        return cfg

    parse.__module__ = __name__
    return parse


_parse_tcp = _parser(telnet=False)
_parse_telnet = _parser(telnet=True)
validate_tcp_params = validator(_parse_tcp)
validate_telnet_params = validator(_parse_telnet)
PARAM_VALIDATORS = {"tcp": validate_tcp_params, "telnet": validate_telnet_params}


class TelnetFilter:
    """Incremental IAC stripper: feed() returns (data, replies refusing every option)."""

    def __init__(self) -> None:
        self._pending = b""
        self._in_sb = False

    def feed(self, chunk: bytes) -> tuple[bytes, bytes]:
        buf, out, reply = self._pending + chunk, bytearray(), bytearray()
        i = 0
        while i < len(buf):
            b = buf[i]
            if self._in_sb:  # skip subnegotiation up to IAC SE
                if b == IAC:
                    if i + 1 >= len(buf):
                        break
                    if buf[i + 1] == SE:
                        self._in_sb = False
                    i += 2
                else:
                    i += 1
                continue
            if b != IAC:
                out.append(b)
                i += 1
                continue
            if i + 1 >= len(buf):
                break
            cmd = buf[i + 1]
            if cmd == IAC:
                out.append(IAC)
                i += 2
            elif cmd in (DO, DONT, WILL, WONT):
                if i + 2 >= len(buf):
                    break
                opt = buf[i + 2]
                if cmd == DO:
                    reply += bytes((IAC, WONT, opt))
                elif cmd == WILL:
                    reply += bytes((IAC, DONT, opt))
                i += 3
            elif cmd == SB:
                self._in_sb = True
                i += 2
            else:  # NOP, GA, etc.
                i += 2
        self._pending = bytes(buf[i:])
        return bytes(out), bytes(reply)


async def _converse(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, cfg: TcpParams,
                    received: list[int] | None = None) -> Result:
    """`received[0]` counts the bytes read so far, so that a timeout can tell a server
    that never answers from one that drips its banner."""
    if cfg.send is not None:
        writer.write(cfg.send)
        await writer.drain()
    if cfg.expect is None:
        return Result(ok=True, summary=f"connected to port {cfg.port}")
    telnet = TelnetFilter() if cfg.telnet else None
    seen = b""
    while len(seen) < cfg.max_read:
        chunk = await reader.read(cfg.max_read - len(seen))
        if not chunk:
            break
        if telnet is not None:
            chunk, reply = telnet.feed(chunk)
            if reply:
                writer.write(reply)
        seen += chunk
        if received is not None:
            received[0] = len(seen)
        text = seen.decode("utf-8", errors="replace")
        if cfg.expect.search(text):
            return Result(ok=True, summary=f"banner matches {cfg.expect.pattern!r}", detail=text[:500])
    text = seen.decode("utf-8", errors="replace")
    if not seen:
        return Result(ok=False, summary=f"connection closed before {cfg.expect.pattern!r}")
    why = "banner does" if len(seen) < cfg.max_read else f"first {cfg.max_read} bytes do"
    return Result(ok=False, summary=f"{why} not match {cfg.expect.pattern!r}", detail=text[:500])


async def check(target: Target, cfg: TcpParams) -> Result:
    start = time.monotonic()
    writer: asyncio.StreamWriter | None = None
    received = [0]
    try:
        async with timeout_unless_late(cfg.timeout):
            reader, writer = await asyncio.open_connection(target.host, cfg.port)
            result = await _converse(reader, writer, cfg, received)
    except (asyncio.TimeoutError, TimeoutError):
        if writer is None:
            why = " connecting"
        elif cfg.expect is not None:
            why = f" waiting for {cfg.expect.pattern!r} ({received[0]} bytes received)"
        else:
            why = " sending"
        result = Result(ok=False, summary=f"timeout after {fmt_s(cfg.timeout)}{why}")
    except Exception as e:  # probes never raise
        result = Result(ok=False, summary=describe(e, cfg.timeout, target.host), detail=repr(e))
    finally:
        if writer is not None:
            writer.close()
    result.latency_s = time.monotonic() - start
    return result


@monitor("tcp")
async def tcp(target: Target, params: Params) -> Result:
    """TCP connect (+ send/expect) to one host."""
    try:
        cfg = _parse_tcp(params)
    except ValueError as e:
        return bad_params(e)
    return await check(target, cfg)


@monitor("telnet")
async def telnet(target: Target, params: Params) -> Result:
    """Telnet login prompt check: port 23, expect 'login:', IAC negotiation refused."""
    try:
        cfg = _parse_telnet(params)
    except ValueError as e:
        return bad_params(e)
    return await check(target, cfg)
