"""Plain HTTP/1.0 exchanges (connect, send, read the answer) with many real servers at
once, on one epoll; in the daemon's loop or in worker processes (`pymon.probes.http.pool`).

Why not the loop's `sock_*` calls: at thousands of checks a second each of their steps
costs a future, a handle and a selector update, more than the exchange itself. Here a
check in flight is a socket and one small object, and the loop sees one file
descriptor. Most of what remains is the kernel's TCP work on both ends of the
connection (bench/throughput.py: ~70 µs of system time per check on loopback), which
`probe_workers: N` moves to N worker processes running this file as a script (stdlib
only, no asyncio: they start in milliseconds and hold about 11 MiB), leaving the
daemon's loop the schedule and the state machine.

An exchange ends in an `Outcome` (kind, data, phase, received, seconds it took);
`_http10` turns it into the probe's Result:
- ("tls", str) the TLS handshake failed: "certificate verify failed: ..." or "TLS error: ...";
- ("status", int) the status is accepted and a well-formed head is all that was asked
  for (no header or body checks): the common verdict, without the head's bytes to copy
  back from a worker and parse again;
- ("answer", bytes) the response head, and the body when asked for or when the status
  is not accepted (bounded);
- ("closed", bytes) the server closed before the end of the head;
- ("too_big", bytes) more than MAX_HEAD bytes without the end of the head;
- ("timeout", b"") the deadline passed in `phase` (connect / response / body);
- ("oserror", errno) connect or I/O failed (every address tried);
- ("error", str) handling the exchange raised (an answer nothing foresaw): that host
  fails, the other exchanges go on;
- ("lost", b"") the worker running it died (the daemon starts another).
"""

from __future__ import annotations

import bisect
import errno
import functools
import os
import pickle
import re
import select
import signal
import socket
import struct
from collections import deque
from _socket import socket as _CSocket  # socket.socket's Python layer (init, close) is per-exchange work
import time
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    import ssl

MAX_HEAD = 64 * 1024  # response line + headers; more is a bad response
BATCH_S = 0.002  # jobs to a worker and outcomes from it wait this long for company: one wake-up per batch
_RECV = 65536
_IN, _OUT = select.EPOLLIN, select.EPOLLOUT
_ERR = select.EPOLLERR | select.EPOLLHUP
# Edge-triggered, both ways, from the start: one epoll_ctl per exchange, not three (no
# switch from "writable" to "readable"), and the connect's outcome read from SO_ERROR only
# when epoll reports an error. Reads go on until the socket is drained (`_look`).
_WATCH = _IN | _OUT | select.EPOLLET
_MAX_EVENTS = 1024
# Closed with a reset, not a FIN: once the answer is in, the connection has nothing left to
# say, and the FIN, its ACK and the server's TIME_WAIT are kernel work on both ends (kernel
# bench: 6-10 % less system time per check). HAProxy closes its health checks the same way,
# with SO_LINGER 0; here the head is read with MSG_PEEK and left in the socket, and a socket
# closed with unread data is reset by the kernel (RFC 2525, 2.17): setsockopt with a struct
# costs two failed argument parses in CPython before the one that fits (9 % of the daemon's
# instructions per check, callgrind), a peek costs nothing more than the read it replaces.
_PEEK = socket.MSG_PEEK
# Workers yield the CPU to the daemon's loop: when the cores are busy, a worker that waits
# makes an answer a little later, a loop that waits starts every check late (10,000 real
# servers on 2 cores beside nginx: start lag p99 85-230 ms at nice 0, 41-58 ms at 5).
WORKER_NICE = 5
# A deadline seen more than LATE_S after it was due found this process late (not scheduled,
# stopped, its loop held): an exchange whose deadline it is gets, once, as long again as the
# process was late (at most its timeout) before it fails, since nothing tells when in the
# window the process was not running (the connect's answer unread, the request unsent). The
# same bound as `pymon.plugin.LATE_S` (a test holds them equal): this file imports the
# standard library only. Exchanges given more time wait in the deadlines' queue `_LATE` (no
# timeout is negative), sorted by their new deadline.
LATE_S = 0.01
_LATE = -1.0
# A worker is behind when a batch of jobs waited in its socket longer than BEHIND_S before
# it read it, or when it saw a deadline late: it says so with its next outcomes, and the
# daemon runs new checks in its own loop until the worker's outcomes say it is not, or it
# has none in flight (`pool.Pool._flush`). A worker short of CPU otherwise falls behind
# without bound: every check in flight for seconds, the daemon's guard failing healthy
# servers, the backlog held in the daemon's memory.
BEHIND_S = 0.1

