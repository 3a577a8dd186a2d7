"""The `http` probe's params and verdict, shared by its two paths: the aiohttp one
(`http`) and the lean HTTP/1.0 one (`lean`). Here so that both import it and neither
imports the other."""

from __future__ import annotations

import re
import sys
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from pymon import __version__
from pymon.plugin import Params
from pymon.probes._common import ParamReader, validator, compile_regex, parse_opts

DEFAULT_MAX_BODY = 64 * 1024
# `tls_resume` keeps each real server's TLS session, taken from ssl.SSLSocket.session: from
# 3.10 until 3.12.8 and 3.13.1 every read of that property leaks the session's copy in C
# (about 5.5 KB with a P-256 certificate, measured here on 3.11.7, 3.12.1 and 3.13.0).
SESSION_LEAKS = (3, 10) <= sys.version_info[:3] < (3, 12, 8) or sys.version_info[:3] == (3, 13, 0)
DEFAULT_STATUS = "200-399"
AGENT = f"pymon/{__version__}"  # one string for every params that keeps the default


@dataclass(frozen=True, slots=True)
class StatusSpec:
    """Accepted status codes as inclusive ranges, plus the text the user wrote."""

    ranges: tuple[tuple[int, int], ...]
    text: str

    def __contains__(self, code: int) -> bool:
        return any(lo <= code <= hi for lo, hi in self.ranges)


@dataclass(frozen=True, slots=True)  # one per distinct params: 10,000 with own paths
class HttpParams:
    method: str
    scheme: str
    port: int
    path: str
    host_header: str | None
    verify: bool
    status: StatusSpec
    body_regex: re.Pattern[str] | None
    header: tuple[tuple[str, re.Pattern[str]], ...]
    max_body: int
    redirects: int
    cert_days: int | None
    keepalive: bool
    tls_resume: bool
    agent: str
    timeout: float


def _status_range(item: Any) -> tuple[int, int] | None:
    if isinstance(item, int) and not isinstance(item, bool):
        return (item, item) if 100 <= item <= 599 else None
    if not isinstance(item, str):
        return None
    s = item.strip().lower()
    if re.fullmatch(r"[1-5]xx", s):
        return int(s[0]) * 100, int(s[0]) * 100 + 99
    m = re.fullmatch(r"(\d{3})\s*-\s*(\d{3})", s)
    if m and int(m[1]) <= int(m[2]):
        return int(m[1]), int(m[2])
    return (int(s), int(s)) if re.fullmatch(r"\d{3}", s) else None


def parse_status(value: Any) -> StatusSpec:
    """200, [200, 204], "200-399", "2xx", or a list mixing them."""
    items = value if isinstance(value, list) else [value]
    ranges = [_status_range(i) for i in items]
    if not items or None in ranges:
        raise ValueError(f"status: expected a code, list or range like 200-399, got {value!r}")
    text = ",".join(str(i) for i in items)
    spec = StatusSpec(tuple(r for r in ranges if r), text)
    if len(_STATUSES) >= 4096:
        _STATUSES.clear()
    return _STATUSES.setdefault(spec, spec)


# Equal status specs held once: 10,000 services with their own paths parse 10,000
# params, mostly with the default status (~200 bytes each otherwise).
_STATUSES: dict[StatusSpec, StatusSpec] = {}


MON_STATUS = [200, 301, 302, 401]


def from_mon_args(argv: list[str]) -> Params:
    """mon's `http.monitor [-p port] [-t secs] [-u url] [-a agent] [-m regex] [-o]` as params.

    As in mon, the good statuses are 200, 301, 302 and 401, a `-m` match alone decides
    (any status), and the default timeout is 30 s (the scheduler passes the service's).
    Unlike mon, `-m` is searched in the body only, not in the headers. -o is ignored."""
    opts = parse_opts(argv, {"-p": "port", "-t": "timeout", "-u": "path", "-a": "agent", "-m": "body_regex"},
                      "http.monitor", flags=("-o",))
    opts.pop("-o", None)
    out: Params = {"status": "100-599" if "body_regex" in opts else MON_STATUS, **opts}
    url = opts.get("path")
    if url and "://" in url:
        parts = urlsplit(url)
        out["scheme"] = parts.scheme
        if parts.port and "port" not in opts:
            out["port"] = parts.port
        out["path"] = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return out


