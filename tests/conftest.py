"""Shared fixtures."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any, Callable, Iterator

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


@pytest.fixture
def mount_tmpfs(tmp_path: Path) -> Iterator[Callable[[str, str], Path]]:
    """mount(name, options) -> a tmpfs mounted at tmp_path/name with those mount options
    (a small, a full or a read-only disk); unmounted at the end. Needs root."""
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a tmpfs")
    mounted: list[Path] = []

    def mount(name: str, options: str) -> Path:
        mnt = tmp_path / name
        mnt.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", options, "pymon-test", str(mnt)], check=True)
        mounted.append(mnt)
        return mnt

    yield mount
    for mnt in reversed(mounted):
        subprocess.run(["umount", "-l", str(mnt)], check=False)
