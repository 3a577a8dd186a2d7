"""The lean path of the `http` probe: plain HTTP/1.0 GET/HEAD on a fresh connection.

The common director check (`scheme: http`, no keep-alive, no redirects, no
certificate) needs one connect, one write and one bounded read. Through aiohttp that
costs a session, a connector, a request and a response object per check (~0.5 ms of
CPU); here it is a non-blocking socket driven by the loop's `sock_*` calls, which cost
a fraction of that and keep up with 10,000 real servers a second (bench/throughput.py).
It asks in HTTP/1.0 with `Connection: close`, as mon's `http.monitor` and keepalived's
`HTTP_GET` do, so the server answers without chunking and closes.

The verdicts and summaries are the aiohttp path's (`http._judge` and the same wording
for failures); `http.http` picks this path when `eligible(cfg)`; anything else (TLS,
keep-alive, redirects) stays on aiohttp.
"""

from __future__ import annotations

import asyncio
import errno
import socket
import time
from typing import TYPE_CHECKING

from pymon.plugin import Result, Target
from pymon.probes._common import describe, fmt_s

if TYPE_CHECKING:
    from pymon.probes.http import HttpParams

MAX_HEAD = 64 * 1024  # response line + headers; more is a bad response
_RECV = 65536


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


class _Disconnected(Exception):
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
    from pymon.probes.http import _judge

    loop = asyncio.get_running_loop()
    start = time.monotonic()
    phase, received = "connect", 0
    sock: socket.socket | None = None
    try:
        async with asyncio.timeout(cfg.timeout):
            last: OSError | None = None
            for fam, addr in await _addresses(loop, target.host, cfg.port):
                sock = socket.socket(fam, socket.SOCK_STREAM)
                sock.setblocking(False)
                try:
                    await loop.sock_connect(sock, addr)
                    break
                except OSError as e:
                    sock.close()
                    sock, last = None, e
            if sock is None:
                raise last or OSError(errno.EHOSTUNREACH, "no address")
            phase = "response"
            await loop.sock_sendall(sock, _request(target, cfg))
            buf = bytearray()
            while (end := buf.find(b"\r\n\r\n")) < 0:
                if len(buf) > MAX_HEAD:
                    raise _BadResponse("Got more than 65536 bytes when reading response headers")
                chunk = await loop.sock_recv(sock, _RECV)
                if not chunk:
                    raise _Disconnected()
                received += len(chunk)
                buf += chunk
            resp = _parse_head(bytes(buf[:end]))
            body: bytes | None = None
            if cfg.method != "HEAD" and (cfg.body_regex is not None or resp.status not in cfg.status):
                phase, received = "body", len(buf) - end - 4
                chunked = (resp.headers.get("transfer-encoding") or "").lower() == "chunked"
                want = cfg.max_body if resp.content_length is None else min(cfg.max_body, resp.content_length)
                raw = buf[end + 4:]
                while (len(raw) < want or chunked and len(raw) < cfg.max_body + 64) and not (
                        chunked and raw.endswith(b"0\r\n\r\n")):
                    chunk = await loop.sock_recv(sock, _RECV)
                    if not chunk:
                        break
                    received += len(chunk)
                    raw += chunk
                body = _dechunk(bytes(raw))[:cfg.max_body] if chunked else bytes(raw[:want])
        ok, summary = _judge(cfg, resp, body, [])  # type: ignore[arg-type]
        detail = body[:500].decode("utf-8", errors="replace") if not ok and body else ""
        return Result(ok=ok, summary=summary, detail=detail, latency_s=time.monotonic() - start,
                      value=float(resp.status))
    except TimeoutError:
        return Result(ok=False, summary=_timeout_summary(cfg.timeout, phase, received),
                      latency_s=time.monotonic() - start)
    except _Unresolved as e:
        return Result(ok=False, summary=f"cannot resolve {target.host}", detail=str(e),
                      latency_s=time.monotonic() - start)
    except _Disconnected:
        return Result(ok=False, summary="server disconnected", latency_s=time.monotonic() - start)
    except _BadResponse as e:
        return Result(ok=False, summary=f"bad response: {e}", latency_s=time.monotonic() - start)
    except Exception as e:  # probes never raise
        return Result(ok=False, summary=describe(e, cfg.timeout, target.host), detail=repr(e),
                      latency_s=time.monotonic() - start)
    finally:
        if sock is not None:
            sock.close()


def _timeout_summary(timeout: float, phase: str, received: int) -> str:
    """The aiohttp path's wording: which step the check was in when time ran out."""
    t = f"timeout after {fmt_s(timeout)}"
    if phase == "connect":
        return f"{t} connecting"
    if phase == "body":
        return f"{t} reading body ({received} bytes received)"
    if received:
        return f"{t} receiving response headers ({received} bytes received)"
    return f"{t} waiting for a response (connected, request sent)"
