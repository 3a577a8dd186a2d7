"""Where the HTTP exchanges run: in the daemon's loop or in worker processes.

`Pool.submit` starts one exchange (`pymon.probes.http.exchange`) and calls back with its Outcome.
With `globals.probe_workers: 0` the Exchanger's epoll is one reader of the daemon's
loop; with N > 0, N worker processes run it (`python -I -S pymon/probes/http/exchange.py`: stdlib
only, no site, so each holds about 11 MiB instead of 22 with asyncio and the site
imports) and take the kernel's TCP work of the connections off the daemon's core,
leaving its loop the schedule and the state machine. Jobs and outcomes cross a
socketpair in batches (one wake-up per BATCH_S). A worker that dies fails the checks it
had in flight once ("lost") and is replaced. A worker that says it is behind (BEHIND_S)
gets no new checks until it says it is not, or has none left: they run in the daemon's
loop, which then slips and skips checks as it does without workers, instead of piling
them up in the worker.
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import time
from typing import Any, Callable, Sequence

from . import exchange
from .exchange import _RECV, BATCH_S, Addrs, Exchanger, How, Job, Outcome, _frame, _Frames


_NEVER = float("inf")


class _Local:
    """An Exchanger in the daemon's loop: its epoll fd is one reader of the loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop, done: Callable[[int, Outcome], None]):
        self.loop = loop
        self.ex = Exchanger(done)
        self.timer: asyncio.TimerHandle | None = None
        self.timer_at = 0.0
        loop.add_reader(self.ex.ep.fileno(), self._ready)

    def submit(self, jobs: list[Job], now: float) -> None:
        timeout = _NEVER
        for job in jobs:
            self.ex.submit(job, now)
            if job[3] < timeout:
                timeout = job[3]
        # The timer is armed for no later than any deadline in flight (`_arm`): it stands
        # when the new ones come no sooner, and no deadline queue is walked per check.
        if self.timer is None or self.timer_at > now + timeout:
            self._arm()

    def _ready(self) -> None:
        self.ex.ready()
        self.ex.expire(self.ex.now)  # the clock as `ready` read it
        self._arm()

    def _arm(self) -> None:
        at = self.ex.next_deadline()
        if at is not None and self.timer is not None and self.timer_at <= at:
            return
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if at is None:  # nothing in flight: no wake-up at the deadline of exchanges that are over
            return
        self.timer_at = at
        # loop.time() is time.monotonic() on the selector and uv loops alike
        self.timer = self.loop.call_at(at + 0.0005, self._expired)

    def _expired(self) -> None:
        self.timer = None
        self._ready()

    def close(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self.loop.remove_reader(self.ex.ep.fileno())
        self.ex.close()


class _Worker:
    """A worker process (exchange.py as a script) and its socketpair."""

    def __init__(self, loop: asyncio.AbstractEventLoop, done: Callable[[int, Outcome], None],
                 lost: Callable[["_Worker"], None], failed: Callable[[Exception], None]):
        self.loop, self.done, self.lost, self.failed = loop, done, lost, failed
        ours, theirs = socket.socketpair()
        self.proc = subprocess.Popen([sys.executable, "-I", "-S", exchange.__file__], stdin=theirs, stdout=theirs,
                                     close_fds=True)
        theirs.close()
        ours.setblocking(False)
        self.sock = ours
        self.frames = _Frames()
        self.inflight: set[int] = set()
        self.out = bytearray()
        self.behind = False  # what its last outcomes said (exchange.BEHIND_S)
        loop.add_reader(ours.fileno(), self._readable)

    def submit(self, jobs: list[Job], now: float) -> None:
        self.inflight.update(j[0] for j in jobs)
        self._send(_frame((now, jobs)))

    def _send(self, data: bytes) -> None:
        if self.out:
            self.out += data
            return
        try:
            n = self.sock.send(data)
        except BlockingIOError:
            n = 0
        except OSError:
            return self._gone()
        if n < len(data):
            self.out += data[n:]
            self.loop.add_writer(self.sock.fileno(), self._writable)

    def _writable(self) -> None:
        try:
            n = self.sock.send(self.out)
        except BlockingIOError:
            return
        except OSError:
            return self._gone()
        del self.out[:n]
        if not self.out:
            self.loop.remove_writer(self.sock.fileno())

    def _readable(self) -> None:
        try:
            data = self.sock.recv(_RECV)  # under glibc's mmap threshold: a bigger buffer cost 3 syscalls per batch
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            return self._gone()
        for self.behind, batch in self.frames.feed(data):
            it = iter(batch)
            while True:  # one try per batch: an outcome whose callback raises loses no other outcome
                try:
                    for jid, out in it:
                        self.inflight.discard(jid)
                        self.done(jid, out)
                    break
                except Exception as e:
                    self.failed(e)

    def _gone(self) -> None:
        self.close()
        for jid in sorted(self.inflight):
            self.done(jid, ("lost", b"", "response", 0, 0.0))
        self.inflight.clear()
        self.lost(self)

    def close(self) -> None:
        if self.sock.fileno() >= 0:
            self.loop.remove_reader(self.sock.fileno())
            if self.out:
                self.loop.remove_writer(self.sock.fileno())
            self.sock.close()  # the worker reads EOF and exits
        try:
            self.proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class _Cancel:
    """How to cancel one `Pool.submit`'s exchanges: late outcomes are dropped. One slotted
    object per check (a partial is three tracked objects for the garbage collector)."""

    __slots__ = ("pool", "base", "n")

    def __init__(self, pool: "Pool", base: int, n: int):
        self.pool, self.base, self.n = pool, base, n

    def __call__(self) -> None:
        waiting = self.pool.waiting
        for jid in range(self.base, self.base + self.n):
            waiting.pop(jid, None)
        self.pool._close_if_drained()


class Pool:
    """Where the exchanges run: in this loop (workers=0) or spread over worker processes.
    Jobs submitted in one loop iteration go out as one batch."""

    def __init__(self, workers: int, log: Any = None):
        self.workers = workers
        self.log = log
        self.loop: asyncio.AbstractEventLoop | None = None
        self.places: list[Any] = []
        self.local: _Local | None = None  # where checks run while every worker is behind
        self.waiting: dict[int, tuple[Callable[[int, Outcome], None], int]] = {}  # id: (done, the batch's first id)
        self.next_id = 1
        self.batch: list[Job] = []
        self.turn = 0
        self.retired = False
        self.callback_failed = False

    def _start(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        if self.workers <= 0:
            self.places = [_Local(loop, self._done)]
        else:
            self.places = [_Worker(loop, self._done, self._lost, self._failed) for _ in range(self.workers)]

    def submit(self, exchanges: Sequence[tuple[Addrs, bytes]], how: How, done: Callable[[int, Outcome], None],
               now: float) -> Callable[[], None]:
        """Start one exchange per (addresses, request), all judged alike (`how`: timeout s,
        want_body, max_body, accepted status ranges, want_head); `done(i, outcome)` is
        called once for exchange i, unless the returned cancel came first: from the loop, or
        in the daemon's loop (no workers) before this returns when the connect fails at once.
        One call and one callback per check, not per real server: at thousands of checks a
        second a future, a task or a closure per exchange cost more than the exchange. `now`:
        time.monotonic(), read once by the caller (a worker reads its own when the batch
        arrives)."""
        loop = self.loop
        if loop is None or not loop.is_running():  # the first job, or a new loop (tests): asking for
            loop = asyncio.get_running_loop()  # the running loop every time cost a getpid() syscall
            self._start(loop)
        base = self.next_id
        self.next_id = base + len(exchanges)
        entry, waiting = (done, base), self.waiting
        jobs: list[Job] = []
        for jid, (addrs, request) in enumerate(exchanges, base):
            waiting[jid] = entry
            jobs.append((jid, addrs, request, *how))
        if not self.workers:  # started at once: a batch for the next loop pass cost a pass per check
            self.places[0].submit(jobs, now)  # (a connect refused at once calls `done` before this returns)
        else:
            if not self.batch:
                loop.call_later(BATCH_S, self._flush)
            self.batch += jobs
        return _Cancel(self, base, len(jobs))

    def _flush(self) -> None:
        batch, self.batch = self.batch, []
        if not self.places:  # closed: every job in the batch has had its answer
            return
        now = time.monotonic()
        # behind and still busy: a starved worker says nothing until it runs again
        places = [w for w in self.places if not (w.behind and w.inflight)]
        n = len(places)
        if n == 0:
            if self.local is None:
                assert self.loop is not None
                self.local = _Local(self.loop, self._done)
            self.local.submit(batch, now)
            return
        if n == 1:
            places[0].submit(batch, now)
            return
        parts: list[list[Job]] = [[] for _ in range(n)]
        for job in batch:
            parts[self.turn % n].append(job)
            self.turn = (self.turn + 1) % n
        for place, part in zip(places, parts):
            if part:
                place.submit(part, now)

    def _done(self, jid: int, out: Outcome) -> None:
        entry = self.waiting.pop(jid, None)
        if entry is not None:
            entry[0](jid - entry[1], out)
        if self.retired:
            self._close_if_drained()

    def _failed(self, e: Exception) -> None:
        if self.log is not None and not self.callback_failed:
            self.callback_failed = True  # once: a bug, not a server's doing, and it would repeat per check
            self.log.error("probe.callback_failed", error=f"{type(e).__name__}: {e}"[:300],
                           action="that outcome is dropped; the other outcomes of its batch go on")

    def _lost(self, w: _Worker) -> None:
        i = self.places.index(w)
        if self.log is not None:
            self.log.error("probe.worker_died", pid=w.proc.pid, returncode=w.proc.returncode,
                           action="starting another")
        assert self.loop is not None
        if not self.retired:
            self.places[i] = _Worker(self.loop, self._done, self._lost, self._failed)

    def retire(self) -> None:
        """Take no new jobs and close once the ones in flight have their answers: a reload
        that resizes the pool must not fail the checks it finds running."""
        self.retired = True
        self._close_if_drained()

    def _close_if_drained(self) -> None:
        if self.retired and not self.waiting and self.places:
            self.close()

    def close(self) -> None:
        places, self.places, self.loop = self.places, [], None
        if self.local is not None:
            places.append(self.local)
            self.local = None
        for p in places:
            p.close()
        waiting, self.waiting = self.waiting, {}
        for jid, (done, base) in waiting.items():
            done(jid - base, ("lost", b"", "response", 0, 0.0))


POOL = Pool(0)  # the probes' pool; the daemon sets its size (`configure`)


def configure(workers: int, log: Any) -> None:
    """Size the pool from `globals.probe_workers` (at start and on reload)."""
    global POOL
    if workers != POOL.workers:
        POOL.retire()
        POOL = Pool(workers, log)
    POOL.log = log
