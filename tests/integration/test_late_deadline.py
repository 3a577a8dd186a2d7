"""A director too busy to run its checker (its CPU starved, the process stopped, its loop
held) must not fail healthy real servers for the time it was not running: a deadline
seen late looks at what the socket holds and waits once as long again as it was late
(at most the timeout). A server that does not answer in time from its own side still
fails at its timeout. Real servers on loopback, in threads of their own (a held loop or
a stopped process does not hold them)."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import ssl
import subprocess
import threading
import time
from pathlib import Path
from typing import Any, AsyncIterator, Callable, Iterator

import pytest

from daemons import Daemon
from pymon import plugin
from pymon.plugin import Result, Target
from pymon.probes import http as probe
from pymon.probes import tcp
from pymon.probes.http import exchange, pool

ANSWER = b"HTTP/1.0 200 OK\r\nContent-Length: 3\r\n\r\nok\n"


class Server:
    """HTTP/1.0 on loopback: each request is answered `delay` s after it is read (never
    when None). `full`: the accept queue starts full (backlog 0 and one connection not
    accepted): a connect's SYN is dropped and sent again a second later (Linux's initial
    retransmission timeout), until `open()` lets the queue drain. `on_accept` runs in
    the server's thread for each connection it accepts."""

    def __init__(self, delay: float | None = 0.0, ctx: ssl.SSLContext | None = None,
                 on_accept: Callable[[], None] | None = None, full: bool = False):
        self.delay, self.ctx, self.on_accept = delay, ctx, on_accept
        self.sock = socket.create_server(("127.0.0.1", 0), backlog=0)
        self.port = self.sock.getsockname()[1]
        self.gate = threading.Event()
        self.filler = socket.create_connection(("127.0.0.1", self.port)) if full else None
        if not full:
            self.gate.set()
        self.conns: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def open(self) -> None:
        self.gate.set()

    def _accept(self) -> None:
        while True:
            self.gate.wait()
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(conn)
            if self.on_accept is not None:
                self.on_accept()
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            conn.settimeout(15)
            if self.ctx is not None:
                conn = self.ctx.wrap_socket(conn, server_side=True)
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = conn.recv(4096)
                if not chunk:
                    return
                data += chunk
            if self.delay is None:
                conn.recv(4096)  # until the client gives up
                return
            time.sleep(self.delay)
            conn.sendall(ANSWER)
        except OSError:
            pass
        finally:
            conn.close()

    def close(self) -> None:
        self.sock.close()
        if self.filler is not None:
            self.filler.close()
        for c in self.conns:
            c.close()


T = Target("127.0.0.1", "web", "svc")
# the paths a check can take: (name, probe_workers); each runs a real exchange end to end
PATHS = [("http", 0), ("http", 1), ("https", 0), ("https", 1), ("http-aiohttp", 0), ("tcp", 0)]


@pytest.fixture(params=PATHS, ids=[f"{p}-{'worker' if w else 'in-loop'}" for p, w in PATHS])
def path(request: pytest.FixtureRequest, pki: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, int]]:
    monkeypatch.setenv("SSL_CERT_FILE", str(pki["ca"]))  # the test CA trusted, workers included
    probe._ssl_context.cache_clear()
    exchange.tls_context.cache_clear()
    pool.configure(request.param[1], None)
    yield request.param
    pool.configure(0, None)
    probe._ssl_context.cache_clear()
    exchange.tls_context.cache_clear()


@pytest.fixture(autouse=True)
async def _sessions_closed() -> AsyncIterator[None]:
    """The aiohttp path's keep-alive sessions end with the test's loop, as the daemon's
    end with its shutdown."""
    yield
    await probe.close_sessions()


def _server(kind: str, pki: dict[str, Any], delay: float | None, full: bool = False) -> Server:
    return Server(delay, pki["good"] if kind == "https" else None, full=full)


async def _check(kind: str, port: int, timeout: float) -> Result:
    if kind == "tcp":
        return await tcp.tcp(T, {"port": port, "timeout": timeout, "send": "GET / HTTP/1.0\r\n\r\n",
                                 "expect": "^HTTP/1.0 200"})
    params: dict[str, Any] = {"port": port, "timeout": timeout}
    if kind == "https":
        params["scheme"] = "https"
    if kind == "http-aiohttp":
        params["keepalive"] = True  # not the lean path's: aiohttp's
    return await probe.http(T, params)


