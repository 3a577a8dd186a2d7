"""The freespace probe on a small tmpfs the test fills up, and on real paths."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import pytest

from pymon.plugin import Target
from pymon.probes import validate_params
from pymon.probes import freespace as fs
from pymon.probes.freespace import freespace as probe

T = Target("localhost", "director", "disk")


@pytest.fixture
def tmpfs(mount_tmpfs: Callable[[str, str], Path]) -> Path:
    """A 1 MiB tmpfs with 64 inodes."""
    return mount_tmpfs("mnt", "size=1m,nr_inodes=64")


def fill(mnt: Path, nbytes: int) -> None:
    (mnt / "ballast").write_bytes(b"\0" * nbytes)


async def test_tmpfs_bytes_and_percent(tmpfs: Path) -> None:
    m = str(tmpfs)
    r = await probe(T, {"paths": {m: ["512KB", "50%"]}})
    assert r.ok, r
    assert r.summary == f"{m}: 1.0MB free (100%)"
    fill(tmpfs, 700 * 1024)
    r = await probe(T, {"paths": {m: "512KB"}})
    assert not r.ok and r.summary == f"{m}: 324.0KB free < 512KB"
    r = await probe(T, {"paths": {m: ["50%", 300 * 1024]}})
    assert not r.ok and r.summary == f"{m}: 31.6% free < 50%"
    assert r.value == pytest.approx(31.64, abs=0.1)
    fill(tmpfs, 1024 * 1024 - 4096)
    r = await probe(T, {"paths": {m: "8kb"}})
    assert not r.ok and r.summary == f"{m}: 4.0KB free < 8kb"


async def test_tmpfs_inodes(tmpfs: Path) -> None:
    m = str(tmpfs)
    assert (await probe(T, {"paths": {m: ["10i", "50% inodes"]}})).ok
    for i in range(58):
        (tmpfs / f"f{i}").touch()
    r = await probe(T, {"paths": {m: ["10 inodes", "50% inodes", "100KB"]}})
    assert not r.ok
    assert r.summary == f"{m}: 5 inodes free < 10; {m}: 7.8% inodes free < 50% inodes"


async def test_mon_argv_form(tmpfs: Path) -> None:
    m = str(tmpfs)
    assert fs.from_mon_args([f"{m}:512", "/:1GB", "/var:5%"]) == {
        "paths": {m: "512KB", "/": "1GB", "/var": "5%"}}
    fill(tmpfs, 700 * 1024)
    r = await probe(T, {"argv": [f"{m}:512", "/:1B"]})
    assert not r.ok and r.summary == f"{m}: 324.0KB free < 512KB"
    assert (await probe(T, {"argv": [f"{m}:300"]})).ok


async def test_real_paths_around_actual_free_space() -> None:
    st = os.statvfs("/")
    free = st.f_bavail * st.f_frsize
    assert (await probe(T, {"paths": {"/": free // 2, "/tmp": "1KB"}})).ok
    r = await probe(T, {"paths": {"/": free * 2}})
    assert not r.ok and r.summary.startswith("/: ") and " free < " in r.summary
    r = await probe(T, {"paths": {"/": "1B", "/no/such/dir": "1B"}})
    assert not r.ok and r.summary == "/no/such/dir: no such file or directory"
    assert r.detail.startswith("/: ")


def test_thresholds_and_params() -> None:
    assert fs.parse_threshold("1.5GB") == fs.Threshold("bytes", 1.5 * 1024**3, "1.5GB")
    assert fs.parse_threshold("500 mb").amount == 500 * 1024**2
    assert fs.parse_threshold("5%").kind == "pct"
    assert fs.parse_threshold("5%i").kind == "ipct"
    assert fs.parse_threshold("1000 inodes") == fs.Threshold("inodes", 1000, "1000 inodes")
    assert fs.parse_threshold(4096).kind == "bytes"
    for bad in ("lots", "5%GB", "101%", -1, True):
        with pytest.raises(ValueError):
            fs.parse_threshold(bad)
    assert validate_params("freespace", {"paths": {"/": "1GB", "var": "1XB"}, "ttl": 3}) == [
        "paths var: bad threshold '1XB' (expected e.g. 500MB, 5%, 1000i, 5% inodes)",
        "paths: 'var' is not an absolute path",
        "unknown param: ttl",
    ]
    assert validate_params("freespace", {}) == ["paths: expected a mapping of path to threshold, got None"]
    assert validate_params("freespace", {"argv": ["nocolon"]}) == ["argv: expected path:threshold, got 'nocolon'"]
