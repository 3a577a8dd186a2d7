"""The http probe's lean HTTP/1.0 path (probes/http/lean.py) says what the aiohttp path says.

`http` takes the lean path for plain http without keep-alive, redirects or cert
checks; here both paths check the same real server with the same parsed params and
must agree on ok, summary, value and detail. Every test runs twice: the exchanges in
the test's own loop (`probe_workers: 0`) and in two worker processes."""

from __future__ import annotations

import asyncio
import socket
from typing import Iterator

import pytest

from pymon.probes.http import pool
from pymon.plugin import Target
from pymon.probes.http import lean as _http10
from pymon.probes.http import verdict
from pymon.probes import http as probe
from httpserver import Server, free_port

T = Target("127.0.0.1", "web", "http")


@pytest.fixture(autouse=True, params=[0, 2], ids=["in-loop", "workers"])
def placement(request: pytest.FixtureRequest) -> Iterator[None]:
    pool.configure(request.param, None)
    yield
    pool.configure(0, None)

CASES = [
    {},
    {"path": "/status/503"},
    {"path": "/status/503", "status": 503},
    {"path": "/status/500", "status": [200, "300-302"]},
    {"path": "/status/201", "status": 200},
    {"body_regex": r"^all ok"},
    {"body_regex": "ok$x"},
    {"header": {"X-App": r"^pymon-test/\d"}},
    {"header": {"x-app": "^nginx"}},
    {"header": {"X-Missing": "."}},
    {"path": "/big", "body_regex": "END", "max_body": 1000},
    {"path": "/big", "body_regex": "^x{1000}"},
    {"path": "/redirect"},
    {"path": "/redirect", "status": 200},
    {"path": "/vhost", "host_header": "www.example.test", "body_regex": r"^www\.example\.test$"},
    {"method": "HEAD"},
    {"method": "HEAD", "path": "/status/500"},
    {"path": "/slow", "timeout": 0.3},
    {"argv": ["-u", "/status/401", "-o"]},
]


@pytest.mark.parametrize("params", CASES, ids=[str(c) for c in CASES])
async def test_lean_path_agrees_with_aiohttp(server: Server, params: dict) -> None:  # noqa: F811
    cfg = verdict.parse({"port": server.port, "timeout": 5, **params})
    assert _http10.eligible(cfg)
    lean, full = await _http10.check(T, cfg), await probe.check(T, cfg)
    assert (lean.ok, lean.summary, lean.value, lean.detail) == (full.ok, full.summary, full.value, full.detail)


async def test_lean_path_failures_agree() -> None:
    cfg = verdict.parse({"port": free_port(), "timeout": 2})
    lean, full = await _http10.check(T, cfg), await probe.check(T, cfg)
    assert (lean.ok, lean.summary) == (full.ok, full.summary) == (False, "connection refused")
    bad = Target("no-such-host.invalid", "web", "http")
    lean, full = await _http10.check(bad, cfg), await probe.check(bad, cfg)
    assert (lean.ok, lean.summary) == (full.ok, full.summary) == (False, "cannot resolve no-such-host.invalid")


async def test_lean_path_by_name_and_ipv6(server: Server) -> None:  # noqa: F811
    r = await probe.http(Target("localhost", "g", "s"), {"port": server.port, "timeout": 2})
    assert r.ok, r
    if socket.has_ipv6:
        s6 = await Server().start(hosts=["::1"])
        try:
            r = await probe.http(Target("::1", "g", "s"), {"port": s6.port, "timeout": 2})
            assert r.ok, r
        finally:
            await s6.stop()


async def test_http_picks_the_lean_path_only_when_it_can(monkeypatch: pytest.MonkeyPatch,
                                                         server: Server) -> None:  # noqa: F811
    used = []
    real = _http10.check

    async def spy(target: Target, cfg: probe.HttpParams):  # type: ignore[no-untyped-def]
        used.append(cfg)
        return await real(target, cfg)

    monkeypatch.setattr(_http10, "check", spy)
    assert (await probe.http(T, {"port": server.port})).ok
    assert len(used) == 1
    for params in ({"keepalive": True}, {"redirects": True}):
        assert (await probe.http(T, {"port": server.port, **params})).ok
    await probe.close_sessions()
    assert len(used) == 1



async def test_many_hosts_at_once_say_what_each_says_alone(server: Server) -> None:  # noqa: F811
    """The daemon's form for a watch of several real servers (no task per host)."""
    targets = [Target(h, "web", "http") for h in ("127.0.0.1", "127.0.0.2", "no-such-host.invalid", "127.0.0.1")]
    params = {"port": server.port, "timeout": 2}
    together = await probe.http_many(targets, params)
    alone = [await probe.http(t, params) for t in targets]
    assert {h: (r.ok, r.summary) for h, r in together.items()} == {t.host: (r.ok, r.summary)
                                                                    for t, r in zip(targets, alone)} == {
        "127.0.0.1": (True, "status 200"), "127.0.0.2": (False, "connection refused"),
        "no-such-host.invalid": (False, "cannot resolve no-such-host.invalid")}


