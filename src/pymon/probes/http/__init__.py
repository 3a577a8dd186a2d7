"""`http`: one HTTP(S) request per real server, judged on status, headers, body and cert.

Why these choices:
- A fresh connection per check (unless `keepalive: true`) because a director must know
  that the server still *accepts* connections, not that an old socket still works.
- The body read is bounded (`max_body`) so a misbehaving server cannot make the
  monitor buffer megabytes for every check; redirects are off by default because a
  redirect to a login or error page would otherwise hide the real status.
- The peer certificate is captured during the handshake (see `_CaptureSSLObject`)
  because aiohttp releases the connection before the caller can look at it when the
  whole response already arrived.

Params (all optional): method GET|HEAD, scheme http|https, port (80/443), path "/",
host_header (virtual host; also SNI), verify (true), status (int, list, "200-399" or
"2xx"; default "200-399"), body_regex, header {Name: regex}, max_body (65536),
follow_redirects (or redirects: false, true or max hops), cert_days, keepalive (false),
tls_resume (false: see `exchange.RESUME_S`), agent, timeout (10), argv (mon's http.monitor
options, see `from_mon_args`).

Two paths, one verdict (`verdict.judge`): the lean one (`lean`: HTTP/1.0 on a fresh
connection, plain or TLS, on the exchanges' epoll) for every check without keep-alive,
redirects or `cert_days`; aiohttp for those.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import re
import ssl
import time
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import aiohttp
from aiohttp.client_proto import ResponseHandler

from pymon.plugin import Params, Result, Target, monitor, timeout_unless_late
from pymon.probes.http import lean as _http10
from pymon.probes.http.verdict import PARAM_VALIDATORS, HttpParams, judge, parse_cached  # noqa: F401 (PARAM_VALIDATORS: the probe module's contract)
from pymon.probes._common import bad_params, describe, first_line, http_timeout_summary

# --- TLS: cached contexts (loading the CA store is slow: once per verify mode) and peer-cert capture ---

_PEER_CERTS: contextvars.ContextVar[list[bytes]] = contextvars.ContextVar("pymon_http_peer_certs")


# --- where a check got to, so that a timeout says which fault it was ---


@dataclass
class _Progress:
    """Phase of one request: connect -> tls (https) -> response -> body; and the bytes
    received. A blackholed address, a stalled TLS handshake, a server that accepts and
    never answers and one that drips its response all end in a timeout: this tells
    them apart. Updated from the transport callbacks, which run in a copy of the
    check's context (so they see this check's object)."""

    phase: str = "connect"
    received: int = 0


_PROGRESS: contextvars.ContextVar[_Progress] = contextvars.ContextVar("pymon_http_progress")


class _CountingHandler(ResponseHandler):
    """aiohttp's protocol, noting the connection and the bytes received in _Progress."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        progress = _PROGRESS.get(None)
        if progress is not None and progress.phase in ("connect", "tls"):
            progress.phase = "response"
        super().connection_made(transport)

    def data_received(self, data: bytes) -> None:
        progress = _PROGRESS.get(None)
        if progress is not None:
            progress.received += len(data)
        super().data_received(data)


class _CaptureSSLObject(ssl.SSLObject):
    """Records the DER peer certificate into the current check's list at handshake."""

    def do_handshake(self) -> None:
        progress = _PROGRESS.get(None)
        if progress is not None and progress.phase == "connect":
            progress.phase = "tls"  # the first call comes once TCP is connected
        super().do_handshake()
        sink = _PEER_CERTS.get(None)
        der = self.getpeercert(binary_form=True)
        if sink is not None and der:
            sink.append(der)


@lru_cache(maxsize=2)
def _ssl_context(verify: bool) -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    if not verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    ctx.sslobject_class = _CaptureSSLObject
    return ctx


# aiohttp's own timer would cancel the request whenever the loop saw it late: the one
# deadline is `timeout_unless_late`'s, around the whole request
_NO_CLIENT_TIMEOUT = aiohttp.ClientTimeout(total=None)

# --- sessions: throwaway by default, shared per (loop, host, params) with keepalive ---

_SESSIONS: dict[tuple[int, str, HttpParams], tuple[aiohttp.ClientSession, list[bytes]]] = {}


def _new_session(cfg: HttpParams) -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(force_close=not cfg.keepalive, limit=0, ttl_dns_cache=None)
    connector._factory = functools.partial(_CountingHandler, loop=asyncio.get_running_loop())  # see _Progress
    return aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.DummyCookieJar(), trust_env=False)


def _shared_session(host: str, cfg: HttpParams) -> tuple[aiohttp.ClientSession, list[bytes]]:
    loop = asyncio.get_running_loop()
    key = (id(loop), host, cfg)
    entry = _SESSIONS.get(key)
    if entry is None or entry[0].closed or entry[0].connector is None:
        entry = (_new_session(cfg), [])
        _SESSIONS[key] = entry
    return entry


async def close_sessions() -> None:
    """Close the keepalive sessions of the running loop. Call at shutdown and after a
    config reload: sessions are keyed by (host, params), so ones whose params left the
    config stay open until then."""
    loop_id = id(asyncio.get_running_loop())
    for key in [k for k in _SESSIONS if k[0] == loop_id]:
        session, _ = _SESSIONS.pop(key)
        await session.close()


