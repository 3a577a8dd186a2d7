"""Shared fixtures; the helper modules beside this file (apiclient, daemons, httpserver,
pki) are importable from every test folder."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

# The tree under test is the one this conftest sits in, also for the daemons and VMs the
# tests start, whatever checkout an editable install points at.
_SRC = str(Path(__file__).resolve().parents[1] / "src")
sys.path.insert(0, _SRC)
os.environ["PYTHONPATH"] = os.pathsep.join(
    p for p in (_SRC, os.environ.get("PYTHONPATH", "")) if p)
sys.path.insert(0, str(Path(__file__).resolve().parent))


@pytest.fixture
def daemons() -> Iterator[list[Any]]:
    """Daemon subprocesses a test started (daemons.Daemon); killed if still running at the end."""
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


@pytest.fixture
def fill_disk() -> Callable[[Path], None]:
    """fill(path): write zeros to `path` until its filesystem is full (a full state disk)."""

    def fill(path: Path) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT)
        try:
            while os.write(fd, b"\0" * 4096):
                pass
        except OSError:
            pass
        finally:
            os.close(fd)

    return fill
