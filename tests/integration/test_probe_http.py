"""The http probe against real aiohttp servers on loopback, plain and TLS."""

from __future__ import annotations

import asyncio
import socket
import time

import pytest
from aiohttp import web

from httpserver import Server, free_port
from pymon.plugin import Result, Target
from pymon.probes import validate_params
from pymon.probes import http as probe
from pymon.probes.http import exchange, verdict

T = Target("127.0.0.1", "web", "http")


# --- servers -------------------------------------------------------------------------


async def check(server: Server, **params: object) -> Result:
    return await probe.http(T, {"port": server.port, "timeout": 5, **params})


# --- plain HTTP ----------------------------------------------------------------------


async def test_ok(server: Server) -> None:
    r = await check(server)
    assert r.ok, r
    assert r.summary == "status 200"
    assert r.value == 200.0 and r.latency_s > 0


async def test_connection_refused() -> None:
    r = await probe.http(T, {"port": free_port(), "timeout": 2})
    assert not r.ok and r.summary == "connection refused"


async def test_timeout(server: Server) -> None:
    start = time.monotonic()
    r = await check(server, path="/slow", timeout=0.3)
    assert not r.ok and r.summary == "timeout after 0.3s waiting for a response (connected, request sent)"
    assert time.monotonic() - start < 2


async def test_status_range_and_lists(server: Server) -> None:
    r = await check(server, path="/status/503")
    assert not r.ok and r.summary == "status 503 not in 200-399"
    assert "maintenance" in r.detail
    assert (await check(server, path="/status/503", status=503)).ok
    assert (await check(server, path="/status/204", status=[200, 204])).ok
    assert (await check(server, path="/status/404", status="4xx")).ok
    r = await check(server, path="/status/500", status=[200, "300-302"])
    assert r.summary == "status 500 not in 200,300-302"
    r = await check(server, path="/status/201", status=200)
    assert r.summary == "status 201 expected 200"


async def test_body_regex(server: Server) -> None:
    assert (await check(server, body_regex=r"^all ok")).ok
    r = await check(server, body_regex="ok$x")
    assert not r.ok and r.summary == "body does not match 'ok$x'"


async def test_header_match(server: Server) -> None:
    assert (await check(server, header={"X-App": r"^pymon-test/\d"})).ok
    r = await check(server, header={"x-app": "^nginx"})
    assert not r.ok and r.summary == "header x-app 'pymon-test/1.2' does not match '^nginx'"
    r = await check(server, header={"X-Missing": "."})
    assert not r.ok and r.summary == "header X-Missing missing"


async def test_body_read_is_bounded(server: Server) -> None:
    start = time.monotonic()
    r = await check(server, path="/big", body_regex="END", max_body=1000)
    assert not r.ok and r.summary.startswith("body does not match 'END' in the first 1000 bytes"), r
    assert len(r.detail) <= 500
    assert (await check(server, path="/big", body_regex="^x{1000}")).ok
    # the 50 MiB body is never read: both checks return long before it could be sent
    assert time.monotonic() - start < 2


async def test_redirects_off_by_default(server: Server) -> None:
    assert (await check(server, path="/redirect")).summary == "status 302"
    r = await check(server, path="/redirect", status=200)
    assert not r.ok and r.summary == "status 302 expected 200"
    r = await check(server, path="/redirect", status=200, redirects=True)
    assert r.ok and r.summary == "status 200"


async def test_host_header_and_head(server: Server) -> None:
    r = await check(server, path="/vhost", host_header="www.example.test", body_regex=r"^www\.example\.test$")
    assert r.ok, r
    assert (await check(server, method="HEAD")).ok
    assert (await check(server, method="head", path="/status/500")).summary == "status 500 not in 200-399"


async def test_fresh_connection_unless_keepalive(server: Server) -> None:
    for _ in range(3):
        assert (await check(server)).ok
    assert len(set(server.peers)) == 3
    server.peers.clear()
    try:
        for _ in range(3):
            assert (await check(server, keepalive=True)).ok
        assert len(set(server.peers)) == 1
    finally:
        await probe.close_sessions()


async def test_ipv6_on_the_aiohttp_path(server: Server) -> None:
    """The lean path's IPv6 is test_probe_http_lean.py's; this is aiohttp's (TLS,
    keep-alive and redirects go there)."""
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    s6 = await Server().start(hosts=["::1"])
    try:
        r = await probe.check(Target("::1", "g", "s"), verdict.parse({"port": s6.port, "timeout": 2}))
        assert r.ok, r
    finally:
        await s6.stop()


async def test_mon_args(server: Server) -> None:
    argv = ["-p", str(server.port), "-t", "3", "-u", "/vhost", "-a", "mon/1.2", "-m", "127.0.0.1"]
    assert verdict.from_mon_args(argv) == {"port": str(server.port), "timeout": "3", "path": "/vhost",
                                         "agent": "mon/1.2", "body_regex": "127.0.0.1", "status": "100-599"}
    assert validate_params("http", {"argv": argv}) == []
    r = await probe.http(T, {"argv": argv})
    assert r.ok, r
    # explicit params override argv; the scheduler adds timeout itself
    r = await probe.http(T, {"argv": argv, "path": "/status/500", "body_regex": "maint", "timeout": 2})
    assert r.ok, r  # as in mon, a -m match decides alone
    r = await probe.http(T, {"argv": argv, "path": "/status/500", "status": "2xx", "timeout": 2})
    assert r.summary == "status 500 not in 2xx"
    # without -m, mon's good statuses: 200, 301, 302, 401
    r = await probe.http(T, {"argv": ["-p", str(server.port), "-u", "/status/401", "-o"]})
    assert r.ok, r
    r = await probe.http(T, {"argv": ["-p", str(server.port), "-u", "/status/204"]})
    assert r.summary == "status 204 not in 200,301,302,401"
    assert verdict.from_mon_args(["-u", "https://x:8443/a?b=1"]) == {"path": "/a?b=1", "scheme": "https",
                                                                  "port": 8443, "status": verdict.MON_STATUS}


