"""HTTPS on the lean path: a real TLS server on loopback, in the daemon's loop and in
probe workers; verdicts as on the aiohttp path, certificate failures named, sessions
resumed (counted by the server) and not resumed when asked or when too old."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from httpserver import Server
from pymon.plugin import Target
from pymon.probes import http as probe
from pymon.probes.http import exchange, pool, verdict
from pymon.probes.http import lean as _http10

from test_probe_http_lean import CASES

T = Target("127.0.0.1", "web", "https")


@pytest.fixture(autouse=True, params=[0, 1], ids=["in-loop", "workers"])
def placement(request: pytest.FixtureRequest, pki: dict[str, object], monkeypatch: pytest.MonkeyPatch) -> Iterator[int]:
    """The test CA trusted (as if installed system-wide; workers inherit it when they start)."""
    monkeypatch.setenv("SSL_CERT_FILE", str(pki["ca"]))
    probe._ssl_context.cache_clear()
    exchange.tls_context.cache_clear()
    pool.configure(request.param, None)
    yield request.param
    pool.configure(0, None)
    monkeypatch.delenv("SSL_CERT_FILE")
    probe._ssl_context.cache_clear()
    exchange.tls_context.cache_clear()


async def tls_server(pki: dict[str, object], which: str = "good") -> Server:
    return await Server().start(ssl_context=pki[which])  # type: ignore[arg-type]


@pytest.mark.parametrize("params", CASES, ids=[str(c) for c in CASES])
async def test_lean_https_agrees_with_aiohttp(pki: dict[str, object], params: dict) -> None:
    s = await tls_server(pki)
    try:
        cfg = verdict.parse({"scheme": "https", "port": s.port, "timeout": 5, **params})
        assert _http10.eligible(cfg)
        lean, full = await _http10.check(T, cfg), await probe.check(T, cfg)
        assert (lean.ok, lean.summary, lean.value, lean.detail) == (full.ok, full.summary, full.value, full.detail)
    finally:
        await s.stop()


async def test_certificate_failures_are_named(pki: dict[str, object]) -> None:
    good, expired = await tls_server(pki), await tls_server(pki, "expired")
    try:
        r = await probe.http(T, {"scheme": "https", "port": expired.port, "timeout": 3})
        assert not r.ok and r.summary == "certificate verify failed: certificate has expired", r
        r = await probe.http(T, {"scheme": "https", "port": good.port, "timeout": 3, "host_header": "other.example.test"})
        assert not r.ok and r.summary.startswith("certificate verify failed: Hostname mismatch"), r
        # verify off: the same servers pass
        for port in (good.port, expired.port):
            r = await probe.http(T, {"scheme": "https", "port": port, "timeout": 3, "verify": False,
                                     "host_header": "other.example.test"})
            assert r.ok, r
        assert good.sni[-1] == "other.example.test"  # the host header's name is the SNI
    finally:
        await good.stop()
        await expired.stop()


async def test_tls_to_a_plain_server(tmp_path: Path) -> None:
    s = await Server().start()
    try:
        r = await probe.http(T, {"scheme": "https", "port": s.port, "timeout": 3})
        assert not r.ok and r.summary.startswith("TLS error: "), r
    finally:
        await s.stop()


def hits(pki: dict[str, object]) -> int:
    return pki["good"].session_stats()["hits"]  # type: ignore[attr-defined,no-any-return]


@pytest.fixture
def no_leak(monkeypatch: pytest.MonkeyPatch) -> None:
    """As on a Python whose ssl module does not leak sessions (the mechanism is the same)."""
    monkeypatch.setattr(verdict, "SESSION_LEAKS", False)


def test_tls_resume_is_refused_where_it_would_leak(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(verdict, "SESSION_LEAKS", True)
    errors = verdict.validate_params({"scheme": "https", "tls_resume": True})
    assert len(errors) == 1 and errors[0].startswith("tls_resume: Python 3.") and "leaks memory" in errors[0], errors
    assert verdict.validate_params({"tls_resume": True}) == ["tls_resume: needs scheme: https"]


async def test_sessions_are_resumed(pki: dict[str, object], no_leak: None) -> None:
    """The server counts the resumed handshakes: all but the first of a real server's."""
    s = await tls_server(pki)
    try:
        params = {"scheme": "https", "port": s.port, "timeout": 3, "path": "/vhost", "host_header": "www.example.test",
                  "body_regex": r"^www\.example\.test$", "tls_resume": True}
        before = hits(pki)
        for _ in range(4):
            r = await probe.http(T, params)
            assert r.ok, r
        assert hits(pki) - before == 3
        # without tls_resume (the default): a full handshake every check
        before = hits(pki)
        for _ in range(3):
            assert (await probe.http(T, {**params, "tls_resume": False})).ok
        assert hits(pki) == before
    finally:
        await s.stop()


@pytest.mark.parametrize("placement", [0], indirect=True, ids=["in-loop"])
async def test_no_resumption_after_resume_s(pki: dict[str, object], placement: int, no_leak: None,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """Past RESUME_S since the last full handshake the certificate is checked again (in
    the loop: a worker runs the same exchange code with its own module's constant)."""
    monkeypatch.setattr(exchange, "RESUME_S", 0.0)
    s = await tls_server(pki)
    try:
        before = hits(pki)
        for _ in range(3):
            assert (await probe.http(T, {"scheme": "https", "port": s.port, "timeout": 3, "tls_resume": True})).ok
        assert hits(pki) == before
    finally:
        await s.stop()


async def test_a_host_given_by_name_is_verified_against_that_name(pki: dict[str, object]) -> None:
    """`localhost` resolves to 127.0.0.1, which the certificate carries; the name it does
    not: the check must verify the name it was given, not the address it connected to."""
    s = await tls_server(pki)
    try:
        by_name, by_addr = Target("localhost", "web", "https"), Target("127.0.0.1", "web", "https")
        results = await probe.http_many([by_name, by_addr], {"scheme": "https", "port": s.port, "timeout": 3})
        assert results["localhost"].summary.startswith("certificate verify failed: Hostname mismatch"), results
        assert results["127.0.0.1"].ok, results
        assert "localhost" in s.sni
    finally:
        await s.stop()