async def _hold(workers: int, seconds: float) -> None:
    """This process not running its checks for `seconds`: the loop held (no worker), or
    the worker stopped."""
    if not workers:
        time.sleep(seconds)
        return
    pid = pool.POOL.places[0].proc.pid
    os.kill(pid, signal.SIGSTOP)
    try:
        await asyncio.sleep(seconds)
    finally:
        os.kill(pid, signal.SIGCONT)


async def test_a_checker_held_past_the_deadline_does_not_fail_a_healthy_server(
        path: tuple[str, int], pki: dict[str, Any]) -> None:
    """The connect's SYN is retried a second after it was sent (the server's accept queue
    full until then), and the handshake completes while the checker is held: on waking,
    the deadline is past, the request not even sent. The server answers at once when it
    gets the request: the check passes, late."""
    kind, workers = path
    warm = _server(kind, pki, 0.0)  # the worker started and the TLS context loaded before the hold
    srv = _server(kind, pki, 0.0, full=True)
    try:
        assert (await _check(kind, warm.port, 5)).ok
        began = time.monotonic()
        task = asyncio.create_task(_check(kind, srv.port, 1.2))
        await asyncio.sleep(0.3)  # the SYN sent (and dropped)
        threading.Timer(0.2, srv.open).start()  # the retried SYN, at ~1 s, gets through
        await _hold(workers, 2.0)
        r = await asyncio.wait_for(task, 5)
        took = time.monotonic() - began
        assert r.ok, r
        assert 2.3 <= took < 2.3 + 1.2 + 1.0, took  # after the hold, within the extension
    finally:
        warm.close()
        srv.close()


@pytest.mark.parametrize("delay", [None, 0.8], ids=["never", "after-the-timeout"])
async def test_a_server_that_does_not_answer_in_time_fails_at_its_timeout(
        path: tuple[str, int], pki: dict[str, Any], delay: float | None) -> None:
    """Nobody held: a server that accepts and never answers, or answers after the
    timeout, fails at the timeout, not later."""
    kind, _ = path
    srv = _server(kind, pki, delay)
    try:
        began = time.monotonic()
        r = await _check(kind, srv.port, 0.5)
        took = time.monotonic() - began
        assert not r.ok and "timeout" in r.summary, r
        assert 0.5 <= took < 0.5 + 0.25, took
    finally:
        srv.close()


def test_a_late_deadline_is_extended_once_by_the_lateness_at_most_the_timeout() -> None:
    """The exchange's own rule: seen 0.5 s late, a 0.3 s deadline gets 0.3 s more (its
    timeout bounds it), once; then it fails, as a timeout of the phase it was in."""
    srv = Server(None)
    outcomes: list[exchange.Outcome] = []
    ex = exchange.Exchanger(lambda jid, out: outcomes.append(out))
    try:
        addr = [(socket.AF_INET, ("127.0.0.1", srv.port))]
        t0 = time.monotonic()
        ex.submit((1, addr, b"GET / HTTP/1.0\r\n\r\n", 0.3, False, 65536, ((200, 399),), False, None), t0)
        time.sleep(0.8)  # not running: the connect's answer waits unread
        now = time.monotonic()
        ex.ready()
        ex.expire(now)
        assert outcomes == [] and ex.next_deadline() == pytest.approx(now + 0.3)
        ex.expire(now + 0.3)  # seen late again: no second extension
        assert [(o[0], o[2]) for o in outcomes] == [("timeout", "response")]
        ex.submit((2, addr, b"GET / HTTP/1.0\r\n\r\n", 0.3, False, 65536, ((200, 399),), False, None), now)
        ex.expire(now + 0.3 + plugin.LATE_S / 2)  # on time (within LATE_S): fails there
        assert len(outcomes) == 2 and outcomes[1][0] == "timeout"
    finally:
        ex.close()
        srv.close()


