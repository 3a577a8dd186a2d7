"""pymon under a real systemd as PID 1, installed by the README's install block.

How the guest boots, and why this way: virtme-ng's `vng --systemd` printed nothing
for minutes under TCG here, and virtme-ng shares the host's root, which is not a
system systemd can own. So this builds a small Debian root of its own and boots that:

- `tests/systemd/build-image.sh`: `mmdebstrap --variant=minbase` bookworm with
  tests/systemd/packages.txt (systemd, udev, python3, python3-venv, ipvsadm, iproute2,
  kmod), the host kernel's modules (ip_vs, 9p, dummy), packed with `mkfs.ext4 -d` into
  a raw image; ~30 s. Cached as /var/tmp/pymon-systemd-image-<hash>.img, the hash over
  the build script, the package list and the kernel version, so it is rebuilt when any
  of them changes. The boot never writes it: qemu's `snapshot=on`.
- booted by qemu, TCG (KVM hangs here), the host's Debian kernel and initrd (which
  has virtio_blk and ext4):

      qemu-system-x86_64 -accel tcg -m 1G -smp 2 -nographic -no-reboot \\
        -kernel /boot/vmlinuz-VER -initrd /boot/initrd.img-VER \\
        -drive file=IMG,format=raw,if=virtio,snapshot=on \\
        -virtfs local,path=SHARE,mount_tag=share,security_model=none,id=share \\
        -append 'root=/dev/vda rw init=/lib/systemd/systemd console=ttyS0 quiet'

  systemd starts the image's pymon-scenario.service ~20 s after qemu does; it
  runs /share/scenario.sh (tests/systemd/scenario.sh) from the 9p share, then powers off.
- the share carries the source tree (the files git knows, as they are in the
  worktree), the wheels of pymon's dependencies (the guest has no network: built on
  the host with pip, cached by pyproject.toml's hash) and install.sh: the commands
  between `<!-- install:begin -->` and `<!-- install:end -->` in README.md, run as they
  are, as root, in the booted guest, with only PIP_NO_INDEX/PIP_FIND_LINKS set.
- the scenario only acts and records files under /share/results; each test here
  asserts one behaviour on them. One boot for all (module fixture).

The shipped unit is used as it is, WatchdogSec=30s included: the watchdog test waits
the real 30 s. The serial console is only kept for diagnosis (no login, no expect-style
driver): the scenario's files on the share are the results.

Measured here (2 cores shared with other qemu guests, load ~5): cold 6 min 20 s (image
~30 s, wheels ~25 s, guest 5 min 20 s, of which the README's `pip install .` under TCG
~150 s and each pymon start ~20-40 s), warm 5 min 35 s.
"""

from __future__ import annotations

import fcntl
import glob
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.kernel  # boots Debian's kernel under qemu, like tests/kernel/test_kernel_ipvs.py

REPO = Path(__file__).resolve().parents[2]
HERE = REPO / "tests" / "systemd"
CACHE = Path("/var/tmp")
BOOT_TIMEOUT = 900


def _kernel() -> tuple[str, str, str] | None:
    """(version, vmlinuz, initrd) of the newest Debian amd64 kernel with its modules."""
    def key(p: str) -> list[int]:
        return [int(n) for n in re.findall(r"\d+", p)]
    for image in sorted(glob.glob("/boot/vmlinuz-*-amd64"), key=key, reverse=True):
        ver = image.removeprefix("/boot/vmlinuz-")
        initrd = f"/boot/initrd.img-{ver}"
        if os.access(image, os.R_OK) and os.access(initrd, os.R_OK) and Path(f"/lib/modules/{ver}").is_dir():
            return ver, image, initrd
    return None


def _unavailable() -> str | None:
    if os.geteuid() != 0:
        return "needs root: mmdebstrap builds the image in a chroot"
    for tool, pkg in (("qemu-system-x86_64", "qemu-system-x86"), ("mmdebstrap", "mmdebstrap"),
                      ("mkfs.ext4", "e2fsprogs")):
        if not shutil.which(tool):
            return f"{tool} not found (apt-get install {pkg})"
    if _kernel() is None:
        return "no readable /boot/vmlinuz-*-amd64 with its initrd and /lib/modules (apt-get install linux-image-amd64)"
    return None


