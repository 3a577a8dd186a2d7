"""Hostile backends, clients, scripts, plugins and files: each fails only itself.

Every fault is real (servers and clients on loopback sockets, processes, files); the
test says what a user would see: the hostile one fails with a one-line reason, the
others keep their results, the schedule goes on."""

from __future__ import annotations

import asyncio
import socket
import threading
from typing import Iterator

import pytest

from pymon import pool
from pymon.plugin import Target
from pymon.probes import _http10
from pymon.probes import http as probe


class Canned:
    """A TCP server on loopback that answers every request with the same bytes and closes."""

    def __init__(self, answer: bytes, host: str = "127.0.0.1"):
        self.answer = answer
        self.sock = socket.create_server((host, 0))
        self.port = self.sock.getsockname()[1]
        self.stopped = False
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while not self.stopped:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                try:
                    conn.recv(65536)
                    conn.sendall(self.answer)
                except OSError:
                    pass

    def close(self) -> None:
        self.stopped = True
        self.sock.close()


HOSTILE_HEADS = {
    "superscript-two length": b"HTTP/1.0 503 X\r\nContent-Length: \xb2\r\n\r\n",
    "5000-digit length": b"HTTP/1.0 503 X\r\nContent-Length: " + b"9" * 5000 + b"\r\n\r\n",
    "5000-digit status": b"HTTP/1.0 " + b"5" * 5000 + b" X\r\n\r\n",
    "superscript length, 200": b"HTTP/1.0 200 OK\r\nContent-Length: \xb2\r\nX: y\r\n\r\n",
}
OK = b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nOK"


@pytest.fixture(params=[0, 1], ids=["in-loop", "one-worker"])
def workers(request: pytest.FixtureRequest) -> Iterator[int]:
    pool.configure(request.param, None)
    yield request.param
    pool.configure(0, None)


def test_parse_head_never_raises_on_a_hostile_length() -> None:
    assert _http10._parse_head(b"HTTP/1.0 503 X\r\nContent-Length: \xb2").content_length is None
    assert _http10._parse_head(b"HTTP/1.0 503 X\r\nContent-Length: " + b"9" * 5000).content_length is None


@pytest.mark.parametrize("name", list(HOSTILE_HEADS))
async def test_a_hostile_head_fails_its_host_and_not_the_others(workers: int, name: str) -> None:
    bad, good = Canned(HOSTILE_HEADS[name]), Canned(OK)
    try:
        bad_cfg = probe._parse({"port": bad.port, "timeout": 2, "body_regex": "OK"})
        good_cfg = probe._parse({"port": good.port, "timeout": 2})
        assert _http10.eligible(bad_cfg) and _http10.eligible(good_cfg)
        t = Target("127.0.0.1", "web", "http")
        pids = None
        for _ in range(3):  # the same batch, three rounds: the worker must survive each
            rb, rg = await asyncio.wait_for(asyncio.gather(_http10.check(t, bad_cfg), _http10.check(t, good_cfg)), 5)
            assert not rb.ok, rb
            assert "worker died" not in rb.summary
            assert rg.ok, rg
            now = [p.proc.pid for p in pool.POOL.places] if workers else []
            assert pids is None or now == pids  # the same worker: it never died
            pids = now
    finally:
        bad.close()
        good.close()


async def test_a_head_with_bare_lf_line_ends_is_read_as_aiohttp_reads_it(workers: int) -> None:
    srv = Canned(b"HTTP/1.0 200 OK\nContent-Type: text/plain\nContent-Length: 7\n\nall ok\n")
    try:
        for params in ({}, {"body_regex": "^all ok"}, {"header": {"content-type": "^text/plain$"}}):
            cfg = probe._parse({"port": srv.port, "timeout": 2, **params})
            lean, full = await _http10.check(Target("127.0.0.1", "w", "h"), cfg), await probe.check(
                Target("127.0.0.1", "w", "h"), cfg)
            assert lean.ok and full.ok, (params, lean, full)
    finally:
        srv.close()
