"""Polling for a condition in the in-VM tests, saying what the world looked like when it
did not come true."""

from __future__ import annotations

import time
from typing import Callable

from ipvsadm_reader import sh


def ipvsadm_state() -> str:
    return "ipvsadm -Ln:\n" + sh("ipvsadm -Ln")


def wait_until(pred: Callable[[], bool], timeout: float, what: str = "", *, step: float = 0.1,
               state: Callable[[], str] = ipvsadm_state) -> float:
    """Seconds until pred() held, polled every `step`; AssertionError with `what` and
    state() (by default the root namespace's `ipvsadm -Ln`) if not within `timeout`."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if pred():
            return time.monotonic() - start
        time.sleep(step)
    raise AssertionError(f"not within {timeout}s{': ' + what if what else ''}; {state()}")