def install_block(readme: Path = REPO / "README.md") -> str:
    """The shell commands between the README's install markers (indented or fenced)."""
    text = readme.read_text()
    m = re.search(r"^<!-- install:begin -->\n(.*?)^<!-- install:end -->", text, re.S | re.M)
    assert m, "README.md has no <!-- install:begin --> ... <!-- install:end --> block"
    lines = [ln for ln in m.group(1).splitlines() if not ln.lstrip().startswith("```")]
    cmds = [ln[4:] if ln.startswith("    ") else ln for ln in lines]
    body = "\n".join(c for c in cmds if c.strip())
    assert body, "the README's install block is empty"
    return body + "\n"


def _lock(path: Path):  # noqa: ANN202
    f = open(path, "w")  # noqa: SIM115
    fcntl.flock(f, fcntl.LOCK_EX)
    return f


def image(ver: str) -> Path:
    h = hashlib.sha256()
    for p in (HERE / "build-image.sh", HERE / "packages.txt"):
        h.update(p.read_bytes())
    h.update(ver.encode())
    img = CACHE / f"pymon-systemd-image-{h.hexdigest()[:16]}.img"
    with _lock(CACHE / "pymon-systemd-image.lock"):
        if not img.exists():
            tmp = img.with_suffix(".tmp")
            r = subprocess.run(["sh", str(HERE / "build-image.sh"), ver, str(tmp)],
                               capture_output=True, text=True, timeout=600)
            assert r.returncode == 0, f"image build failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
            tmp.rename(img)
            for old in CACHE.glob("pymon-systemd-image-*.img"):
                if old != img:
                    old.unlink()  # a boot still using it keeps its open inode
    return img


def wheels() -> Path:
    """Wheels of pymon's dependencies and build requirements, for pip without network."""
    h = hashlib.sha256((REPO / "pyproject.toml").read_bytes()).hexdigest()[:16]
    out = CACHE / f"pymon-systemd-wheels-{h}"
    with _lock(CACHE / "pymon-systemd-wheels.lock"):
        if not out.is_dir():
            tmp = Path(tempfile.mkdtemp(prefix="pymon-systemd-wheels.tmp-", dir=CACHE))
            tree = Path(tempfile.mkdtemp(prefix="pymon-systemd-src-"))
            _source(tree)  # pip builds in the tree it is given: not in the checkout
            for args in (["wheel", "-w", str(tmp), str(tree)],
                         ["download", "-d", str(tmp), "setuptools>=68", "wheel"]):
                r = subprocess.run([sys.executable, "-m", "pip", "-q", *args],
                                   capture_output=True, text=True, timeout=600)
                assert r.returncode == 0, f"pip {args[0]} failed:\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}"
            shutil.rmtree(tree, ignore_errors=True)
            for w in tmp.glob("pymon-*.whl"):
                w.unlink()  # the guest builds pymon itself, from the source, as the README says
            tmp.rename(out)
            for old in CACHE.glob("pymon-systemd-wheels-*"):
                if old != out and old.is_dir():
                    shutil.rmtree(old, ignore_errors=True)
    return out


def _source(dest: Path) -> None:
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO,
                           capture_output=True, check=True).stdout.decode().split("\0")
    for f in filter(None, files):
        src = REPO / f
        if src.is_file():
            (dest / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / f)


class Guest:
    def __init__(self, share: Path, console: str, seconds: float, build_s: float):
        self.share, self.console, self.seconds, self.build_s = share, console, seconds, build_s
        self.results = share / "results"

    def read(self, name: str) -> str:
        p = self.results / name
        assert p.exists(), f"the scenario did not write {name}:\n{self.context()}"
        return p.read_text(errors="replace")

    def context(self) -> str:
        out = (self.share / "output").read_text(errors="replace") if (self.share / "output").exists() else ""
        st = (self.share / "status").read_text() if (self.share / "status").exists() else "(none)"
        journal = (self.results / "journal.txt").read_text(errors="replace")[-3000:] \
            if (self.results / "journal.txt").exists() else ""
        return (f"scenario exit status: {st}\n--- scenario output ---\n{out[-3000:]}\n"
                f"--- pymon journal ---\n{journal}\n--- console ---\n{self.console[-3000:]}")

    def show(self, name: str) -> dict[str, str]:
        return dict(ln.split("=", 1) for ln in self.read(name).splitlines() if "=" in ln)


