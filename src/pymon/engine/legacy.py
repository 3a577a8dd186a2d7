"""mon's exec protocol for the monitor and alert scripts operators already have.

Always an argv list, never a shell; each run in its own process group so a hard
timeout kills the script and everything it started; output is bounded so a script
printing megabytes cannot eat the daemon's memory.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MAX_OUTPUT = 256 * 1024
# One environment value handed to a script (MON_LAST_OUTPUT is the last run's output):
# the kernel refuses an exec whose single string passes 128 KiB (MAX_ARG_STRLEN), which
# would fail every later run. Longer values are cut, and say so at their end.
MAX_ENV_VALUE = 16 * 1024
TRUNCATED = "\n[truncated by pymon: {n} bytes in all]"


@dataclass(frozen=True)
class Run:
    retval: int  # exit status; -N killed by signal N; 124 on timeout (as timeout(1))
    output: str
    duration_s: float
    timed_out: bool = False
    error: str = ""  # could not start at all


def mon_argv(script: Path, args: tuple[str, ...], hosts: list[str]) -> list[str]:
    """Configured args + hosts; mon passes no hosts when the args end with `;;`."""
    if args and args[-1] == ";;":
        return [str(script), *args[:-1]]
    if args and args[-1].endswith(";;"):
        return [str(script), *args[:-1], args[-1][:-2]]
    return [str(script), *args, *hosts]


def alert_argv(script: Path, kind: str, group: str, service: str, hosts: list[str], when: float,
               args: tuple[str, ...]) -> list[str]:
    """mon's call_alert: `-h` carries every host of the group, not just the failing ones."""
    argv = [str(script), "-s", service, "-g", group, "-h", " ".join(hosts), "-t", str(int(when))]
    if kind == "upalert":
        argv.append("-u")
    return argv + list(args)


async def run(argv: list[str], env: dict[str, str], timeout: float, stdin: str | None = None,
              keep_caps: bool = False) -> Run:
    """Run a script. Unless `keep_caps`, it runs without the daemon's capabilities
    (CAP_NET_ADMIN, CAP_NET_RAW under systemd): its ambient and inheritable sets are
    cleared between fork and exec, so a script that is not root has none after exec."""
    start = time.monotonic()
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env={**os.environ, **env},
            start_new_session=True,
            preexec_fn=None if keep_caps or not _CAPS.needed() else _CAPS.drop,
        )
    except OSError as e:
        return Run(127, "", time.monotonic() - start, error=f"cannot run {argv[0]}: {e.strerror}")
    try:
        out = await asyncio.wait_for(_talk(proc, stdin), timeout)
    except (Exception, asyncio.CancelledError) as e:  # noqa: BLE001 - the script never outlives its run
        _killpg(proc)
        _kill_escaped(proc)
        await proc.wait()
        _close(proc)
        if isinstance(e, asyncio.CancelledError):
            raise
        if isinstance(e, asyncio.TimeoutError):
            return Run(124, "", time.monotonic() - start, timed_out=True)
        return Run(127, "", time.monotonic() - start, error=f"talking to {argv[0]}: {type(e).__name__}: {e}")
    rc = await proc.wait()
    _killpg(proc)  # children left behind by the script die with it
    _close(proc)
    return Run(rc, out.decode("utf-8", "replace"), time.monotonic() - start)


class _Caps:
    """Clearing a child's ambient and inheritable capabilities (prctl, capset) through
    libc, with everything it needs made before the fork: between fork and exec the child
    only calls into libc. Needed only when this process holds ambient or inheritable
    capabilities at all (/proc/self/status)."""

    PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL = 47, 4
    VERSION_3 = 0x20080522

    def __init__(self) -> None:
        self.libc: Any = None
        self._needed: bool | None = None

    def needed(self) -> bool:
        if self._needed is None:
            self._needed = False
            try:
                status = Path("/proc/self/status").read_text()
                sets = {k: int(v, 16) for k, _, v in (ln.partition(":\t") for ln in status.splitlines())
                        if k in ("CapInh", "CapAmb")}
                if any(sets.values()):
                    import ctypes

                    self.libc = ctypes.CDLL(None, use_errno=True)
                    self.header = (ctypes.c_uint32 * 2)(self.VERSION_3, 0)
                    self.data = (ctypes.c_uint32 * 6)()
                    self._needed = True
            except (OSError, ValueError):
                pass
        return self._needed

    def drop(self) -> None:  # pragma: no cover - in the forked child, before exec
        libc = self.libc
        libc.prctl(self.PR_CAP_AMBIENT, self.PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)
        if libc.capget(self.header, self.data) == 0:
            self.data[2] = self.data[5] = 0  # inheritable, both 32-bit halves
            libc.capset(self.header, self.data)


