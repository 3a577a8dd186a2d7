"""Who may use the control socket: the CLI run as other users (real uids and groups,
dropped in a subprocess) against a running daemon. Root, the daemon's user and members
of the daemon's group get in without the token; anyone else needs it; a daemon that is
not running is said to be so in one line."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Iterator

import pytest

from apiclient import wait_socket
from daemons import Daemon, setup

NOBODY = 65534  # uid and gid of nobody/nogroup on Debian
OTHER_UID = 60123  # a user with no passwd entry: credentials are numbers to the kernel

# Run as root, import what the CLI needs, then drop to the given credentials: the
# interpreter lives under /root (0700), which the dropped process could not read.
AS_USER = """
import os, sys, asyncio, json, errno, grp, aiohttp, aiohttp.connector
import pymon.cli, pymon.ops.client, pymon.ops.vrrp
uid, gid, groups = int(sys.argv[1]), int(sys.argv[2]), [int(g) for g in sys.argv[3].split(",") if g]
os.setgroups(groups)
os.setgid(gid)
os.setuid(uid)
sys.exit(pymon.cli.main(sys.argv[4:]))
"""

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run the client as other users")


def as_user(uid: int, gid: int, groups: list[int], *argv: str,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", AS_USER, str(uid), str(gid), ",".join(map(str, groups)), *argv],
                          capture_output=True, text=True, timeout=60, env={**os.environ, **(env or {})})


@pytest.fixture
def sockdir() -> Iterator[Path]:
    """A directory others may traverse (pytest's tmp_path is 0700), as /var/lib/pymon
    (0750 pymon:pymon) is for the group."""
    d = Path(tempfile.mkdtemp(prefix="pymon-sock-"))
    d.chmod(0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def test_socket_access_by_credentials(tmp_path: Path, sockdir: Path, daemons: list[Daemon]) -> None:
    sock = sockdir / "pymon.sock"
    cfg = setup(tmp_path, """  g:
    s:
      interval: 1s
      monitor: {name: rec, dir: "%s"}
""" % tmp_path, groups="g: [h1]", glob=f", control_socket: {sock}")
    d = Daemon(cfg)
    daemons.append(d)
    wait_socket(sock)
    assert oct(sock.stat().st_mode & 0o777) == "0o660"
    gid = os.getegid()  # the daemon's group (it runs as root here, as the test does)
    status = ("status", "--json", "--socket", str(sock))

    # root: no token file read (none named), no token sent: allowed by its credentials
    r = subprocess.run([sys.executable, "-m", "pymon", *status, "--token-file", "/nonexistent"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["services"][0]["service"] == "s"

    # a member of the daemon's group, supplementary: it cannot read the 0600 token file
    # and needs not; what it changes is recorded under its uid
    r = as_user(NOBODY, NOBODY, [gid], *status)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["services"][0]["service"] == "s"
    r = as_user(NOBODY, NOBODY, [gid], "disable", "host", "h1", "--reason", "disk", "--socket", str(sock))
    assert r.returncode == 0, r.stderr
    dis = json.loads(subprocess.run([sys.executable, "-m", "pymon", "status", "--json", "--socket", str(sock)],
                                    capture_output=True, text=True, timeout=60).stdout)["disabled"]
    assert dis["host"]["h1"]["by"] == "nobody (uid 65534)"
    # ... and primary
    r = as_user(OTHER_UID, gid, [], *status)
    assert r.returncode == 0, r.stderr

    # not a member: the socket's mode keeps it out, and the CLI says why in one line
    r = as_user(NOBODY, NOBODY, [], *status)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [
        f"pymon status: permission denied on {sock}: run as root, the daemon's user, or a member of the group "
        f"{__import__('grp').getgrgid(sockdir.stat().st_gid).gr_name}"]

    # a socket made wider by hand does not let it in: the daemon checks the credentials itself
    sock.chmod(0o666)
    r = as_user(NOBODY, NOBODY, [], *status)
    assert r.returncode == 1
    assert "missing or wrong token" in r.stderr and "(HTTP 401)" in r.stderr, r.stderr
    r = as_user(NOBODY, NOBODY, [], "enable", "host", "h1", "--socket", str(sock))
    assert r.returncode == 1 and "(HTTP 401)" in r.stderr
    r = as_user(NOBODY, NOBODY, [], "vrrp", "MASTER", "--socket", str(sock))  # keepalived's hook route too
    assert r.returncode == 1 and "(HTTP 401)" in r.stderr
    # ... but the token does
    token = (tmp_path / "token").read_text().strip()
    r = as_user(NOBODY, NOBODY, [], *status, env={"PYMON_TOKEN": token})
    assert r.returncode == 0, r.stderr
    assert d.stop() == 0


def test_not_running_is_one_line(tmp_path: Path) -> None:
    missing = tmp_path / "pymon.sock"
    r = subprocess.run([sys.executable, "-m", "pymon", "status", "--socket", str(missing)],
                       capture_output=True, text=True, timeout=60)
    assert (r.returncode, r.stderr) == (2, f"pymon status: pymon is not running: no socket at {missing} "
                                           "(-c FILE or --socket PATH if it runs with another config)\n")
    # a socket left behind by a daemon that died: bound, nobody listening
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(str(missing))
    s.close()
    r = subprocess.run([sys.executable, "-m", "pymon", "reload", "--socket", str(missing)],
                       capture_output=True, text=True, timeout=60)
    assert (r.returncode, r.stderr) == (2, f"pymon reload: pymon is not running: nothing listens on {missing} "
                                           "(left by a daemon that stopped)\n")