@pytest.fixture(scope="module")
def guest(tmp_path_factory: pytest.TempPathFactory) -> Guest:
    reason = _unavailable()
    if reason:
        pytest.skip(f"cannot boot a systemd guest here: {reason}")
    ver, vmlinuz, initrd = _kernel()  # type: ignore[misc]
    start = time.monotonic()
    img, whl = image(ver), wheels()
    build_s = time.monotonic() - start
    share = tmp_path_factory.mktemp("systemd-share")
    (share / "results").mkdir()
    (share / "src").mkdir()
    _source(share / "src")
    shutil.copytree(whl, share / "wheels")
    (share / "install.sh").write_text(install_block())
    shutil.copy(HERE / "scenario.sh", share / "scenario.sh")
    shutil.copy(HERE / "backend.py", share / "backend.py")
    cmd = ["qemu-system-x86_64", "-accel", "tcg", "-m", "1G", "-smp", "2", "-nographic", "-no-reboot",
           "-kernel", vmlinuz, "-initrd", initrd,
           "-drive", f"file={img},format=raw,if=virtio,snapshot=on",
           "-virtfs", f"local,path={share},mount_tag=share,security_model=none,id=share",
           "-append", "root=/dev/vda rw init=/lib/systemd/systemd console=ttyS0 quiet"]
    t0 = time.monotonic()
    try:
        r = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, timeout=BOOT_TIMEOUT)
        console = (r.stdout + r.stderr).decode(errors="replace")
    except subprocess.TimeoutExpired as e:
        console = ((e.stdout or b"") + (e.stderr or b"")).decode(errors="replace")
        console += f"\n[qemu killed after {BOOT_TIMEOUT}s]"
    g = Guest(share, console, time.monotonic() - t0, build_s)
    print(f"\nimage+wheels {build_s:.1f}s, boot+scenario {g.seconds:.1f}s")
    assert (share / "results" / "install.rc").exists(), f"the guest did not run the install block:\n{g.context()}"
    return g


def test_readme_install_block_runs_in_the_guest(guest: Guest) -> None:
    """The README's commands, as written, install and start pymon on a fresh systemd host."""
    log = guest.read("install.log")
    assert guest.read("install.rc").strip() == "0", f"install block failed:\n{log[-4000:]}"
    assert guest.read("install-active.txt").strip() == "active", log[-4000:]


def test_start_is_active_only_after_the_first_round_and_reconcile(guest: Guest) -> None:
    """Type=notify: `systemctl start` returns once every real server was checked (each
    answer held 3 s by the backend) and the cleared IPVS table was filled again."""
    assert guest.read("a1-start.rc").strip() == "0", guest.context()
    show = guest.show("a1-show.txt")
    started = int(show["ExecMainStartTimestampMonotonic"]) / 1e6
    active = int(show["ActiveEnterTimestampMonotonic"]) / 1e6
    slow = {}
    for ln in guest.read("a1-slow.log").splitlines():
        addr, t_start, t_end = ln.split()
        if float(t_start) >= started:
            slow.setdefault(addr, (float(t_start), float(t_end)))  # the first check after start
    assert set(slow) == {"10.0.0.11", "10.0.0.12"}, (slow, started)
    for addr, (_, t_end) in slow.items():
        assert t_end <= active, f"{addr}'s first check ended at {t_end}, after active at {active}"
    assert active - started >= 3.0
    polled = guest.read("a1-poll.txt").split()
    assert "activating" in polled and polled.index("activating") < len(polled) - 1
    ipvs = guest.read("a1-ipvs.txt")
    assert re.search(r"TCP\s+192\.0\.2\.80:80 wlc", ipvs), ipvs
    assert re.search(r"-> 10\.0\.0\.11:80\s+Route\s+1\s", ipvs) and re.search(r"-> 10\.0\.0\.12:80\s+Route\s+1\s", ipvs), ipvs


def test_unit_user_manages_ipvs_with_only_net_admin_and_net_raw(guest: Guest) -> None:
    proc = guest.read("a2-proc.txt")
    fields = dict(ln.split(":", 1) for ln in proc.splitlines() if ":" in ln)
    uid = fields["Uid"].split()
    assert uid[0] != "0" and len(set(uid)) == 1, proc
    assert proc.splitlines()[-1].strip() == "pymon", proc
    caps = 1 << 12 | 1 << 13  # CAP_NET_ADMIN, CAP_NET_RAW
    for f in ("CapEff", "CapPrm", "CapAmb", "CapBnd"):
        assert int(fields[f], 16) == caps, f"{f}: {fields[f].strip()}"
    assert fields["NoNewPrivs"].strip() == "1" and fields["Seccomp"].strip() == "2", proc
    assert guest.show("a1-show.txt")["User"] == "pymon"
    # the table in test_start_...: filled by this process (the table was cleared before)
    ipvs = guest.read("a1-ipvs.txt")
    assert "10.0.0.11:80" in ipvs and "10.0.0.12:80" in ipvs, ipvs


