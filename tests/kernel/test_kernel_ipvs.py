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

import os

import pytest
import vm  # tests/kernel/vm.py (tests/kernel/conftest.py puts it on the path)

from pymon.ipvs.kernel import IPVSError, KernelIPVS


@pytest.mark.kernel
def test_kernel_ipvs_inside_vm() -> None:
    # some modules or tests of inside/ while working on them, space-separated, e.g.
    # PYMON_KERNEL_INSIDE="tests/kernel/inside/test_pool.py tests/kernel/inside/test_director.py"
    first, *more = os.environ.get("PYMON_KERNEL_INSIDE", "tests/kernel/inside/").split()
    vm.pytest_in_vm(first, 1800, *more)


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