def _url(host: str, cfg: HttpParams) -> str:
    bracketed = f"[{host}]" if ":" in host else host
    return f"{cfg.scheme}://{bracketed}:{cfg.port}{cfg.path}"


def _describe_client_error(e: BaseException, cfg: HttpParams, host: str) -> str:
    if isinstance(e, aiohttp.ClientConnectorCertificateError):
        err = e.certificate_error
        return f"certificate verify failed: {getattr(err, 'verify_message', None) or err}"
    if isinstance(e, aiohttp.ClientSSLError):
        return f"TLS error: {first_line(str(getattr(e, 'os_error', e)))}"
    dns_error = getattr(aiohttp, "ClientConnectorDNSError", ())
    if dns_error and isinstance(e, dns_error):
        return f"cannot resolve {host}"
    if isinstance(e, aiohttp.ClientConnectorError):
        return describe(e.os_error, cfg.timeout, host)
    if isinstance(e, aiohttp.TooManyRedirects):
        return f"more than {cfg.redirects} redirects"
    if isinstance(e, aiohttp.ServerDisconnectedError):
        return "server disconnected"
    if isinstance(e, aiohttp.ClientPayloadError):
        return f"bad response body: {first_line(str(e))}"
    if isinstance(e, aiohttp.ClientResponseError):
        return f"bad response: {first_line(e.message)}"
    return describe(e, cfg.timeout, host)


async def _read_bounded(resp: aiohttp.ClientResponse, limit: int) -> bytes:
    """At most `limit` bytes of the body; the rest is never read (the connection is
    closed), so a 1 GB body costs one buffer of `limit`."""
    buf = bytearray()
    while len(buf) < limit:
        chunk = await resp.content.read(limit - len(buf))
        if not chunk:
            break
        buf += chunk
    return bytes(buf)


async def check(target: Target, cfg: HttpParams) -> Result:
    """One request; every failure becomes a Result. Exposed for callers with parsed params."""
    certs: list[bytes] = []
    _PEER_CERTS.set(certs)
    progress = _Progress()
    _PROGRESS.set(progress)
    if cfg.keepalive:
        session, last_certs = _shared_session(target.host, cfg)
    else:
        session, last_certs = _new_session(cfg), []
    headers = {"User-Agent": cfg.agent}
    kwargs: dict[str, Any] = {}
    if cfg.host_header:
        headers["Host"] = cfg.host_header
        if cfg.scheme == "https":
            kwargs["server_hostname"] = cfg.host_header.rsplit(":", 1)[0] if "]" not in cfg.host_header else None
    if cfg.scheme == "https":
        kwargs["ssl"] = _ssl_context(cfg.verify)
    start = time.monotonic()
    detail = ""
    try:
        async with timeout_unless_late(cfg.timeout):
            try:
                async with session.request(
                    cfg.method, _url(target.host, cfg), headers=headers,
                    allow_redirects=cfg.redirects > 0, max_redirects=max(cfg.redirects, 1),
                    timeout=_NO_CLIENT_TIMEOUT, **kwargs,
                ) as resp:
                    progress.phase = "body"
                    progress.received = 0
                    body = None
                    want_body = cfg.method != "HEAD" and (cfg.body_regex is not None or resp.status not in cfg.status)
                    if want_body:
                        body = await _read_bounded(resp, cfg.max_body)
                    if certs:
                        last_certs[:] = certs
                    ok, summary = judge(cfg, resp, body, certs or last_certs)
                    if not ok and body:
                        detail = body[:500].decode("utf-8", errors="replace")
                    return Result(ok=ok, summary=summary, detail=detail,
                                  latency_s=time.monotonic() - start, value=float(resp.status))
            finally:
                if not cfg.keepalive:
                    await session.close()
    except (asyncio.TimeoutError, TimeoutError):
        return Result(ok=False, summary=http_timeout_summary(cfg.timeout, progress.phase, progress.received), latency_s=time.monotonic() - start)
    except Exception as e:  # probes never raise
        return Result(ok=False, summary=_describe_client_error(e, cfg, target.host),
                      detail=repr(e), latency_s=time.monotonic() - start)


async def http_many(targets: list[Target], params: Params) -> dict[str, Result]:
    """`http` for a watch of several real servers (an LVS virtual service's)."""
    try:
        cfg = parse_cached(params)
    except ValueError as e:
        return {t.host: bad_params(e) for t in targets}
    if _http10.eligible(cfg):
        results = await _http10.check_many(targets, cfg)
    else:
        results = await asyncio.gather(*(check(t, cfg) for t in targets))
    return {t.host: r for t, r in zip(targets, results)}


http_start = _http10.start  # the callback form for the lean path (plugin.Monitor.start); anything else is awaited


@monitor("http", many=http_many, start=http_start)
async def http(target: Target, params: Params) -> Result:
    """HTTP(S) check of one host; see the module docstring for params."""
    try:
        cfg = parse_cached(params)
    except ValueError as e:
        return bad_params(e)
    if _http10.eligible(cfg):  # plain http, fresh connection, no redirects: the lean path
        return await _http10.check(target, cfg)
    return await check(target, cfg)
