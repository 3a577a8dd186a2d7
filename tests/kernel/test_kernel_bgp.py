"""Real-kernel test of active-active directors over BGP: one VM boot for tests/kernel/bgp/.

The topology (a router with BIRD and ECMP, two directors each with pymon + BIRD, two
LVS-DR real servers, a client) lives in network namespaces inside a VM booted with
Debian's kernel (tests/kernel/vm.py: virtme-ng, TCG; the host kernel has no IPVS), its
own boot so it can be run alone (~4 minutes under TCG):

    python3 -m pytest -q tests/test_kernel_bgp.py -s

Needs bird2 on the host (the guest shares its filesystem). Skipped, saying why, only
when no VM can be booted here or bird is not installed.
"""

from __future__ import annotations

import importlib.util
import shlex
import shutil
import sys
from pathlib import Path

import pytest

_VM_PATH = Path(__file__).parent / "vm.py"
if "pymon_tests_kernel_vm" in sys.modules:
    vm = sys.modules["pymon_tests_kernel_vm"]
else:
    _spec = importlib.util.spec_from_file_location("pymon_tests_kernel_vm", _VM_PATH)
    assert _spec and _spec.loader
    vm = importlib.util.module_from_spec(_spec)
    sys.modules[_spec.name] = vm
    _spec.loader.exec_module(vm)


@pytest.mark.kernel
def test_active_active_bgp_inside_vm() -> None:
    reason = vm.unavailable_reason()
    if reason:
        pytest.skip(f"cannot boot a VM for the kernel tests: {reason}")
    if not shutil.which("bird"):
        pytest.skip("bird2 not installed (apt-get install bird2)")
    inside = "tests/kernel/bgp/"
    cmd = f'"$PYMON_PYTHON" -m pytest {shlex.quote(inside)} -q -s -p no:randomly -o addopts="" -rA'
    res = vm.run_in_vm(cmd, timeout=900)
    report = (
        f"$ {shlex.join(res.command)}\n[{res.seconds:.1f}s, exit {res.returncode}]\n"
        f"--- inside output ---\n{res.output}"
    )
    if not res.ran:
        pytest.fail(f"the VM did not run the tests:\n{report}\n--- vng ---\n{res.vng_output[-4000:]}")
    print(report)
    assert res.returncode == 0, report
    assert " passed" in res.output, report