def parse(params: Params) -> HttpParams:
    base = from_mon_args(params["argv"]) if params.get("argv") is not None else {}
    r = ParamReader(params, base)
    scheme = r.string("scheme", "http", ("http", "https"))
    path = r.string("path", "/")
    if path is not None and not path.startswith("/"):
        r.error(f"path: must start with '/', got {path!r}")
    status = DEFAULT_STATUS
    try:
        status_spec = parse_status(r.raw("status", status))
    except ValueError as e:
        r.error(str(e))
        status_spec = parse_status(status)
    headers: list[tuple[str, re.Pattern[str]]] = []
    raw_headers = r.raw("header", {})
    if not isinstance(raw_headers, dict):
        r.error(f"header: expected a mapping of header name to regex, got {raw_headers!r}")
    else:
        for name, pattern in raw_headers.items():
            rx = compile_regex(f"header {name}", str(pattern), r.errors)
            if rx is not None:
                headers.append((str(name), rx))
    # `follow_redirects` is the documented name, `redirects` the older one: either, not both
    redirects = r.raw("follow_redirects", None)
    older = r.raw("redirects", None)
    if redirects is not None and older is not None:
        r.error("follow_redirects and redirects are the same param: give one")
    redirects = older if redirects is None else redirects
    redirects = False if redirects is None else redirects
    if isinstance(redirects, bool):
        redirects = 10 if redirects else 0
    elif not isinstance(redirects, int) or redirects < 0:
        r.error(f"follow_redirects: expected true, false or a number of hops, got {redirects!r}")
        redirects = 0
    cfg = HttpParams(
        method=r.string("method", "GET", ("GET", "HEAD"), upper=True),
        scheme=scheme,
        port=r.port("port", 443 if scheme == "https" else 80) or 0,
        path=path,
        host_header=r.string("host_header", None),
        verify=r.boolean("verify", True),
        status=status_spec,
        body_regex=r.regex("body_regex"),
        header=tuple(headers),
        max_body=r.number("max_body", DEFAULT_MAX_BODY, integer=True, lo=0),
        redirects=redirects,
        cert_days=r.number("cert_days", None, integer=True, lo=0),
        keepalive=r.boolean("keepalive", False),
        tls_resume=r.boolean("tls_resume", False),
        agent=r.string("agent", AGENT),
        timeout=r.timeout(),
    )
    if cfg.cert_days is not None and cfg.scheme != "https":
        r.error("cert_days: needs scheme: https")
    if cfg.tls_resume and cfg.scheme != "https":
        r.error("tls_resume: needs scheme: https")
    elif cfg.tls_resume and (cfg.keepalive or cfg.redirects or cfg.cert_days is not None):
        r.error("tls_resume: not with keepalive, follow_redirects or cert_days")
    elif cfg.tls_resume and SESSION_LEAKS:
        r.error(f"tls_resume: Python {sys.version.split()[0]}'s ssl module leaks memory with every TLS session "
                "it hands out (fixed in 3.12.8 and 3.13.1)")
    if cfg.body_regex is not None and cfg.method == "HEAD":
        r.error("body_regex: a HEAD response has no body")
    r.finish()
    return cfg


validate_params = validator(parse)
PARAM_VALIDATORS = {"http": validate_params}


# A service's params are the same dict every check (ServiceSpec.probe_params): found by
# identity first, then by text, so 10,000 services with the same params share one parse.
_BY_ID: dict[int, tuple[Params, HttpParams]] = {}
_PARSED: dict[str, HttpParams] = {}


def parse_cached(params: Params) -> HttpParams:
    hit = _BY_ID.get(id(params))
    if hit is not None and hit[0] is params:
        return hit[1]
    key = repr(params)
    cfg = _PARSED.get(key)
    if cfg is None:
        cfg = parse(params)
        if len(_PARSED) >= 4096:
            _PARSED.clear()
        _PARSED[key] = cfg
    if len(_BY_ID) >= 65536:
        _BY_ID.clear()
    _BY_ID[id(params)] = (params, cfg)  # holding params keeps its id from being reused
    return cfg


def _cert_not_after(der: bytes) -> float:
    from cryptography import x509  # only needed when cert_days is set

    return x509.load_der_x509_certificate(der).not_valid_after_utc.timestamp()


def _truncated(resp: aiohttp.ClientResponse, body: bytes, limit: int) -> str:
    """' in the first N bytes (of M)' when the read stopped at max_body, else ''."""
    if len(body) < limit:
        return ""
    size = resp.content_length
    return f" in the first {limit} bytes" + (f" (of {size})" if size and size > limit else "")


def judge(cfg: HttpParams, resp: aiohttp.ClientResponse, body: bytes | None,
           certs: list[bytes]) -> tuple[bool, str]:
    if resp.status not in cfg.status:
        sep = "expected" if len(cfg.status.ranges) == 1 and cfg.status.ranges[0][0] == cfg.status.ranges[0][1] else "not in"
        return False, f"status {resp.status} {sep} {cfg.status.text}"
    for name, rx in cfg.header:
        values = resp.headers.getall(name, [])
        if not values:
            return False, f"header {name} missing"
        if not any(rx.search(v) for v in values):
            return False, f"header {name} {values[0]!r} does not match {rx.pattern!r}"
    if cfg.body_regex is not None:
        text = (body or b"").decode(resp.charset or "utf-8", errors="replace")
        if not cfg.body_regex.search(text):
            return False, f"body does not match {cfg.body_regex.pattern!r}{_truncated(resp, body or b'', cfg.max_body)}"
    if cfg.cert_days is not None:
        if not certs:
            return False, "no peer certificate"
        left = _cert_not_after(certs[-1]) - time.time()
        if left < 0:
            return False, f"certificate expired {int(-left // 86400)} days ago"
        days = int(left // 86400)
        if days < cfg.cert_days:
            return False, f"certificate expires in {days} day{'s' if days != 1 else ''}"
        return True, f"status {resp.status}, certificate valid {days} more days"
    return True, f"status {resp.status}"