async def test_a_worker_that_is_behind_gets_no_new_checks_for_a_while() -> None:
    """A worker that read a batch more than BEHIND_S after the daemon sent it says so
    with its outcomes: while it has checks in flight, the new ones run in the daemon's
    loop (one passes while the worker is stopped again); once its outcomes say it is not
    behind, it gets checks again (one waits for the stopped worker)."""
    srv = Server(0.0)
    pool.configure(1, None)
    try:
        assert (await _check("http", srv.port, 5)).ok  # the worker started
        pid = pool.POOL.places[0].proc.pid
        os.kill(pid, signal.SIGSTOP)
        late = asyncio.create_task(_check("http", srv.port, 5))
        await asyncio.sleep(0.3)  # its batch waits in the worker's socket
        os.kill(pid, signal.SIGCONT)
        assert (await late).ok
        busy = Server(None)  # a check in flight in the worker: it stays behind until it answers
        pool.POOL.submit([([(socket.AF_INET, ("127.0.0.1", busy.port))], b"GET / HTTP/1.0\r\n\r\n")],
                         (1.0, False, 65536, ((200, 399),), False, None), lambda i, out: None, time.monotonic())
        await asyncio.sleep(0.05)
        os.kill(pid, signal.SIGSTOP)
        try:
            began = time.monotonic()
            assert (await asyncio.wait_for(_check("http", srv.port, 5), 2)).ok  # in the loop
            assert time.monotonic() - began < 0.5
        finally:
            os.kill(pid, signal.SIGCONT)
        await asyncio.sleep(1.5)  # the busy check timed out, on time: the worker is not behind
        os.kill(pid, signal.SIGSTOP)
        try:
            waits = asyncio.create_task(_check("http", srv.port, 5))
            await asyncio.sleep(0.3)
            assert not waits.done()  # the worker's again
        finally:
            os.kill(pid, signal.SIGCONT)
        assert (await waits).ok
        busy.close()
    finally:
        pool.configure(0, None)
        srv.close()


def test_the_worker_script_judges_lateness_as_the_daemon() -> None:
    """exchange.py runs as a stdlib-only script: its bound is a copy of the plugin's."""
    assert exchange.LATE_S == plugin.LATE_S


# -- the daemon: stopped, or its worker stopped, while a check is in flight --------


def _children(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


@pytest.mark.parametrize("workers,stop_s", [(0, 2.5), (1, 1.5)], ids=["daemon-stopped", "worker-stopped"])
def test_a_stopped_daemon_or_worker_records_no_failure(tmp_path: Path, daemons: list[Daemon],
                                                       workers: int, stop_s: float) -> None:
    """The process that runs the exchanges is stopped (SIGSTOP) when the server accepts a
    check's connection, for longer than the check's 1 s timeout, then continued; the
    server answers 0.2 s after it reads the request (so after the daemon has seen every
    deadline of that check late), and no check fails. The daemon is stopped past its guard
    (timeout + 1 s) too; a worker is stopped for less: the guard, counted in the daemon,
    is what fails the checks of a worker that hangs."""
    stopped: list[float] = []
    target: list[int] = []

    def stop_once() -> None:
        if target and not stopped:
            stopped.append(time.monotonic())
            os.kill(target[0], signal.SIGSTOP)
            time.sleep(stop_s)
            os.kill(target[0], signal.SIGCONT)
            stopped.append(time.monotonic())

    srv = Server(0.2, on_accept=stop_once)
    cfg = tmp_path / "pymon.yaml"
    cfg.write_text(f"globals: {{statedir: {tmp_path}, mondir: {tmp_path}, alertdir: {tmp_path}, "
                   f"probe_workers: {workers}}}\n"
                   f"hostgroups: {{web: [127.0.0.1]}}\n"
                   f"watch:\n  web:\n    http: {{interval: 0.5s, timeout: 1s, monitor: {{name: http, port: {srv.port}}}}}\n")
    d = Daemon(cfg)
    daemons.append(d)
    try:
        d.wait(lambda e: e["event"] == "host.state" and e["state"] == "up")
        target.append(_children(d.proc.pid)[0] if workers else d.proc.pid)
        end = time.monotonic() + 15
        while len(stopped) < 2 and time.monotonic() < end:
            time.sleep(0.05)
        assert len(stopped) == 2
        n = len([e for e in d.events if e["event"] == "check.done"])
        d.wait(lambda e: e["event"] == "check.done" and len([x for x in d.events if x["event"] == "check.done"]) >= n + 3)
        done = [e for e in d.events if e["event"] == "check.done"]
        assert [e for e in done if not e["ok"]] == []
        assert [e for e in d.events if e["event"] == "host.state" and e["state"] != "up"] == []
        assert max(e["duration_s"] for e in done) >= stop_s - 0.2  # the check in flight over the stop passed
        assert d.stop() == 0
    finally:
        srv.close()
