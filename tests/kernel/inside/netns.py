"""Run a Python callable inside a network namespace without exec'ing anything.

In the TCG guest every exec over 9p is slow (a new Python takes ~25 s, even
`ip netns exec ... wget` costs seconds), so the client side of network tests forks
this already-running interpreter, enters the namespace with setns(2) (Python 3.11
has no os.setns) and sends the result back through a pipe.
"""

from __future__ import annotations

import ctypes
import os
import pickle
from typing import Any, Callable

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def enter(ns: str) -> None:
    """Move this process (a forked child) into netns `ns` (made with `ip netns add`)."""
    fd = os.open(f"/run/netns/{ns}", os.O_RDONLY)
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        raise OSError(ctypes.get_errno(), f"setns({ns})")


def run_in_netns(ns: str, fn: Callable[..., Any], *args: Any) -> Any:
    """fn(*args) in netns `ns` (made with `ip netns add`); re-raises its exception."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(r)
            enter(ns)
            try:
                result: tuple[bool, Any] = (True, fn(*args))
            except BaseException as e:  # noqa: BLE001 - handed to the parent
                result = (False, e)
            try:
                data = pickle.dumps(result)
            except Exception as e:  # noqa: BLE001
                data = pickle.dumps((False, RuntimeError(f"unpicklable result: {e!r}")))
            with os.fdopen(w, "wb") as f:
                f.write(data)
        finally:
            os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        data = f.read()
    os.waitpid(pid, 0)
    if not data:
        raise RuntimeError(f"child in netns {ns} died without a result")
    ok, value = pickle.loads(data)
    if not ok:
        raise value
    return value