Outcome = tuple[str, Any, str, int, float]  # (kind, data, phase, bytes received, seconds)
Addrs = list[tuple[int, tuple[Any, ...]]]  # [(family, sockaddr), ...] to try in turn
# TLS: None for plain HTTP, else (verify, server name or None for the address, resume)
Tls = tuple[bool, str | None, bool] | None
How = tuple[float, bool, int, tuple[tuple[int, int], ...], bool, Tls]  # timeout s, want_body, max_body, accepted status ranges, want_head, tls
Job = tuple[int, Addrs, bytes, float, bool, int, tuple[tuple[int, int], ...], bool, Tls]  # (id, addrs, request, *How)
# A resumed TLS session skips the certificate check (the server proves it holds the
# earlier, verified session's secret instead): a real server's sessions are resumed for
# at most this long after its last full handshake, so a replaced or expired certificate
# is seen within it.
RESUME_S = 60.0


def _deadline(entry: tuple[float, "_Conn"]) -> float:
    return entry[0]


class _Conn:
    __slots__ = ("id", "sock", "fd", "addrs", "phase", "buf", "head_end", "sep", "want", "chunked", "job", "start")

    def __init__(self, job: Job, now: float):
        self.id, self.addrs = job[0], list(job[1])  # addresses still to try
        self.start = now
        self.job = job
        self.sock: _CSocket | None = None
        self.fd = -1
        self.phase, self.buf, self.head_end, self.sep = "connect", bytearray(), -1, 4
        self.want, self.chunked = 0, False


class _TlsConn(_Conn):
    """An HTTPS exchange: `sock` becomes an ssl.SSLSocket (same fd) once TCP is up."""

    __slots__ = ("key",)


@functools.lru_cache(maxsize=2)
def tls_context(verify: bool) -> ssl.SSLContext:
    """One context per verify mode: loading the CA store is slow; sessions are only
    resumed through the context that made them. Without verification, no CA store at
    all: OpenSSL builds and checks the chain even when told not to verify, and against
    the system's store that is a quarter of a client handshake's CPU. `ssl` is imported
    by the HTTPS functions only: a probe worker with plain HTTP holds 4.5 MiB less."""
    import ssl

    if verify:
        return ssl.create_default_context()
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def _tls_failure(e: ssl.SSLError) -> str:
    import ssl

    if isinstance(e, ssl.SSLCertVerificationError):
        return f"certificate verify failed: {e.verify_message or e.reason}"
    return f"TLS error: {str(e).splitlines()[0] if str(e) else type(e).__name__}"


def _status(head: bytes) -> int:
    parts = head.split(b" ", 2)
    # bytes.isdigit is ASCII-only; three digits, as int() refuses more than 4,300
    return int(parts[1]) if len(parts) > 1 and len(parts[1]) == 3 and parts[1].isdigit() else 0


def head_end(data: bytes | bytearray) -> tuple[int, int]:
    """Where the head ends and the length of the blank line ending it: CRLF CRLF, or bare
    LFs (aiohttp and mon's http.monitor accept a head whose lines end with LF only).
    (-1, 0) when the head is not complete."""
    end = data.find(b"\r\n\r\n")
    if end >= 0:
        return end, 4
    end = data.find(b"\n\n")
    if end >= 0:
        return end, 2
    end = data.find(b"\n\r\n")
    return (end, 3) if end >= 0 else (-1, 0)


# A head that `_http10._parse_head` accepts (a status line, then lines with a colon), each
# line with its CRLF, stricter than the parser (no lone LF, no tab after the status: such
# heads take the full path, which judges them as before). One C call: splitting the head
# into lines and testing each in Python was a quarter of the daemon's Python time per check
# (py-spy, kernel bench). Values are `.*` (a byte loop in sre), not a character class
# (a set lookup per byte): 18 % fewer instructions per head (callgrind). The atomic group
# and the class before the colon keep a hostile head linear: `.*:` would retry every colon
# of a line. Group 1 is the status code.
_WELL_FORMED = re.compile(rb"HTTP/\S* (\d\d\d)(?: .*)?\r\n(?>[^:\n]*:.*\r\n)*")


