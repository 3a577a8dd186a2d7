"""The exchanges' worker processes (`probe_workers`): a worker that dies costs the checks
it was running, once, and is replaced; workers end with the pool and the daemon. That the answers are
judged alike in the loop and in workers is test_probe_http_lean.py's business."""

from __future__ import annotations

import asyncio
import errno
import http.server
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pymon.probes.http import exchange, pool
from pymon.plugin import Target
from pymon.probes.http import lean as _http10
from pymon.probes.http import verdict
from pymon.probes import http as probe
from daemons import Daemon
from httpserver import Server

T = Target("127.0.0.1", "web", "http")


class Log:
    def __init__(self) -> None:
        self.lines: list[tuple[str, dict]] = []

    def error(self, event: str, **kw: object) -> None:
        self.lines.append((event, kw))


@pytest.fixture
def workers() -> Iterator[Log]:
    log = Log()
    pool.configure(2, log)
    yield log
    pool.configure(0, None)


async def test_a_dead_worker_fails_its_checks_once_and_is_replaced(server: Server,  # noqa: F811
                                                                  workers: Log) -> None:
    cfg = verdict.parse({"port": server.port, "path": "/slow", "timeout": 5})
    slow = [asyncio.create_task(_http10.check(T, cfg)) for _ in range(4)]  # one batch, two per worker
    await asyncio.sleep(0.5)
    pids = [w.proc.pid for w in pool.POOL.places]
    os.kill(pids[0], signal.SIGKILL)
    done, pending = await asyncio.wait(slow, timeout=3)  # long before the 5 s timeout
    assert [t.result().summary for t in done] == ["probe worker died during the check"] * 2
    assert len(pending) == 2  # the other worker's checks still wait for the server
    assert workers.lines[0][0] == "probe.worker_died" and workers.lines[0][1]["pid"] == pids[0]
    now = [w.proc.pid for w in pool.POOL.places]
    assert now[0] not in pids and now[1] == pids[1]
    assert all([(await probe.http(T, {"port": server.port, "timeout": 5})).ok for _ in range(4)])
    for t in pending:
        t.cancel()


async def test_workers_end_with_the_pool(server: Server, workers: Log) -> None:  # noqa: F811
    assert (await probe.http(T, {"port": server.port})).ok
    procs = [w.proc for w in pool.POOL.places]
    assert [p.poll() for p in procs] == [None, None]
    pool.configure(0, None)
    assert [p.poll() for p in procs] == [0, 0]
    assert workers.lines == []


