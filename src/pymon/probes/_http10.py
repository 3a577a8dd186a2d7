"""The lean path of the `http` probe: plain HTTP/1.0 GET/HEAD on a fresh connection.

The common director check (`scheme: http`, no keep-alive, no redirects, no
certificate) needs one connect, one write and one bounded read. Through aiohttp that
costs a session, a connector, a request and a response object per check (~0.5 ms of
CPU); here the exchange runs in `pymon.exchange` (raw epoll, optionally in worker
processes) and this module only builds the request and judges the answer. It asks in HTTP/1.0 with `Connection: close`, as mon's `http.monitor` and keepalived's
`HTTP_GET` do, so the server answers without chunking and closes.

The verdicts and summaries are the aiohttp path's (`http._judge` and the same wording
for failures); `http.http` picks this path when `eligible(cfg)`; anything else (TLS,
keep-alive, redirects) stays on aiohttp.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from typing import TYPE_CHECKING

from pymon import exchange
from pymon.plugin import Result, Target
from pymon.probes._common import describe, http_timeout_summary

if TYPE_CHECKING:
    from pymon.probes.http import HttpParams



def eligible(cfg: "HttpParams") -> bool:
    return cfg.scheme == "http" and not cfg.keepalive and cfg.redirects == 0 and cfg.cert_days is None


class _Response:
    """What `http._judge` reads of an aiohttp response: status, headers, charset."""

    __slots__ = ("status", "headers", "charset", "content_length")

    def __init__(self, status: int, headers: "_Headers", charset: str | None, content_length: int | None):
        self.status, self.headers, self.charset, self.content_length = status, headers, charset, content_length


class _Headers:
    __slots__ = ("items",)

    def __init__(self, items: list[tuple[str, str]]):
        self.items = items

    def getall(self, name: str, default: list[str]) -> list[str]:
        key = name.lower()
        found = [v for k, v in self.items if k == key]
        return found or default

    def get(self, name: str) -> str | None:
        key = name.lower()
        for k, v in self.items:
            if k == key:
                return v
        return None


class _BadResponse(Exception):
    pass


def _request(target: Target, cfg: "HttpParams") -> bytes:
    host = cfg.host_header
    if host is None:
        host = f"[{target.host}]" if ":" in target.host else target.host
        if cfg.port != 80:
            host = f"{host}:{cfg.port}"
    return (f"{cfg.method} {cfg.path} HTTP/1.0\r\nHost: {host}\r\nUser-Agent: {cfg.agent}\r\n"
            f"Accept: */*\r\nConnection: close\r\n\r\n").encode("latin-1")


def _parse_head(head: bytes) -> _Response:
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/") or len(parts[1]) != 3 or not parts[1].isdigit():
        raise _BadResponse(f"Bad status line {lines[0][:100]!r}")
    items = []
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep:
            if line:
                raise _BadResponse(f"Bad header line {line[:100]!r}")
            continue
        items.append((name.strip().lower(), value.strip()))
    headers = _Headers(items)
    charset = None
    ctype = headers.get("content-type")
    if ctype:
        for param in ctype.split(";")[1:]:
            k, _, v = param.strip().partition("=")
            if k.lower() == "charset":
                charset = v.strip('"') or None
    length = headers.get("content-length")
    return _Response(int(parts[1]), headers, charset,
                     int(length) if length and length.isdigit() else None)


def _dechunk(data: bytes) -> bytes:
    """The chunks of a (possibly cut-off) chunked body; a server should not chunk an
    answer to HTTP/1.0, but some do."""
    out, pos = bytearray(), 0
    while True:
        eol = data.find(b"\r\n", pos)
        if eol < 0:
            break
        try:
            size = int(data[pos:eol].split(b";", 1)[0], 16)
        except ValueError:
            break
        if size == 0:
            break
        out += data[eol + 2:eol + 2 + size]
        pos = eol + 2 + size + 2
    return bytes(out)


async def _addresses(loop: asyncio.AbstractEventLoop, host: str, port: int) -> list[tuple[int, tuple]]:
    try:
        return [(socket.AF_INET6 if ":" in host else socket.AF_INET, (host, port))] if _is_ip(host) else [
            (fam, addr) for fam, _, _, _, addr in
            await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)]
    except socket.gaierror as e:
        raise _Unresolved(str(e)) from None


class _Unresolved(Exception):
    pass


def _is_ip(host: str) -> bool:
    try:
        socket.inet_pton(socket.AF_INET6 if ":" in host else socket.AF_INET, host)
        return True
    except OSError:
        return False


async def check(target: Target, cfg: "HttpParams") -> Result:
    return (await check_many([target], cfg))[0]


async def check_many(targets: list[Target], cfg: "HttpParams") -> list[Result]:
    """All exchanges start at once and are awaited as plain futures: no task per host."""
    loop = asyncio.get_running_loop()
    pending: list[asyncio.Future[exchange.Outcome] | Result] = []
    try:
        for t in targets:
            start = time.monotonic()
            try:
                addrs = await _addresses(loop, t.host, cfg.port)
            except _Unresolved as e:
                pending.append(Result(ok=False, summary=f"cannot resolve {t.host}", detail=str(e),
                                      latency_s=time.monotonic() - start))
                continue
            pending.append(exchange.POOL.submit(
                addrs, _request(t, cfg), cfg.timeout, cfg.method != "HEAD" and cfg.body_regex is not None,
                cfg.max_body, cfg.status.ranges))
        futures = [f for f in pending if isinstance(f, asyncio.Future)]
        if futures:
            await asyncio.wait(futures)
    finally:
        for f in pending:
            if isinstance(f, asyncio.Future):
                f.cancel()  # cancelled from outside: late outcomes are dropped
    return [f if isinstance(f, Result) else _result(t, cfg, f.result()) for t, f in zip(targets, pending)]


def _result(target: Target, cfg: "HttpParams", out: exchange.Outcome) -> Result:
    from pymon.probes.http import _judge

    kind, data, phase, received, latency = out
    if kind == "answer":
        end = data.find(b"\r\n\r\n")
        try:
            resp = _parse_head(data[:end])
        except _BadResponse as e:
            return Result(ok=False, summary=f"bad response: {e}", latency_s=latency)
        body: bytes | None = None
        if cfg.method != "HEAD" and (cfg.body_regex is not None or resp.status not in cfg.status):
            raw = data[end + 4:]
            chunked = (resp.headers.get("transfer-encoding") or "").lower() == "chunked"
            want = cfg.max_body if resp.content_length is None else min(cfg.max_body, resp.content_length)
            body = _dechunk(raw)[:cfg.max_body] if chunked else raw[:want]
        ok, summary = _judge(cfg, resp, body, [])  # type: ignore[arg-type]
        detail = body[:500].decode("utf-8", errors="replace") if not ok and body else ""
        return Result(ok=ok, summary=summary, detail=detail, latency_s=latency, value=float(resp.status))
    if kind == "timeout":
        return Result(ok=False, summary=http_timeout_summary(cfg.timeout, phase, received), latency_s=latency)
    if kind == "closed":
        return Result(ok=False, summary="server disconnected", latency_s=latency)
    if kind == "too_big":
        return Result(ok=False, summary=f"bad response: Got more than {exchange.MAX_HEAD} bytes when reading "
                      "response headers", latency_s=latency)
    if kind == "lost":
        return Result(ok=False, summary="probe worker died during the check", latency_s=latency)
    err = OSError(data, os.strerror(data))
    return Result(ok=False, summary=describe(err, cfg.timeout, target.host), detail=repr(err), latency_s=latency)
