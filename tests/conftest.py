"""Shared fixtures."""

from __future__ import annotations

from typing import Any, Iterator

import pytest


@pytest.fixture
def daemons() -> Iterator[list[Any]]:
    """Daemon subprocesses a test started (test_daemon.Daemon); killed if still running at the end."""
    running: list[Any] = []
    yield running
    for d in running:
        if d.proc.poll() is None:
            d.proc.kill()
            d.proc.wait()
