"""Real-kernel tests: one VM boot runs every test in tests/kernel/inside/.

The host kernel has no IPVS, so this boots Debian's linux-image-amd64 under qemu
(virtme-ng, TCG: KVM hangs here) and runs pytest inside it as root. The command
that works (built by tests/kernel/vm.py), ~22 s of boot:

    vng --run /boot/vmlinuz-6.1.0-56-amd64 --user root --disable-kvm \
        --memory 1G --cpus 2 --cwd /work/main --overlay-rwdir /work/main \
        --rwdir /tmp/pymon-vm-XXXX --exec 'sh /tmp/pymon-vm-XXXX/run.sh'

run.sh: `cd /work/main; PYMON_IN_VM=1 /root/.pyenv/versions/3.11.7/bin/python3 -m
pytest tests/kernel/inside/ -q` (the host's interpreter by absolute path: the
guest's PATH has no pyenv shims). Skipped, saying why, only when no VM can be
booted here (no vng, no qemu, no Debian kernel, not root); any failure inside fails
this test with the inside pytest output.
"""

from __future__ import annotations

import importlib.util
import os
import shlex
import sys
from pathlib import Path

import pytest

from pymon.ipvs.kernel import IPVSError, KernelIPVS

_VM_PATH = Path(__file__).parent / "vm.py"
_spec = importlib.util.spec_from_file_location("pymon_tests_kernel_vm", _VM_PATH)
assert _spec and _spec.loader
vm = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = vm
_spec.loader.exec_module(vm)


@pytest.mark.kernel
def test_kernel_ipvs_inside_vm() -> None:
    reason = vm.unavailable_reason()
    if reason:
        pytest.skip(f"cannot boot a VM for the kernel tests: {reason}")
    # one module or test of inside/ while working on it, e.g. tests/kernel/inside/test_pool.py
    inside = os.environ.get("PYMON_KERNEL_INSIDE", "tests/kernel/inside/")
    cmd = f'"$PYMON_PYTHON" -m pytest {shlex.quote(inside)} -q -p no:randomly -o addopts="" -rA'
    res = vm.run_in_vm(cmd, timeout=1800)
    report = (
        f"$ {shlex.join(res.command)}\n[{res.seconds:.1f}s, exit {res.returncode}]\n"
        f"--- inside output ---\n{res.output}"
    )
    if not res.ran:
        pytest.fail(f"the VM did not run the tests:\n{report}\n--- vng ---\n{res.vng_output[-4000:]}")
    print(report)
    assert res.returncode == 0, report
    assert " passed" in res.output, report


@pytest.mark.skipif(os.path.exists("/proc/net/ip_vs"), reason="this kernel has IPVS")
async def test_host_without_ipvs_gives_one_clear_line() -> None:
    """This host's kernel has no ip_vs: the backend says so in one line."""
    async with KernelIPVS() as ipvs:
        with pytest.raises(IPVSError) as err:
            await ipvs.read()
        assert str(err.value) == "IPVS unavailable: generic netlink family IPVS not found (is ip_vs loaded?)"
        # the backend recovers on the next call rather than keeping a dead socket
        with pytest.raises(IPVSError, match="^IPVS unavailable"):
            await ipvs.apply([])
