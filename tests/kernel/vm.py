"""Run a command inside a throw-away VM booted with Debian's kernel (has ip_vs).

This machine's kernel has no IPVS, so kernel tests boot Debian's
`linux-image-amd64` under qemu with virtme-ng, sharing the host's root filesystem.
The command that works here (KVM hangs when nested, so always TCG):

    vng --run /boot/vmlinuz-6.1.0-56-amd64 --user root --disable-kvm \
        --memory 1G --cwd /work/main --overlay-rwdir /work/main \
        --rwdir /tmp/pymon-vm-XXXX --exec 'sh /tmp/pymon-vm-XXXX/run.sh'

What the guest sees (6.1.0-56-amd64, measured):
- the host's / over 9p, read-only; /tmp, /etc, /var, /usr are guest-only overlays,
  so it can write there freely and nothing reaches the host.
- the host python by absolute path: PATH in the guest has no pyenv shims, and
  `python3` there is Debian's /usr/bin/python3, which lacks our packages. Use
  `sys.executable` of the host (/root/.pyenv/versions/3.11.7/bin/python3): its
  site-packages, including the editable pymon (.pth → /work/main/src), just work.
- /work/main read-only; `--overlay-rwdir /work/main` makes it writable in the guest
  only (pytest's cache, __pycache__), the host checkout is never touched.
- `--rwdir DIR` is a real read-write 9p share: used to pass the script in and the
  output and exit status back.
- `vng --exec` returns the command's exit status and passes its stdout/stderr
  through; a boot takes ~22 s here (2 vCPUs, TCG), so batch tests into one boot.
- `modprobe ip_vs`, `ipvsadm`, `ip netns add`, veth pairs moved into a netns, and
  addresses/routes inside them all work.
"""

from __future__ import annotations

import glob
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


@dataclass
class VMResult:
    returncode: int  # exit status of the command inside the guest (or of vng)
    output: str  # the command's combined stdout+stderr, as captured in the guest
    vng_output: str  # vng's own stdout+stderr (boot problems show up here)
    seconds: float  # wall time of the whole run, boot included
    command: list[str]
    ran: bool  # True if the guest actually started the command


def find_kernel() -> str | None:
    """Newest Debian amd64 kernel image in /boot (has ip_vs as a module)."""
    images = sorted(glob.glob("/boot/vmlinuz-*-amd64"), key=_version_key)
    for image in reversed(images):
        ver = image.removeprefix("/boot/vmlinuz-")
        if os.access(image, os.R_OK) and Path(f"/lib/modules/{ver}").is_dir():
            return image
    return None


def _version_key(path: str) -> list[int]:
    return [int(n) for n in re.findall(r"\d+", path)]


def unavailable_reason() -> str | None:
    """Why a VM cannot be booted here, or None if it can."""
    if not shutil.which("vng"):
        return "virtme-ng not installed (pip install virtme-ng): no `vng` on PATH"
    if not shutil.which("qemu-system-x86_64"):
        return "qemu-system-x86_64 not found (apt-get install qemu-system-x86)"
    if find_kernel() is None:
        return "no readable /boot/vmlinuz-*-amd64 with /lib/modules (apt-get install linux-image-amd64)"
    if os.geteuid() != 0:
        return "kernel tests run as root (the guest runs commands as root over the host's files)"
    return None


def vng_command(kernel: str, script: Path, rwdir: Path, *, cwd: Path = REPO,
                memory: str = "1G", cpus: int = 2) -> list[str]:
    return [
        "vng", "--run", kernel, "--user", "root", "--disable-kvm",
        "--memory", memory, "--cpus", str(cpus),
        "--cwd", str(cwd), "--overlay-rwdir", str(cwd),
        "--rwdir", str(rwdir),
        "--exec", f"sh {shlex.quote(str(script))}",
    ]


