"""The lean path of the `http` probe: HTTP/1.0 GET/HEAD on a fresh connection, plain or TLS.

The common director check (no keep-alive, no redirects, no certificate expiry check)
needs one connect, (a TLS handshake,) one write and one bounded read. Through aiohttp that
costs a session, a connector, a request and a response object per check (~0.5 ms of
CPU); here the exchange runs in `pymon.probes.http.exchange` (raw epoll, in the loop or in worker
processes) and this module only builds the request and judges the answer. It asks in HTTP/1.0 with `Connection: close`, as mon's `http.monitor` and keepalived's
`HTTP_GET` do, so the server answers without chunking and closes.

The verdicts and summaries are the aiohttp path's (`verdict.judge` and the same wording
for failures); `http.http` picks this path when `eligible(cfg)`; anything else
(keep-alive, redirects, `cert_days`) stays on aiohttp.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time

from pymon.probes.http import exchange, pool
from pymon.plugin import Cancel, Params, Result, ResultsDone, Target
from pymon.probes._common import describe, http_timeout_summary
from pymon.probes.http.verdict import HttpParams, judge as _judge, parse_cached



def eligible(cfg: "HttpParams") -> bool:
    return not cfg.keepalive and cfg.redirects == 0 and cfg.cert_days is None


class _Response:
    """What `verdict.judge` reads of an aiohttp response: status, headers, charset."""

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
    """A host's request: built once per plan (`_PLANS`), or per check of a host given by name."""
    host = cfg.host_header
    if host is None:
        host = f"[{target.host}]" if ":" in target.host else target.host
        if cfg.port != (443 if cfg.scheme == "https" else 80):
            host = f"{host}:{cfg.port}"
    return (f"{cfg.method} {cfg.path} HTTP/1.0\r\nHost: {host}\r\nUser-Agent: {cfg.agent}\r\n"
            f"Accept: */*\r\nConnection: close\r\n\r\n").encode("latin-1")


def digits(s: str | bytes, most: int = 18) -> int | None:
    """A decimal number made of ASCII digits only, at most `most` of them, else None.
    str.isdigit() accepts '²' and int() then raises; int() also refuses more than 4,300
    digits: a server's header must never raise in here."""
    if 0 < len(s) <= most and s.isascii() and s.isdigit():
        return int(s)
    return None


def _parse_head(head: bytes) -> _Response:
    # lines end with CRLF, or with a bare LF as aiohttp and mon's http.monitor accept
    lines = head.decode("latin-1").replace("\r\n", "\n").split("\n")
    parts = lines[0].split(" ", 2)
    code = parts[1] if len(parts) > 1 else ""
    if not parts[0].startswith("HTTP/") or len(code) != 3 or not (code.isascii() and code.isdigit()):
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
    return _Response(int(code), headers, charset, digits(length) if length else None)


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


Addrs = list[tuple[int, tuple[str, int]]]
_LITERAL: dict[tuple[str, int], Addrs | None] = {}


def _literal(host: str, port: int) -> Addrs | None:
    """The address of a host given as an IP literal (the usual real server), else None."""
    key = (host, port)
    found = _LITERAL.get(key, False)
    if found is False:
        fam = socket.AF_INET6 if ":" in host else socket.AF_INET
        try:
            socket.inet_pton(fam, host)
            found = [(fam, key)]  # the key is the address: one tuple for both
        except OSError:
            found = None
        if len(_LITERAL) >= 65536:
            _LITERAL.clear()
        _LITERAL[key] = found
    return found  # type: ignore[return-value]


# A check's parsed params, exchanges (addresses, request) and verdict spec, planned once
# per targets list and params dict: both are the service's own for its spec's life
# (ServiceSpec.targets, .probe_params), so each check finds its plan by identity in one
# lookup, where it went through ten calls and a cache for each part (docs/performance.md).
# The params are None when the check is not the lean path's: other options, bad params,
# or a host name to resolve first.
_Plan = tuple[list[Target], Params, "HttpParams | None", tuple[tuple[Addrs, bytes], ...], exchange.How]
_PLANS: dict[int, _Plan] = {}


def start(targets: list[Target], params: Params, done: ResultsDone) -> Cancel | None:
    """The callback form (plugin.Monitor.start): the exchanges start now and `done`
    gets the results in target order. None when the params are not the lean path's
    (`eligible`) or bad (the awaited form says how), or a host is a name to resolve
    first: the caller then awaits the probe, which resolves it (`check_many`)."""
    plan = _PLANS.get(id(targets))
    if plan is None or plan[0] is not targets or plan[1] is not params:
        plan = _plan(targets, params)
    _, _, cfg, exchanges, how = plan
    if cfg is None:
        return None
    return pool.POOL.submit(exchanges, how, _Results(targets, cfg, done), time.monotonic())


def _plan(targets: list[Target], params: Params) -> _Plan:
    try:
        cfg: HttpParams | None = parse_cached(params)
    except ValueError:
        cfg = None
    addrs = [None] if cfg is None or not eligible(cfg) else [_literal(t.host, cfg.port) for t in targets]
    if None in addrs:
        plan = (targets, params, None, (), None)
    else:
        plan = (targets, params, cfg, _exchanges(targets, addrs, cfg), _how(cfg, None))  # type: ignore[arg-type]
    if len(_PLANS) >= 65536:
        _PLANS.clear()
    _PLANS[id(targets)] = plan  # holding targets keeps its id from being reused
    return plan  # type: ignore[return-value]


def _tls(cfg: "HttpParams", name: str | None) -> exchange.Tls:
    """The exchange's TLS spec: the server name to send and verify is the host header's
    (without its port), else `name` (a host given by name), else the address itself."""
    if cfg.scheme != "https":
        return None
    hh = cfg.host_header
    if hh:
        name = hh[1:].split("]", 1)[0] if hh.startswith("[") else hh.rsplit(":", 1)[0]
    return (cfg.verify, name, cfg.tls_resume)