async def _raw_server(answer: bytes, *pieces: bytes, pause: float = 0.0) -> tuple[object, int]:
    """A server that answers `answer`, then each of `pieces` after `pause` s."""
    async def reply(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        for data in (answer, *pieces):
            writer.write(data)
            await writer.drain()
            await asyncio.sleep(pause)
        writer.close()

    srv = await asyncio.start_server(reply, "127.0.0.1", 0)
    return srv, srv.sockets[0].getsockname()[1]


@pytest.mark.parametrize("answer, summary", [
    (b"HTTP/1.0 200 OK\r\nServer: x\r\nBroken line\r\n\r\n", "bad response: Bad header line 'Broken line'"),
    (b"HTTP/1.0 2x0 OK\r\n\r\n", "bad response: Bad status line 'HTTP/1.0 2x0 OK'"),
    (b"HTTP/1.0 200 OK\r\nServer: x\r\n\r\n", "status 200"),
])
async def test_an_accepted_status_still_needs_a_well_formed_head(answer: bytes, summary: str) -> None:
    """A 200 with nothing else to check comes back from the exchange as a bare status
    (no head to copy and parse); only a head that parses may take that shortcut."""
    srv, port = await _raw_server(answer)
    try:
        r = await _http10.check(T, verdict.parse({"port": port, "timeout": 2}))
        assert (r.ok, r.summary) == (summary == "status 200", summary)
    finally:
        srv.close()  # type: ignore[attr-defined]


@pytest.mark.parametrize("pieces", [
    (b"HTTP/1.0 200 OK\r\n", b"Server: drip\r\n", b"\r\n"),  # a head in three packets, 50 ms apart
    (b"HTTP/1.0 200 OK\r\n\r\n" + b"x" * 150_000 + b"END",),  # in one write: more than one 64 KiB read
])
async def test_an_answer_in_pieces_is_read_to_its_end(pieces: tuple[bytes, ...]) -> None:
    """The exchange's epoll is edge-triggered: each arrival is one event, and a read
    that fills the buffer is followed by another, so nothing waits for the timeout."""
    srv, port = await _raw_server(*pieces, pause=0.05)
    try:
        params = {"port": port, "timeout": 2, "body_regex": "END$", "max_body": 200_000}
        r = await _http10.check(T, verdict.parse(params if len(pieces) == 1 else {"port": port, "timeout": 2}))
        assert (r.ok, r.summary) == (True, "status 200") and r.latency_s < 1.0, r
    finally:
        srv.close()  # type: ignore[attr-defined]


async def test_latency_is_the_time_the_answer_took() -> None:
    """The clock is read once per batch of events, not per exchange: an answer 0.2 s
    late says so, and a refused connection says about nothing."""
    srv, port = await _raw_server(b"", b"HTTP/1.0 200 OK\r\n\r\n", pause=0.2)
    try:
        r = await _http10.check(T, verdict.parse({"port": port, "timeout": 2}))
        assert r.ok and 0.2 <= r.latency_s < 0.6, r
    finally:
        srv.close()  # type: ignore[attr-defined]
    refused = await _http10.check(T, verdict.parse({"port": free_port(), "timeout": 2}))
    assert not refused.ok and 0.0 <= refused.latency_s < 0.1, refused


async def test_the_callback_form_says_what_the_awaited_form_says(server: Server) -> None:  # noqa: F811
    """`Monitor.start`, the daemon's hot path: no task, results in target order; a
    host name (to resolve) is left to the awaited form; a cancelled check never calls back."""
    targets = [Target(h, "web", "http") for h in ("127.0.0.1", "127.0.0.2", "127.0.0.1")]
    params = {"port": server.port, "timeout": 2}
    loop = asyncio.get_running_loop()
    for hosts in (targets[:1], targets):
        got: asyncio.Future[list] = loop.create_future()
        assert probe.http_start(hosts, params, got.set_result) is not None
        awaited = [await probe.http(t, params) for t in hosts]
        assert [(r.ok, r.summary) for r in await got] == [(r.ok, r.summary) for r in awaited]
    assert probe.http_start([Target("localhost", "web", "http")], params, print) is None
    assert probe.http_start(targets, {"port": "x"}, print) is None  # bad params: the awaited form says so
    late: list = []
    cancel = probe.http_start(targets[:1], {**params, "path": "/slow", "timeout": 0.3}, late.append)
    assert cancel is not None
    cancel()
    await asyncio.sleep(0.8)  # past the timeout: an uncancelled check would have called back
    assert late == []