@pytest.mark.parametrize("sent", [True, False], ids=["in-the-workers", "in-the-batch"])
async def test_a_resize_lets_the_checks_in_flight_finish(workers: Log, sent: bool) -> None:
    """A reload that changes probe_workers finds checks running in the old workers, or
    batched for them: they finish there (no false failure), then the old workers exit."""
    async def answer_late(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        await asyncio.sleep(0.3)
        writer.write(b"HTTP/1.0 200 OK\r\n\r\nok")
        await writer.drain()
        writer.close()

    loop_errors: list[dict] = []
    asyncio.get_running_loop().set_exception_handler(lambda _, ctx: loop_errors.append(ctx))
    srv = await asyncio.start_server(answer_late, "127.0.0.1", 0)
    cfg = verdict.parse({"port": srv.sockets[0].getsockname()[1], "timeout": 5})
    checks = [asyncio.create_task(_http10.check(T, cfg)) for _ in range(4)]
    await asyncio.sleep(0.1 if sent else 0)
    old = [w.proc for w in pool.POOL.places]
    pool.configure(1, workers)
    assert [r.summary for r in await asyncio.gather(*checks) if not r.ok] == []
    assert [p.wait(2) for p in old] == [0, 0]
    assert (await _http10.check(T, cfg)).ok and len(pool.POOL.places) == 1
    assert loop_errors == [] and workers.lines == []
    srv.close()


async def test_a_check_cancelled_while_its_pool_closes(workers: Log) -> None:
    """The daemon's stop: the scheduler cancels the check, then the pool goes; its batch
    timer, still armed, finds nothing to send (it raised in the loop)."""
    loop_errors: list[dict] = []
    asyncio.get_running_loop().set_exception_handler(lambda _, ctx: loop_errors.append(ctx))
    check = asyncio.create_task(_http10.check(T, verdict.parse({"port": 9})))
    await asyncio.sleep(0)  # in the batch, not yet sent
    old = [w.proc for w in pool.POOL.places]
    check.cancel()
    pool.configure(0, None)
    await asyncio.sleep(0.1)
    assert loop_errors == [] and [p.poll() for p in old] == [0, 0]


def _children(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def test_daemon_with_probe_workers(tmp_path: Path, daemons: list[Daemon]) -> None:
    """`probe_workers: 2`: the checks run in two children of the daemon; one killed is
    logged and replaced while the real server stays up; both end with the daemon."""
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    cfg = tmp_path / "pymon.yaml"
    cfg.write_text(f"globals: {{statedir: {tmp_path}, mondir: {tmp_path}, alertdir: {tmp_path}, probe_workers: 2}}\n"
                   f"hostgroups: {{web: [127.0.0.1]}}\n"
                   f"watch:\n  web:\n    http: {{interval: 0.2s, monitor: {{name: http, port: {srv.server_port}}}}}\n")
    d = Daemon(cfg)
    daemons.append(d)
    try:
        d.wait(lambda e: e["event"] == "host.state" and e["state"] == "up")
        kids = _children(d.proc.pid)
        assert len(kids) == 2, kids
        nice = os.getpriority(os.PRIO_PROCESS, d.proc.pid)
        want = [nice + exchange.WORKER_NICE] * 2
        end = time.monotonic() + 5  # a worker lowers its own priority as it starts: on a busy machine, a moment later
        while [os.getpriority(os.PRIO_PROCESS, k) for k in kids] != want and time.monotonic() < end:
            time.sleep(0.05)
        assert [os.getpriority(os.PRIO_PROCESS, k) for k in kids] == want
        os.kill(kids[0], signal.SIGKILL)
        died = d.wait(lambda e: e["event"] == "probe.worker_died")
        assert died["pid"] == kids[0] and died["level"] == "error"
        n = len(d.events)
        time.sleep(1.5)
        assert not [e for e in d.events[n:] if e["event"] == "host.state"]  # no false down
        now = _children(d.proc.pid)
        assert len(now) == 2 and kids[1] in now and kids[0] not in now
        srv.shutdown()
        srv.server_close()
        d.wait(lambda e: e["event"] == "host.state" and e["state"] == "down")
        assert d.stop() == 0
        for pid in now:
            assert not os.path.exists(f"/proc/{pid}") or "Z" in open(f"/proc/{pid}/stat").read().split()[2]
    finally:
        srv.server_close()


def test_an_answer_waiting_unread_is_not_a_timeout() -> None:
    """A loop busy elsewhere past the deadline: the answer already in the socket counts."""
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    outcomes: list[tuple[int, exchange.Outcome]] = []
    ex = exchange.Exchanger(lambda jid, out: outcomes.append((jid, out)))
    try:
        addr = [(socket.AF_INET, ("127.0.0.1", srv.server_port))]
        ex.submit((1, addr, b"GET / HTTP/1.0\r\n\r\n", 0.3, False, 65536, ((200, 399),), False, None), time.monotonic())
        while not any(c.phase == "response" for c in ex.conns.values()):  # connected, request sent
            for fd, ev in ex.ep.poll(0.05):
                ex.handle(fd, ev)
        time.sleep(0.6)  # the server answers meanwhile; nobody reads it before the deadline
        ex.expire(time.monotonic())
        assert [(jid, out[0], out[1]) for jid, out in outcomes] == [(1, "status", 200)]
    finally:
        ex.close()
        srv.shutdown()
        srv.server_close()


def _run(ex: exchange.Exchanger, outcomes: list, until: float) -> None:
    while not outcomes and time.monotonic() < until:
        for fd, ev in ex.ep.poll(0.05):
            ex.handle(fd, ev)
        ex.expire(time.monotonic())


def _exchange_with(serve: Callable[[socket.socket], None], ranges: tuple[tuple[int, int], ...],
                   want_body: bool = False) -> exchange.Outcome:
    """One exchange with a loopback server whose one connection `serve` handles (in a thread)."""
    srv = socket.create_server(("127.0.0.1", 0))

    def accept() -> None:
        conn, _ = srv.accept()
        conn.recv(4096)
        serve(conn)
        conn.close()

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    outcomes: list[tuple[int, exchange.Outcome]] = []
    ex = exchange.Exchanger(lambda jid, out: outcomes.append((jid, out)))
    try:
        addr = [(socket.AF_INET, ("127.0.0.1", srv.getsockname()[1]))]
        ex.submit((1, addr, b"GET / HTTP/1.0\r\n\r\n", 2.0, want_body, 65536, ranges, False, None), time.monotonic())
        _run(ex, outcomes, time.monotonic() + 3)
        t.join(3)
        ((_, out),) = outcomes
        return out
    finally:
        ex.close()
        srv.close()


def test_the_connection_ends_with_a_reset_leaving_the_server_no_time_wait() -> None:
    """The server answers and closes its side first (HTTP/1.0); the checker then resets
    the connection instead of closing it in turn: the server's socket is gone at once,
    not held in TIME_WAIT, and fewer packets cross the director."""
    seen: list[str] = []

    def serve(conn: socket.socket) -> None:
        conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: 3\r\n\r\nok\n")
        try:
            conn.shutdown(socket.SHUT_WR)
            seen.append("fin" if conn.recv(4096) == b"" else "data")
        except OSError as e:  # the reset came before the shutdown (ENOTCONN) or after it
            seen.append("reset" if e.errno in (errno.ECONNRESET, errno.ENOTCONN) else str(e))

    out = _exchange_with(serve, ((200, 399),))
    assert (out[0], out[1]) == ("status", 200) and seen == ["reset"]


@pytest.mark.parametrize("want_body", [False, True])
def test_an_answer_in_pieces_is_read_whole(want_body: bool) -> None:
    """The first read only peeks; an exchange that goes on after it (a head cut in two, a
    body still coming) must still see every byte once, in order."""
    def serve(conn: socket.socket) -> None:
        conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Le")
        time.sleep(0.1)
        conn.sendall(b"ngth: 10\r\n\r\nhello")
        time.sleep(0.1)
        conn.sendall(b"world")

    kind, data, *_ = _exchange_with(serve, ((200, 399),), want_body)
    assert (kind, data) == (("answer", b"HTTP/1.0 200 OK\r\nContent-Length: 10\r\n\r\nhelloworld") if want_body
                            else ("status", 200))


def test_each_exchange_ends_at_its_own_deadline() -> None:
    """Exchanges with different timeouts, the shortest started in between: each times out
    at its own deadline, not behind a longer one started before it."""
    srv = socket.create_server(("127.0.0.1", 0))  # connects, never answers
    ended: dict[int, float] = {}
    ex = exchange.Exchanger(lambda jid, out: ended.setdefault(jid, time.monotonic() - t0))
    try:
        addr = [(socket.AF_INET, srv.getsockname())]
        t0 = time.monotonic()
        for jid, timeout in ((1, 0.8), (2, 0.2), (3, 0.8), (4, 0.4)):
            ex.submit((jid, addr, b"GET / HTTP/1.0\r\n\r\n", timeout, False, 65536, ((200, 399),), False, None), t0)
        assert ex.next_deadline() == pytest.approx(t0 + 0.2)
        while len(ended) < 4 and time.monotonic() < t0 + 3:
            for fd, ev in ex.ep.poll(0.02):
                ex.handle(fd, ev)
            ex.expire(time.monotonic())
        assert sorted(ended, key=ended.get) == [2, 4, 1, 3]
        assert ended[2] < 0.35 and 0.4 <= ended[4] < 0.6 and ended[1] >= 0.8
        assert ex.next_deadline() is None  # nothing in flight: no wake-up
    finally:
        ex.close()
        srv.close()


def test_an_event_under_the_fd_of_a_closed_socket_is_no_failure() -> None:
    """A socket closed while a forked child still held a copy stays in the epoll until the
    child execs, and its events come under its old fd number, which a new exchange may
    have taken. On a socket still connecting (its SYN unanswered: the server's accept
    queue is full) such an event must not fail the check: it ends at its deadline as a
    connect timeout, as it would have without the stray event."""
    srv = socket.create_server(("127.0.0.1", 0), backlog=0)
    filler = socket.create_connection(srv.getsockname())  # the one connection the queue takes
    outcomes: list[tuple[int, exchange.Outcome]] = []
    ex = exchange.Exchanger(lambda jid, out: outcomes.append((jid, out)))
    try:
        addr = [(socket.AF_INET, srv.getsockname())]
        ex.submit((1, addr, b"GET / HTTP/1.0\r\n\r\n", 0.5, False, 65536, ((200, 399),), False, None), time.monotonic())
        (fd,) = ex.conns
        ex.handle(fd, select.EPOLLOUT)  # stray: "writable"
        ex.handle(fd, select.EPOLLERR | select.EPOLLOUT)  # stray: "error", though SO_ERROR says none
        ex.handle(fd, select.EPOLLIN)  # stray: "readable"
        assert not outcomes and ex.conns[fd].phase == "connect"
        _run(ex, outcomes, time.monotonic() + 2)
        assert [(out[0], out[2]) for _, out in outcomes] == [("timeout", "connect")]
    finally:
        ex.close()
        filler.close()
        srv.close()


_PIECES = st.sampled_from([b"HTTP/1.0", b"HTTP/", b"HTTX/1.1", b" ", b"200", b"503", b"2x0", b"20", b"2000", b"\xb2",
                           b"OK", b"\r\n", b"\r", b"\n", b":", b"Server", b" x", b"\t", b"\x00"])


@settings(max_examples=1000)
@given(st.tuples(st.sampled_from([b"HTTP/1.0 200", b"HTTP/1.1", b"HTTP/", b""]),
                 st.lists(_PIECES, max_size=10)).map(lambda t: t[0] + b"".join(t[1])))
def test_the_status_shortcut_takes_only_heads_the_parser_accepts(head: bytes) -> None:
    """An accepted status with nothing else to check comes back from the exchange without
    its head: only a head that `_parse_head` accepts, with the same status, may do so (the
    others take the full path, which judges them)."""
    m = exchange._WELL_FORMED.fullmatch(head + b"\r\n")
    if m is not None:
        assert _http10._parse_head(head).status == int(m[1])


@pytest.mark.parametrize("head, code", [
    (b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Thu, 26 Nov 2026 07:00:00 GMT\r\n"
     b"Content-Type: text/html\r\nContent-Length: 3\r\nConnection: close", 200),
    (b"HTTP/1.0 200 OK\r\nContent-type: text/html\r\nDate: Thu, 26 Nov 2026 07:00:00 GMT", 200),  # busybox
    (b"HTTP/1.0 503", 503),  # no reason phrase, no headers
    (b"HTTP/1.0 200 OK\r\nX-Empty:", 200),
    (b"HTTP/1.0 200 OK\r\nBroken line", None),
    (b"HTTP/1.0 2x0 OK", None),
    (b"HTTP/1.0\r\nServer 200 OK", None),  # no status on the status line: the parser rejects it
])
def test_common_heads_take_the_shortcut(head: bytes, code: int | None) -> None:
    """Well-formed heads come back as their status alone; the others whole, for the parser
    (every status accepted here: the shortcut is for accepted ones)."""
    kind, data, *_ = _exchange_with(lambda conn: conn.sendall(head + b"\r\n\r\nbody"), ((100, 599),))
    assert (kind, data) == ("status", code) if code else kind == "answer" and data.startswith(head)


def test_a_plain_worker_does_not_load_ssl() -> None:
    """The worker's imports (`python -I -S exchange.py`) leave `ssl` out until an HTTPS
    exchange needs it: 4.5 MiB per worker."""
    code = ("import sys; sys.path.insert(0, sys.argv[1]); import exchange; "
            "print('ssl' in sys.modules); exchange.tls_context(False); print('ssl' in sys.modules)")
    out = subprocess.run([sys.executable, "-I", "-S", "-c", code, str(Path(exchange.__file__).parent)],
                         capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "True"]