_CAPS = _Caps()


def _close(proc: asyncio.subprocess.Process) -> None:
    """Close our ends of the pipes now: a child that left the process group (setsid)
    may still hold their other ends, and the transport would wait for it."""
    transport = getattr(proc, "_transport", None)
    if transport is not None:
        transport.close()


def _kill_escaped(proc: asyncio.subprocess.Process) -> None:
    """SIGKILL every process still holding the script's output pipe: children that left
    its process group (setsid, daemonizing) and would keep the pipe, and themselves,
    alive. Found by the pipe's inode in /proc/*/fd; processes of other users are out of
    reach and left alone. Only after a timeout: a script that ends with its output
    closed leaves nothing to find."""
    stdout = proc.stdout
    transport = getattr(stdout, "_transport", None) if stdout is not None else None
    pipe_obj = transport.get_extra_info("pipe") if transport is not None else None
    if pipe_obj is None:
        return
    try:
        pipe = os.readlink(f"/proc/self/fd/{pipe_obj.fileno()}")
    except (OSError, ValueError):
        return
    me = os.getpid()
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == me:
            continue
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
            if any(os.readlink(f"/proc/{pid}/fd/{f}") == pipe for f in fds):
                os.kill(int(pid), signal.SIGKILL)
        except OSError:  # gone, or another user's
            continue


async def _talk(proc: asyncio.subprocess.Process, stdin: str | None) -> bytes:
    assert proc.stdout is not None
    # a script that exits without reading its input: asyncio then raises on drain, uvloop
    # has already closed the transport (and would raise RuntimeError on the write)
    if stdin is not None and proc.stdin is not None and not proc.stdin.is_closing():
        try:
            proc.stdin.write(stdin.encode())
            await proc.stdin.drain()
            proc.stdin.close()
        except (BrokenPipeError, ConnectionResetError):
            pass
    buf = bytearray()
    while chunk := await proc.stdout.read(65536):
        if len(buf) < MAX_OUTPUT:
            buf += chunk[: MAX_OUTPUT - len(buf)]
    await proc.wait()
    return bytes(buf)


def exit_text(retval: int) -> str:
    """'exit status 2', or 'killed by signal 11 (SIGSEGV)' for a script that crashed."""
    if retval < 0:
        try:
            name = f" ({signal.Signals(-retval).name})"
        except ValueError:
            name = ""
        return f"killed by signal {-retval}{name}"
    return f"exit status {retval}"


def _killpg(proc: asyncio.subprocess.Process) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def monitor_env(group: str, service: str, description: str, statedir: Path, logdir: Path, cfbase: Path,
                extra: dict[str, str], state: dict[str, str | None]) -> dict[str, str]:
    """mon's environment for a script: `state` holds mon's MON_* state variables, None
    where mon has them undefined (not exported); a "0" is exported, as mon does."""
    env = dict(extra)
    env.update(MON_GROUP=group, MON_SERVICE=service, MON_STATEDIR=str(statedir),
               MON_LOGDIR=str(logdir), MON_CFBASEDIR=str(cfbase))
    if description:
        env["MON_DESCRIPTION"] = description
    for k, v in state.items():
        if v is not None:
            env[k] = v
    for k, v in env.items():
        if len(v) > MAX_ENV_VALUE // 4:  # a str of this many characters may pass the bound in UTF-8
            env[k] = bounded_env(v)
    return env


def bounded_env(v: str) -> str:
    """`v`, cut to MAX_ENV_VALUE bytes of UTF-8 with the marker included."""
    raw = v.encode("utf-8", "surrogateescape")
    if len(raw) <= MAX_ENV_VALUE:
        return v
    mark = TRUNCATED.format(n=len(raw))
    return raw[:MAX_ENV_VALUE - len(mark)].decode("utf-8", "ignore") + mark