_HOWS: dict[exchange.How, exchange.How] = {}


def _how(cfg: "HttpParams", name: str | None) -> exchange.How:
    """How the exchanges of a check are judged: built once per plan (`_PLANS`), or per
    check of a host given by name; equal ones held once (10,000 watches with their own
    paths have one)."""
    how = (cfg.timeout, cfg.method != "HEAD" and cfg.body_regex is not None, cfg.max_body, cfg.status.ranges,
           bool(cfg.header), _tls(cfg, name))
    if len(_HOWS) >= 4096:
        _HOWS.clear()
    return _HOWS.setdefault(how, how)


def _exchanges(targets: list[Target], addrs: list[Addrs], cfg: "HttpParams") -> tuple[tuple[Addrs, bytes], ...]:
    return tuple((a, _request(t, cfg)) for t, a in zip(targets, addrs))  # a tuple: no list's spare room per plan


def _start(targets: list[Target], addrs: list[Addrs], cfg: "HttpParams", done: ResultsDone,
           name: str | None = None) -> Cancel:
    how = _how(cfg, name)
    return pool.POOL.submit(_exchanges(targets, addrs, cfg), how,
                            _Results(targets, cfg, done), time.monotonic())


class _Results:
    """One check's results as its exchanges end (called with the exchange's index and
    outcome); `done` gets them all. Slots, not a closure's cells: fewer objects per check
    in flight for the garbage collector to walk."""

    __slots__ = ("targets", "cfg", "done", "results", "left")

    def __init__(self, targets: list[Target], cfg: "HttpParams", done: ResultsDone):
        self.targets, self.cfg, self.done = targets, cfg, done
        self.results: list[Result] = [None] * len(targets)  # type: ignore[list-item]
        self.left = len(targets)

    def __call__(self, i: int, out: exchange.Outcome) -> None:
        if out[0] == "status":  # accepted, and nothing else to judge: `_judge`'s verdict without the head
            code = out[1]
            self.results[i] = Result(True, _OK.get(code) or f"status {code}", "", out[4], float(code))  # positional
        else:
            try:
                self.results[i] = _result(self.targets[i], self.cfg, out)
            except Exception as e:  # whatever a server sent, this host fails and the check ends
                self.results[i] = Result(False, f"bad response: {type(e).__name__}: {e}"[:300], "", out[4])
        self.left -= 1
        if not self.left:
            self.done(self.results)


async def check(target: Target, cfg: "HttpParams") -> Result:
    return (await check_many([target], cfg))[0]


async def check_many(targets: list[Target], cfg: "HttpParams") -> list[Result]:
    """The awaitable form: names are resolved first (through the loop's resolver)."""
    loop = asyncio.get_running_loop()
    results: list[Result | None] = []
    addrs: list[Addrs] = []
    for t in targets:
        found = _literal(t.host, cfg.port)
        if found is None:
            began = time.monotonic()
            try:
                found = [(fam, addr) for fam, _, _, _, addr in await loop.getaddrinfo(
                    t.host, cfg.port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)]
            except socket.gaierror as e:
                results.append(Result(ok=False, summary=f"cannot resolve {t.host}", detail=str(e),
                                      latency_s=time.monotonic() - began))
                continue
        results.append(None)
        addrs.append(found)
    todo = [i for i, r in enumerate(results) if r is None]
    # TLS verifies a host given by name against that name: each such host is an exchange of its own
    named = [i for i in todo
             if cfg.scheme == "https" and not cfg.host_header and _literal(targets[i].host, cfg.port) is None]
    groups: list[tuple[list[int], str | None]] = [([i], targets[i].host) for i in named]
    rest = [i for i in todo if i not in named]
    if rest:
        groups.append((rest, None))
    at = dict(zip(todo, addrs))
    futs: list[asyncio.Future[list[Result]]] = []
    cancels: list[Cancel] = []
    try:
        for group, name in groups:
            fut: asyncio.Future[list[Result]] = loop.create_future()
            futs.append(fut)
            cancels.append(_start([targets[i] for i in group], [at[i] for i in group], cfg,
                                  lambda rs, fut=fut: fut.done() or fut.set_result(rs), name))  # type: ignore[misc]
        for (group, _), fut in zip(groups, futs):
            for i, r in zip(group, await fut):
                results[i] = r
    finally:
        for cancel in cancels:
            cancel()  # cancelled from outside: late outcomes are dropped
    return results  # type: ignore[return-value]


_OK = {code: f"status {code}" for code in range(200, 400)}


def _result(target: Target, cfg: "HttpParams", out: exchange.Outcome) -> Result:
    """The Result of any outcome but "status" (`_Results` makes that one itself)."""
    kind, data, phase, received, latency = out
    if kind == "answer":
        end, sep = exchange.head_end(data)
        try:
            resp = _parse_head(data[:end])
        except _BadResponse as e:
            return Result(ok=False, summary=f"bad response: {e}", latency_s=latency)
        body: bytes | None = None
        if cfg.method != "HEAD" and (cfg.body_regex is not None or resp.status not in cfg.status):
            raw = data[end + sep:]
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
    if kind == "tls":
        return Result(ok=False, summary=data, latency_s=latency)
    if kind == "lost":
        return Result(ok=False, summary="probe worker died during the check", latency_s=latency)
    if kind == "error":
        return Result(ok=False, summary=f"bad response: {data}", latency_s=latency)
    err = OSError(data, os.strerror(data))
    return Result(ok=False, summary=describe(err, cfg.timeout, target.host), detail=repr(err), latency_s=latency)
