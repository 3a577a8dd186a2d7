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

MAX_OUTPUT = 256 * 1024


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


async def run(argv: list[str], env: dict[str, str], timeout: float, stdin: str | None = None) -> Run:
    start = time.monotonic()
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env={**os.environ, **env},
            start_new_session=True,
        )
    except OSError as e:
        return Run(127, "", time.monotonic() - start, error=f"cannot run {argv[0]}: {e.strerror}")
    try:
        out = await asyncio.wait_for(_talk(proc, stdin), timeout)
    except (asyncio.TimeoutError, asyncio.CancelledError) as e:
        _killpg(proc)
        await proc.wait()
        if isinstance(e, asyncio.CancelledError):
            raise
        return Run(124, "", time.monotonic() - start, timed_out=True)
    rc = await proc.wait()
    _killpg(proc)  # children left behind by the script die with it
    return Run(rc, out.decode("utf-8", "replace"), time.monotonic() - start)


async def _talk(proc: asyncio.subprocess.Process, stdin: str | None) -> bytes:
    assert proc.stdout is not None
    if stdin is not None and proc.stdin is not None:
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


def monitor_env(group: str, service: str, description: str, statedir: Path, cfbase: Path,
                extra: dict[str, str], state: dict[str, float | str]) -> dict[str, str]:
    env = dict(extra)
    env.update(MON_GROUP=group, MON_SERVICE=service, MON_STATEDIR=str(statedir),
               MON_LOGDIR=str(statedir), MON_CFBASEDIR=str(cfbase))
    if description:
        env["MON_DESCRIPTION"] = description
    for k, v in state.items():
        if v not in ("", 0, 0.0):
            env[k] = str(int(v)) if isinstance(v, float) else v
    return env