def test_reload_applies_a_weight_change(guest: Guest) -> None:
    assert "weight: 5}" in guest.read("a3-config.txt")
    assert guest.read("a3-reload.rc").strip() == "0"
    ipvs = guest.read("a3-ipvs.txt")
    assert re.search(r"-> 10\.0\.0\.12:80\s+Route\s+5\s", ipvs), ipvs
    assert re.search(r"-> 10\.0\.0\.11:80\s+Route\s+1\s", ipvs), ipvs
    before, after = guest.read("a3-pid.txt").split()[1::2]
    assert before == after, "reload restarted the daemon"


def test_failure_is_a_warning_in_the_journal(guest: Guest) -> None:
    """journald files pymon's warnings at priority 4: `journalctl -p warning` shows the
    real server going down (and the log alert), and none of the info lines."""
    warn = guest.read("a5-warning.txt")
    lines = [ln for ln in warn.splitlines() if ln.startswith("{")]
    events = [json.loads(ln) for ln in lines]
    assert any(e["event"] == "host.state" and e["host"] == "10.0.0.12" and e["state"] == "down"
               for e in events), warn
    assert any(e["event"] == "alert.log" for e in events), warn
    assert all(e["level"] in ("warning", "error", "critical") for e in events), warn
    prio: dict[str, set[str]] = {}
    for ln in guest.read("a5-journal.json").splitlines():
        rec = json.loads(ln)
        msg = rec.get("MESSAGE")
        if isinstance(msg, str) and msg.startswith("{"):
            prio.setdefault(json.loads(msg)["event"], set()).add(rec["PRIORITY"])
        if isinstance(msg, str):
            assert not re.match(r"<\d>", msg), f"prefix not parsed by journald: {msg}"
    assert prio["daemon.ready"] == {"6"} and prio["host.state"] >= {"4"}, prio
    assert "check.done" not in prio, "check.done is debug: not logged at the default level"
    ipvs = guest.read("a5-ipvs.txt")
    assert "10.0.0.12:80" not in ipvs and "10.0.0.11:80" in ipvs, ipvs


def test_disabled_host_survives_restart(guest: Guest) -> None:
    assert guest.read("a6-disable.txt").strip().endswith("0"), guest.read("a6-disable.txt")
    assert guest.read("a6-restart.rc").strip() == "0"
    before, after = guest.read("a6-pid.txt").split()[1::2]
    assert before != after, "systemctl restart did not start a new process"
    status = json.loads(guest.read("a6-status.json"))
    disabled = json.dumps(status["disabled"])
    assert "10.0.0.11" in disabled and "test maintenance" in disabled, status["disabled"]
    text = guest.read("a6-status.txt")
    assert "10.0.0.11:off" in text, text
    ipvs = guest.read("a6-ipvs.txt")
    assert "10.0.0.11:80" not in ipvs, f"a disabled host is drained from IPVS:\n{ipvs}"


def test_hung_daemon_is_killed_by_the_watchdog_and_restarted(guest: Guest) -> None:
    log = guest.read("a4-watchdog.txt")
    stopped = re.search(r"stopped (\d+) at ([\d.]+)", log)
    done = re.search(r"done at ([\d.]+)", log)
    assert stopped and done, log
    show = guest.show("a4-show.txt")
    assert show["MainPID"] not in ("0", stopped.group(1)), (show, log)
    assert show["ActiveState"] == "active" and int(show["NRestarts"]) >= 1, show
    assert "Watchdog timeout (limit 30s)" in log, log  # the shipped WatchdogSec, no drop-in
    assert "Failed with result 'watchdog'" in log, log
    # WATCHDOG=1 goes every 15 s: the last one came 0-15 s before SIGSTOP
    waited = float(done.group(1)) - float(stopped.group(2))
    assert 15 <= waited < 150, f"restarted {waited:.0f}s after SIGSTOP (WatchdogSec=30s)"
    assert "10.0.0.12:80" in guest.read("a4-ipvs.txt")
