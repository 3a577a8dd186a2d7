"""Run one function in a forked child and take back its pickled result.

Reading a big config leaves the daemon's heap fragmented for good: at 10,000 watches
the YAML events and the values built from them interleave with the objects that
survive, and Python keeps ~60 MiB of arenas that hold a few live objects each, where the
config itself needs ~25. In a child that garbage dies with the child; the parent only
unpickles the result, into a compact heap. Forked, not exec'd: the child starts with
every module already imported (a Python start costs a minute under qemu's TCG).
"""

from __future__ import annotations

import asyncio
import os
import pickle
import select
import signal
import time
import traceback
from typing import Any, Callable

CHILD_TIMEOUT_S = 300.0  # an answer that takes longer will not come (a hung child is killed)


class ChildDied(Exception):
    """The child ended without an answer (killed, or out of memory)."""


class TimedOut(ChildDied):
    """The child took longer than its timeout (a plugin that hangs at import...) and was killed."""


def call(fn: Callable[..., Any], *args: Any, timeout: float | None = None) -> Any:
    """fn(*args), computed in a child; its exception is raised here. Past `timeout`
    seconds the child is killed (SIGKILL, with its process group if it made one) and
    TimedOut raised: nothing the child runs can hold the caller for longer."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child; its answer is what the tests check
        os.close(r)
        _child(w, fn, args)
    os.close(w)
    deadline = None if timeout is None else time.monotonic() + timeout
    chunks = []
    with os.fdopen(r, "rb", buffering=0) as f:
        while True:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and (left <= 0 or not select.select([f], [], [], left)[0]):
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                raise TimedOut(f"no answer in {timeout:g}s (killed)")
            chunk = f.read(1 << 20)
            if not chunk:
                break
            chunks.append(chunk)
    data = b"".join(chunks)
    _, status = os.waitpid(pid, 0)
    return _answer(data, status)


async def call_async(fn: Callable[..., Any], *args: Any, timeout: float = CHILD_TIMEOUT_S) -> Any:
    """`call` from a running loop: forked in the loop's thread (forking from another
    thread of a threaded process can deadlock the child), the answer read without
    blocking the loop, a child silent for `timeout` killed (TimedOut)."""
    loop = asyncio.get_running_loop()
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.close(r)
        _child(w, fn, args)
    os.close(w)
    os.set_blocking(r, False)
    chunks: list[bytes] = []
    eof: asyncio.Future[None] = loop.create_future()

    def readable() -> None:
        try:
            data = os.read(r, 1 << 20)
        except BlockingIOError:
            return
        if data:
            chunks.append(data)
        elif not eof.done():
            eof.set_result(None)

    loop.add_reader(r, readable)
    timed_out = False
    try:
        async with asyncio.timeout(timeout):
            await eof
    except TimeoutError:
        os.kill(pid, signal.SIGKILL)
        timed_out = True
    finally:
        loop.remove_reader(r)
        os.close(r)
    _, status = os.waitpid(pid, 0)  # its end of the pipe is closed: the child has exited or is exiting
    if timed_out:
        raise TimedOut(f"no answer in {timeout:g}s (killed)")
    return _answer(b"".join(chunks), status)


def _answer(data: bytes, status: int) -> Any:
    if not data:
        sig = os.WTERMSIG(status) if os.WIFSIGNALED(status) else 0
        how = f"killed by signal {sig}" if sig else f"exit status {os.waitstatus_to_exitcode(status)}"
        raise ChildDied(f"the child process ended without an answer ({how})")
    ok, value = pickle.loads(data)
    if ok:
        return value
    raise value


def _child(w: int, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:  # pragma: no cover
    try:
        # the parent's asyncio loop wakes on this fd: a signal to the child must not look
        # like one to the parent, and a SIGTERM to the service ends the child too
        signal.set_wakeup_fd(-1)
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, signal.SIG_DFL)
        try:
            out: tuple[bool, Any] = (True, fn(*args))
        except BaseException as e:  # every failure goes back to the parent, with where it was
            e.add_note("in a forked child:\n" + "".join(traceback.format_tb(e.__traceback__)).rstrip())
            out = (False, e)
        try:
            data = pickle.dumps(out, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as e:
            data = pickle.dumps((False, RuntimeError(f"the child's answer cannot be pickled: {e}")))
        with os.fdopen(w, "wb") as f:
            f.write(data)
    finally:
        os._exit(0)