def run_in_vm(command: str, *, timeout: float = 900, env: dict[str, str] | None = None,
              cwd: Path = REPO, kernel: str | None = None) -> VMResult:
    """Boot a VM, run `command` (a shell command line) as root in `cwd`, return.

    Inside, PYMON_IN_VM=1 and PYMON_PYTHON=<host python> are set, plus `env`.
    Raises RuntimeError if no VM can be booted here (see unavailable_reason()).
    """
    reason = unavailable_reason()
    if reason:
        raise RuntimeError(reason)
    kernel = kernel or find_kernel()
    assert kernel
    rwdir = Path(tempfile.mkdtemp(prefix="pymon-vm-"))
    try:
        script = rwdir / "run.sh"
        out, status = rwdir / "output", rwdir / "status"
        exports = {"PYMON_IN_VM": "1", "PYMON_PYTHON": sys.executable,
                   "PYTHONDONTWRITEBYTECODE": "1", "PYTHONPATH": str(REPO / "src"),
                   **(env or {})}
        lines = ["#!/bin/sh", f"cd {shlex.quote(str(cwd))} || exit 125"]
        lines += [f"export {k}={shlex.quote(v)}" for k, v in exports.items()]
        lines += [
            f"( {command} ) > {shlex.quote(str(out))} 2>&1",
            "rc=$?",
            f"echo $rc > {shlex.quote(str(status))}",
            "exit $rc",
        ]
        script.write_text("\n".join(lines) + "\n")
        cmd = vng_command(kernel, script, rwdir, cwd=cwd)
        start = time.monotonic()
        try:
            proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, timeout=timeout, text=True,
                                  errors="replace")
            vng_out, vng_rc = proc.stdout, proc.returncode
        except subprocess.TimeoutExpired as e:
            partial = e.stdout or b""
            vng_out = (partial.decode(errors="replace") if isinstance(partial, bytes) else partial)
            vng_out += f"\n[vm.py] timed out after {timeout}s"
            vng_rc = 124
        seconds = time.monotonic() - start
        ran = status.exists()
        rc = int(status.read_text().strip() or 1) if ran else vng_rc
        output = out.read_text(errors="replace") if out.exists() else ""
        return VMResult(rc, output, vng_out, seconds, cmd, ran)
    finally:
        shutil.rmtree(rwdir, ignore_errors=True)


def pytest_in_vm(inside: str, timeout: float, *args: str) -> None:
    """Boot a VM and run pytest on `inside` (a folder of this repo) there, as one test on
    the host: skipped, saying why, only when no VM can be booted here; failed with the
    inside pytest output unless the tests inside ran and passed."""
    import pytest  # only the kernel tests call this; the bench scripts load this module without it

    reason = unavailable_reason()
    if reason:
        pytest.skip(f"cannot boot a VM for the kernel tests: {reason}")
    extra = "".join(f" {shlex.quote(a)}" for a in args)
    # COLUMNS: the summary's FAILED lines keep their reasons (pytest cuts them to the width)
    cmd = f'COLUMNS=300 "$PYMON_PYTHON" -m pytest {shlex.quote(inside)} -q{extra} -p no:randomly -o addopts="" -rA'
    res = run_in_vm(cmd, timeout=timeout)
    report = (
        f"$ {shlex.join(res.command)}\n[{res.seconds:.1f}s, exit {res.returncode}]\n"
        f"--- inside output ---\n{res.output}"
    )
    if not res.ran:
        pytest.fail(f"the VM did not run the tests:\n{report}\n--- vng ---\n{res.vng_output[-4000:]}")
    print(report)
    # the reasons once more, last in the log: a log cut in the middle still shows them
    reasons = [ln for ln in res.output.splitlines() if ln.startswith(("FAILED ", "ERROR "))]
    if reasons:
        print("--- inside failures ---\n" + "\n".join(reasons))
    assert res.returncode == 0, report
    assert " passed" in res.output, report


if __name__ == "__main__":  # python3 tests/kernel/vm.py 'ipvsadm -Ln'
    res = run_in_vm(" ".join(sys.argv[1:]) or "uname -a")
    print(res.output, end="")
    if not res.ran:
        print(res.vng_output, file=sys.stderr)
    print(f"[exit {res.returncode}, {res.seconds:.1f}s]", file=sys.stderr)
    sys.exit(res.returncode)