async def test_bad_params_fail_without_raising() -> None:
    assert validate_params("http", {"status": "abc", "colour": 1, "scheme": "gopher", "body_regex": "("}) == [
        "scheme: must be one of http, https, got 'gopher'",
        "status: expected a code, list or range like 200-399, got 'abc'",
        "body_regex: bad regex '(': missing ), unterminated subpattern at position 0",
        "unknown param: colour",
    ]
    assert validate_params("http", {"argv": ["-x"]}) == ["argv: http.monitor: option -x not recognized"]
    assert validate_params("http", {"cert_days": 10}) == ["cert_days: needs scheme: https"]
    r = await probe.http(T, {"port": "eighty"})
    assert not r.ok and r.summary == "bad params: port: expected an integer, got 'eighty'"


async def test_hundred_hosts_concurrently() -> None:
    hosts = [f"127.0.0.{i}" for i in range(1, 101)]
    s = await Server().start(hosts=hosts)
    try:
        start = time.monotonic()
        results = await asyncio.gather(*(probe.http(Target(h, "farm", "http"), {"port": s.port, "timeout": 5})
                                         for h in hosts))
        elapsed = time.monotonic() - start
        assert all(r.ok for r in results), [r for r in results if not r.ok][:3]
        assert elapsed < 1.5, elapsed
    finally:
        await s.stop()


# --- HTTPS ---------------------------------------------------------------------------


@pytest.fixture
def trust_test_ca(pki: dict[str, object], monkeypatch: pytest.MonkeyPatch):
    """Make the probe's verifying context trust the test CA (as if installed system-wide)."""
    monkeypatch.setenv("SSL_CERT_FILE", str(pki["ca"]))
    probe._ssl_context.cache_clear()
    exchange.tls_context.cache_clear()
    yield
    monkeypatch.delenv("SSL_CERT_FILE")
    probe._ssl_context.cache_clear()
    exchange.tls_context.cache_clear()


async def tls_server(pki: dict[str, object], which: str) -> Server:
    return await Server().start(ssl_context=pki[which])  # type: ignore[arg-type]


async def test_https_untrusted_cert_fails_verification(pki: dict[str, object]) -> None:
    s = await tls_server(pki, "good")
    try:
        r = await probe.http(T, {"scheme": "https", "port": s.port, "timeout": 3})
        assert not r.ok and r.summary.startswith("certificate verify failed: "), r
        assert "self-signed" in r.summary or "local issuer" in r.summary
        r = await probe.http(T, {"scheme": "https", "port": s.port, "timeout": 3, "verify": False})
        assert r.ok, r
    finally:
        await s.stop()


async def test_https_verified_with_sni(pki: dict[str, object], trust_test_ca: None) -> None:
    s = await tls_server(pki, "good")
    try:
        params = {"scheme": "https", "port": s.port, "timeout": 3}
        r = await probe.http(T, {**params, "host_header": "www.example.test", "path": "/vhost",
                                 "body_regex": "^www.example.test$", "cert_days": 30})
        assert r.ok, r
        assert r.summary.startswith("status 200, certificate valid 36")
        assert s.sni == ["www.example.test"]
        # a name the certificate does not carry
        r = await probe.http(T, {**params, "host_header": "other.example.test"})
        assert not r.ok and r.summary.startswith("certificate verify failed: Hostname mismatch"), r
    finally:
        await s.stop()


async def test_https_expired(pki: dict[str, object], trust_test_ca: None) -> None:
    s = await tls_server(pki, "expired")
    try:
        params = {"scheme": "https", "port": s.port, "timeout": 3}
        r = await probe.http(T, params)
        assert not r.ok and r.summary == "certificate verify failed: certificate has expired"
        r = await probe.http(T, {**params, "verify": False, "cert_days": 1})
        assert not r.ok and r.summary == "certificate expired 2 days ago"
        assert (await probe.http(T, {**params, "verify": False})).ok
    finally:
        await s.stop()


async def test_https_expiring_soon(pki: dict[str, object], trust_test_ca: None) -> None:
    s = await tls_server(pki, "soon")
    try:
        params = {"scheme": "https", "port": s.port, "timeout": 3}
        r = await probe.http(T, {**params, "cert_days": 7})
        assert not r.ok and r.summary == "certificate expires in 3 days"
        assert (await probe.http(T, {**params, "cert_days": 3})).ok
        assert (await probe.http(T, {**params, "cert_days": 7, "verify": False})).summary == \
            "certificate expires in 3 days"
        # a reused keepalive connection has no new handshake; the cert is remembered
        for _ in range(2):
            r = await probe.http(T, {**params, "cert_days": 7, "keepalive": True})
            assert r.summary == "certificate expires in 3 days"
        await probe.close_sessions()
    finally:
        await s.stop()


async def test_tls_to_plain_server(server: Server) -> None:
    r = await probe.http(T, {"scheme": "https", "port": server.port, "timeout": 3})
    assert not r.ok and r.summary.startswith("TLS error"), r