def _header(head: bytes, name: bytes) -> bytes | None:
    for line in head.lower().split(b"\n")[1:]:
        key, sep, value = line.partition(b":")
        if sep and key.strip() == name:
            return value.strip()
    return None


class Exchanger:
    """Runs exchanges on its own epoll; `done(id, outcome)` is called once per job.
    Driven from outside: `handle` for each ready fd, `expire` for deadlines."""

    def __init__(self, done: Callable[[int, Outcome], None]):
        """A socket leaves the epoll when it is closed (no epoll_ctl per exchange for it),
        unless a child forked in between still holds a copy: until that child execs, the
        closed socket's events come under its fd number, which a new exchange may have
        taken. Such an event is harmless: a read finds nothing (EAGAIN), and a send on a
        socket still connecting is refused with EAGAIN, taken as "not yet connected"."""
        self.done = done
        self.ep = select.epoll()
        self.conns: dict[int, _Conn] = {}
        # HTTPS exchanges apart from the plain ones, so that a plain exchange's path does not
        # ask which it is; and the TLS sessions to resume: (address, server name, verify) ->
        # (session, monotonic time of the last full handshake)
        self.tls: dict[int, _TlsConn] = {}
        self.sessions: dict[tuple[Any, ...], tuple[ssl.SSLSession, float]] = {}
        self.resumed = 0  # handshakes that resumed a session (tests, benchmarks)
        # Deadlines, one queue per timeout: exchanges with the same timeout end in the order
        # they started (the clock only goes forward), so a deque's head is its earliest. A
        # heap's push and pop compared tuples: 4 % of the daemon's instructions per check.
        self.deadlines: dict[float, deque[tuple[float, _Conn]]] = {}
        # The clock as read once per batch of events (or of jobs), not per exchange: an
        # exchange's start and end are known to within one pass over a batch. Under qemu
        # without a TSC clocksource every read is a syscall and an emulated HPET access:
        # 13 % of both pymon's and keepalived's CPU per check in the kernel bench (perf).
        self.now = time.monotonic()

    def close(self) -> None:
        for c in [*self.conns.values(), *self.tls.values()]:
            self._finish(c, ("lost", b"", c.phase, 0))
        self.ep.close()

    def submit(self, job: Job, now: float) -> None:
        """Start an exchange; `now` is the clock, read by the caller once for all it submits."""
        self.now = now
        c = _Conn(job, now) if job[8] is None else _TlsConn(job, now)
        q = self.deadlines.get(job[3])
        if q is None:
            q = self.deadlines[job[3]] = deque()
        q.append((now + job[3], c))
        self._connect(c, None)

    def next_deadline(self) -> float | None:
        at = None
        for timeout, q in list(self.deadlines.items()):
            while q and q[0][1].phase == "done":
                q.popleft()
            if not q:
                # an empty queue goes (the next submit with its timeout makes a new one), so a
                # timeout no service has any more after a reload leaves nothing behind
                del self.deadlines[timeout]
            elif at is None or q[0][0] < at:
                at = q[0][0]
        return at

    def expire(self, now: float) -> None:
        """Each exchange past its deadline: first what its socket holds, as if epoll had
        reported it both ways (an answer or a connect that came while nobody read it is
        not the server's fault; a worker reads at most 1,023 events a pass); then, if this
        process saw the deadline more than LATE_S late, more time once (LATE_S above);
        else a timeout, in the phase the deadline found. Only exchanges past their
        deadline pay for any of it."""
        self.now = now
        for timeout, q in list(self.deadlines.items()):  # a `done` callback may start exchanges
            while q and q[0][0] <= now:
                at, c = q.popleft()
                if c.phase == "done":
                    continue
                phase = c.phase
                try:
                    self.handle(c.fd, _IN | _OUT | _ERR)
                except Exception as e:
                    self._failed(c, e)
                if c.phase == "done":
                    continue
                late = now - at
                if timeout != _LATE and late > LATE_S:
                    q2 = self.deadlines.get(_LATE)
                    if q2 is None:
                        q2 = self.deadlines[_LATE] = deque()
                    bisect.insort(q2, (now + min(late, timeout), c), key=_deadline)
                else:
                    self._finish(c, ("timeout", b"", phase, self._received(c)))

    def _look(self, c: _Conn) -> None:
        """Read what has arrived, to the end: the epoll is edge-triggered. A read shorter
        than asked for drained the socket's data (the next data is a new event), but not
        its EOF: a server that answers and closes at once (HTTP/1.0 without a length)
        sends no event after the one its answer came with, so an exchange that is not
        over after a read reads again, until EAGAIN or the EOF. The first read
        only peeks: most exchanges end with it, and their socket closes with the answer
        unread (a reset, see _PEEK); one that goes on takes the peeked bytes out."""
        s = c.sock
        assert s is not None
        while c.phase != "done":
            peek = not c.buf
            try:
                data = s.recv(_RECV, _PEEK) if peek else s.recv(_RECV)
            except BlockingIOError:
                return
            except OSError as e:
                return self._finish(c, ("oserror", e.errno or errno.EIO, c.phase, self._received(c)))
            self._feed(c, data)
            if peek and data and c.phase != "done":
                s.recv(len(data))  # queued, so it cannot fail: exactly the peeked bytes

    def ready(self) -> None:
        """Handle every fd that is ready now (epoll hands out at most 1,023 at a time)."""
        poll = self.ep.poll
        while True:
            events = poll(0, _MAX_EVENTS)
            self.now = time.monotonic()
            self.handle_all(events)
            if len(events) < _MAX_EVENTS:
                return

    def handle_all(self, events: list[tuple[int, int]], skip: int = -1) -> None:
        """`handle` each event, but `skip`'s. Whatever one exchange raises (a server's
        answer no parser foresaw, a bug) fails that exchange alone, and the rest of the
        batch goes on: one try per batch, resumed after the event that raised."""
        handle, it = self.handle, iter(events)
        fd = -1
        while True:
            try:
                for fd, ev in it:
                    if fd != skip:
                        handle(fd, ev)
                return
            except Exception as e:
                c = self.conns.get(fd) or self.tls.get(fd)
                if c is not None:
                    self._failed(c, e)

    def _failed(self, c: _Conn, e: Exception) -> None:
        if c.phase != "done":
            self._finish(c, ("error", f"{type(e).__name__}: {e}"[:300], c.phase, self._received(c)))

    def _connect(self, c: _Conn, last: int | None) -> None:
        while c.addrs:
            fam, addr = c.addrs.pop(0)
            try:
                s = _CSocket(fam, socket.SOCK_STREAM | socket.SOCK_NONBLOCK)
            except OSError as e:
                last = e.errno
                continue
            rc = s.connect_ex(addr)
            if rc in (0, errno.EINPROGRESS):
                c.sock, c.fd = s, s.fileno()
                (self.conns if type(c) is _Conn else self.tls)[c.fd] = c  # type: ignore[index]
                self.ep.register(c.fd, _WATCH)
                return
            s.close()
            last = rc
        self._finish(c, ("oserror", last or errno.EHOSTUNREACH, "connect", 0))

    def handle(self, fd: int, ev: int) -> None:
        c = self.conns.get(fd)
        if c is None:
            t = self.tls.get(fd)
            if t is not None:
                self._tls_event(t, ev)
            return
        if c.phase == "connect":
            s = c.sock
            assert s is not None
            try:
                if ev & _ERR:
                    err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                    if err:
                        self._drop(c)
                        return self._connect(c, err) if c.addrs else self._finish(c, ("oserror", err, "connect", 0))
                elif not ev & _OUT:
                    return  # not connected yet
                s.send(c.job[2])  # the request: a few hundred bytes into an empty socket buffer
            except BlockingIOError:
                return  # not connected yet: an event that came under this fd for a closed socket
            except OSError as e:
                return self._finish(c, ("oserror", e.errno or errno.EIO, c.phase, 0))
            c.phase = "response"
            if not ev & _IN:
                return  # edge-triggered: the answer's arrival is an event of its own
        self._look(c)

    def _feed(self, c: _Conn, data: bytes) -> None:
        buf = c.buf
        buf += data
        if c.head_end < 0:
            end = buf.find(b"\r\n\r\n")
            if end < 0:  # not yet, or lines ended by bare LFs
                end, c.sep = head_end(buf)
            if end < 0:
                if not data:
                    return self._finish(c, ("closed", bytes(buf), c.phase, len(buf)))
                if len(buf) > MAX_HEAD:
                    return self._finish(c, ("too_big", b"", c.phase, len(buf)))
                return
            c.head_end = end
            job = c.job
            m = _WELL_FORMED.fullmatch(buf, 0, end + 2)
            plain = m is not None and not job[7]  # nothing in the head to check but its status
            code = int(m[1]) if m else _status(bytes(buf[:end]))
            if not job[4]:  # no body wanted
                for lo, hi in job[6]:
                    if lo <= code <= hi:
                        if plain:
                            return self._finish(c, ("status", code, c.phase, len(buf)))
                        return self._finish(c, ("answer", bytes(buf), c.phase, len(buf)))
            head = bytes(buf[:end])
            length = _header(head, b"content-length")
            max_body = job[5]
            # ASCII digits (bytes.isdigit), and few enough for int(): a hostile length raises nothing
            c.want = min(max_body, int(length)) if length and len(length) <= 18 and length.isdigit() else max_body
            c.chunked = (_header(head, b"transfer-encoding") or b"") == b"chunked"
            c.phase = "body"
        body = len(buf) - c.head_end - c.sep
        if (not data or body >= c.want and not c.chunked or c.chunked and (
                body >= c.job[5] + 64 or buf.endswith(b"0\r\n\r\n"))):
            self._finish(c, ("answer", bytes(buf), c.phase, len(buf)))

    # -- HTTPS: the same exchange after a TLS handshake on the connected socket --

    def _tls_event(self, c: _TlsConn, ev: int) -> None:
        import ssl

        if c.phase == "connect":
            s = c.sock
            assert s is not None
            if ev & _ERR:
                err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err:
                    self._drop(c)
                    return self._connect(c, err) if c.addrs else self._finish(c, ("oserror", err, "connect", 0))
            try:
                peer = s.getpeername()  # an event for a closed socket under this fd comes before the connect
            except OSError:
                return
            verify, name, resume = c.job[8]  # type: ignore[misc]
            # the request follows the client's Finished at once: with Nagle it waited for the
            # server's delayed ACK of the Finished, 40 ms, after a resumed handshake
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            c.key = (peer, name, verify)
            saved = self.sessions.get(c.key) if resume else None
            if saved is not None and self.now - saved[1] > RESUME_S:
                saved = None
            c.sock = tls_context(verify).wrap_socket(
                s, server_hostname=name or peer[0], do_handshake_on_connect=False,
                session=None if saved is None else saved[0])  # type: ignore[assignment]
            c.phase = "tls"
        if c.phase == "tls":
            ss: ssl.SSLSocket = c.sock  # type: ignore[assignment]
            try:
                ss.do_handshake()
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                return
            except ssl.SSLError as e:
                return self._finish(c, ("tls", _tls_failure(e), "tls", 0))
            except OSError as e:
                return self._finish(c, ("oserror", e.errno or errno.EIO, "tls", 0))
            if ss.session_reused:
                self.resumed += 1
            try:
                ss.send(c.job[2])  # fits in one record and an empty socket buffer
            except (ssl.SSLError, OSError) as e:
                return self._finish(c, ("oserror", getattr(e, "errno", None) or errno.EIO, "tls", 0))
            c.phase = "response"
        self._tls_look(c)

    def _tls_look(self, c: _Conn) -> None:
        """`_look` through TLS: records are read until the socket and OpenSSL's buffer are
        drained (SSLWantReadError), or the end; no peek (TLS has none)."""
        import ssl

        s: ssl.SSLSocket = c.sock  # type: ignore[assignment]
        while c.phase != "done":
            try:
                data = s.recv(_RECV)
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                return
            except ssl.SSLError as e:
                return self._finish(c, ("tls", _tls_failure(e), c.phase, self._received(c)))
            except OSError as e:
                return self._finish(c, ("oserror", e.errno or errno.EIO, c.phase, self._received(c)))
            self._feed(c, data)

    def _keep_session(self, c: _TlsConn, s: ssl.SSLSocket) -> None:
        """Keep the session of a full handshake for the next exchanges with this server,
        which resume it until the server refuses it or RESUME_S passes (a refusal is a
        full handshake, whose session is kept in turn). Taken at the end, not after the
        handshake: a TLS 1.3 server sends its tickets after it. Only after a full
        handshake: the `session` property copies the session through its DER encoding,
        a third of a resumed exchange's CPU if read every time."""
        if not c.job[8][2] or c.phase in ("connect", "tls") or s.session_reused:  # type: ignore[index]
            return
        session = s.session
        if session is not None:
            if len(self.sessions) >= 65536:
                self.sessions.clear()
            self.sessions[c.key] = (session, self.now)

    @staticmethod
    def _received(c: _Conn) -> int:
        return len(c.buf) - c.head_end - c.sep if c.phase == "body" else len(c.buf)

    def _drop(self, c: _Conn) -> None:
        s, c.sock = c.sock, None
        if s is not None:
            if self.conns.pop(c.fd, None) is None and self.tls.pop(c.fd, None) is not None:
                self._keep_session(c, s)  # type: ignore[arg-type]
            s.close()

    def _finish(self, c: _Conn, out: tuple[str, Any, str, int]) -> None:
        self._drop(c)
        c.phase = "done"
        self.done(c.id, (*out, self.now - c.start))


# -- framing between the daemon and its workers ----------------------------------------


def _frame(obj: object) -> bytes:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    return struct.pack("!I", len(data)) + data


class _Frames:
    """Length-prefixed pickles arriving in pieces on a non-blocking socket."""

    def __init__(self) -> None:
        self.buf = bytearray()

    def feed(self, data: bytes) -> list[Any]:
        self.buf += data
        out = []
        while len(self.buf) >= 4:
            (n,) = struct.unpack_from("!I", self.buf)
            if len(self.buf) < 4 + n:
                break
            out.append(pickle.loads(self.buf[4:4 + n]))
            del self.buf[:4 + n]
        return out


# -- a worker process ---------------------------------------------------------------


def worker(chan: socket.socket) -> None:
    """Read job batches from `chan`, run them, write outcome batches back; exit at EOF.
    A batch in is (the daemon's time.monotonic() when it sent it, jobs); one out is
    (behind, outcomes): the clock is the machine's, so the wait is this process's."""
    results: list[tuple[int, Outcome]] = []
    behind = False  # since the last outcomes went out (BEHIND_S)
    ex = Exchanger(lambda jid, out: results.append((jid, out)))
    chan.setblocking(False)
    cfd = chan.fileno()
    ex.ep.register(cfd, _IN)
    frames = _Frames()
    handle_all = ex.handle_all
    first = 0.0  # when the oldest unsent outcome arrived
    while True:
        at = ex.next_deadline()
        if results:
            at = first + BATCH_S if at is None else min(at, first + BATCH_S)
        events = ex.ep.poll(-1 if at is None else max(0.0, at - time.monotonic()))
        now = ex.now = time.monotonic()
        handle_all(events, cfd)
        for fd, ev in events:
            if fd != cfd:
                continue
            try:
                data = chan.recv(_RECV)
            except BlockingIOError:
                continue
            except OSError:  # the daemon is gone
                return
            if not data:
                return
            for sent, jobs in frames.feed(data):
                if now - sent > BEHIND_S:
                    behind = True
                for job in jobs:
                    ex.submit(job, now)
        ex.expire(now)
        if ex.deadlines.get(_LATE):  # given more time: it saw a deadline late
            behind = True
        if results and not first:
            first = now
        if results and now - first >= BATCH_S:
            first = 0.0
            chan.setblocking(True)
            try:
                chan.sendall(_frame((behind, results)))
            except OSError:
                return
            chan.setblocking(False)
            results.clear()
            behind = False


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's ^C is the daemon's to handle; EOF ends us
    os.nice(WORKER_NICE)
    worker(socket.socket(fileno=os.dup(0)))
